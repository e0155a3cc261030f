//! `tallyctl pki ...`: a site CA and the certificates of nodes, administrators and client
//! hosts. Works offline; keep the CA directory (its key) off the servers.

use std::path::{Path, PathBuf};

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
    /// Make what is missing, keep what is there: the CA in DIR unless it exists, and each
    /// named certificate unless OUT/NAME.crt exists (a kept one must name every --peer
    /// host asked for, else it is an error naming them). For a one-shot container or a
    /// script that runs on every start, as in deploy/compose.
    Ensure {
        /// The site CA's directory; the CA is made here if missing.
        dir: PathBuf,
        /// The site's name, for a CA that is made.
        #[arg(long, default_value = "tally site")]
        site: String,
        /// Where the certificates go, with a copy of ca.crt (default: DIR). Keep OUT
        /// apart from DIR to hand the nodes their files without the CA's key.
        #[arg(long)]
        out: Option<PathBuf>,
        /// A node's certificate (role peer): NAME=HOST[,HOST...]. Repeatable.
        #[arg(long = "peer", value_name = "NAME=HOST,...")]
        peers: Vec<String>,
        /// An administrator's certificate (role admin). Repeatable.
        #[arg(long = "admin", value_name = "NAME")]
        admins: Vec<String>,
        /// A workstation's certificate (role client). Repeatable.
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
        /// Days a new certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
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
        Cmd::Ensure {
            dir,
            site,
            out,
            peers,
            admins,
            clients,
            days,
        } => ensure(&dir, &site, out.as_deref(), &peers, &admins, &clients, days)?,
    }
    Ok(())
}

fn ensure(
    dir: &Path,
    site: &str,
    out: Option<&Path>,
    peers: &[String],
    admins: &[String],
    clients: &[String],
    days: u32,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let ca = if dir.join(tally_pki::CA_KEY).exists() {
        println!("site CA kept: {}", dir.join(tally_pki::CA_CERT).display());
        tally_pki::load_dir(dir)?
    } else {
        let ca = tally_pki::init_dir(dir, site, 3650)?;
        println!("site CA made: {}", dir.join(tally_pki::CA_CERT).display());
        ca
    };
    let out = out.unwrap_or(dir);
    std::fs::create_dir_all(out).with_context(|| format!("making {}", out.display()))?;
    let ca_copy = out.join(tally_pki::CA_CERT);
    if ca_copy != dir.join(tally_pki::CA_CERT) {
        // The CA certificate the nodes trust must be this CA's: a stale copy (say, the
        // CA's volume was removed and a new CA made) would fail every handshake.
        let same = std::fs::read_to_string(&ca_copy).is_ok_and(|t| t == ca.cert_pem());
        if !same {
            std::fs::write(&ca_copy, ca.cert_pem())
                .with_context(|| format!("writing {}", ca_copy.display()))?;
            println!("CA certificate copied to {}", ca_copy.display());
        }
    }
    let mut wanted: Vec<(Role, String, Vec<String>)> = Vec::new();
    for p in peers {
        let (name, hosts) = p.split_once('=').unwrap_or((p.as_str(), ""));
        let hosts = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        wanted.push((Role::Peer, name.to_owned(), hosts));
    }
    wanted.extend(admins.iter().map(|n| (Role::Admin, n.clone(), Vec::new())));
    wanted.extend(
        clients
            .iter()
            .map(|n| (Role::Client, n.clone(), Vec::new())),
    );
    for (role, name, hosts) in wanted {
        let crt = out.join(format!("{name}.crt"));
        if crt.exists() {
            let pem = std::fs::read_to_string(&crt)
                .with_context(|| format!("reading {}", crt.display()))?;
            let der = tally_pki::pem_to_der(&pem)?;
            let has = tally_pki::host_names(&der);
            let missing: Vec<&String> = hosts.iter().filter(|h| !has.contains(h)).collect();
            anyhow::ensure!(
                missing.is_empty(),
                "{} exists but does not name {missing:?} (it names {has:?}): remove it and its key to issue it again",
                crt.display()
            );
            println!("{role} certificate for {name} kept: {}", crt.display());
            continue;
        }
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let (crt, key) = tally_pki::issue_into(&ca, out, role, &name, &hosts, days)?;
        println!(
            "{role} certificate for {name}: {} and {}",
            crt.display(),
            key.display()
        );
    }
    Ok(())
}
