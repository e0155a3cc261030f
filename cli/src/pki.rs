//! `tallyctl pki ...`: a site CA and the certificates of nodes, administrators and client
//! hosts. Works offline; keep the CA directory (its key) off the servers.

use std::path::PathBuf;

use clap::Subcommand;
use tally_pki::Role;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Make a new site CA: DIR/ca.crt (give it to every node and client) and DIR/ca.key.
    Init {
        /// The directory to make the site CA in (ca.crt, ca.key).
        dir: PathBuf,
        /// The site's name, written into the CA's subject.
        #[arg(long, default_value = "tally site")]
        site: String,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a certificate signed by the CA in DIR: OUT/NAME.crt and OUT/NAME.key.
    Issue {
        /// The site CA's directory (from `pki init`); the certificate is written there.
        dir: PathBuf,
        /// peer (a cluster node), admin (everything in Admin) or client (checks out seats).
        #[arg(long)]
        role: Role,
        /// The holder's name: a node's, an administrator's or a host's.
        #[arg(long)]
        name: String,
        /// A DNS name or IP address others dial this node at. Repeatable; peers always
        /// also get localhost and 127.0.0.1.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Where to write the files (default: DIR).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Init { dir, site, days } => {
            tally_pki::init_dir(&dir, &site, days)?;
            println!(
                "site CA made: {} (trust it everywhere), {} (keep it secret and offline)",
                dir.join(tally_pki::CA_CERT).display(),
                dir.join(tally_pki::CA_KEY).display()
            );
        }
        Cmd::Issue {
            dir,
            role,
            name,
            hosts,
            days,
            out,
        } => {
            let ca = tally_pki::load_dir(&dir)?;
            let out = out.unwrap_or(dir);
            std::fs::create_dir_all(&out)?;
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let (crt, key) = tally_pki::issue_into(&ca, &out, role, &name, &hosts, days)?;
            println!(
                "{role} certificate for {name}: {} and {}",
                crt.display(),
                key.display()
            );
        }
    }
    Ok(())
}
