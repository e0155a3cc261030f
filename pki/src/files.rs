//! The on-disk layout `tallyctl pki` and `tallyd dev` use: `ca.crt` and `ca.key` in a
//! directory, and `NAME.crt` / `NAME.key` beside them for each certificate issued.
//! Private keys are written readable by their owner only.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::{Ca, Error, Issued, Role};

/// The CA certificate's file name: give it to every node and client as the CA to trust.
pub const CA_CERT: &str = "ca.crt";
/// The CA key's file name: keep it away from the nodes.
pub const CA_KEY: &str = "ca.key";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a new file; never replaces one. A private key is created readable by its
/// owner only, from the first byte (replacing an existing file would keep that file's
/// mode, however loose, and would destroy a key something still depends on).
fn write(path: &Path, text: &str, private: bool) -> Result<(), Error> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => exists(path),
        _ => Error::Io {
            path: path.to_owned(),
            source: e,
        },
    })?;
    f.write_all(text.as_bytes()).map_err(io(path))
}

fn exists(path: &Path) -> Error {
    Error::Invalid {
        what: path.display().to_string(),
        problem: "it already exists; refusing to replace it (remove it first if you really mean to: whatever trusted or used it stops working)".into(),
    }
}

/// Makes a new CA in `dir` (created if missing). Refuses to replace an existing CA key:
/// every certificate it issued would stop working.
pub fn init_dir(dir: &Path, site: &str, days: u32) -> Result<Ca, Error> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = dir.join(CA_KEY);
    if key.exists() {
        return Err(Error::Invalid {
            what: key.display().to_string(),
            problem: "a CA already exists here; remove it first if you really mean to replace it"
                .into(),
        });
    }
    let ca = Ca::generate(site, days)?;
    write(&key, ca.key_pem(), true)?;
    write(&dir.join(CA_CERT), ca.cert_pem(), false)?;
    Ok(ca)
}

/// The CA kept in `dir`.
pub fn load_dir(dir: &Path) -> Result<Ca, Error> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(io(&p))
    };
    Ca::from_pem(&read(CA_CERT)?, &read(CA_KEY)?)
}

/// Issues a certificate and writes it as `dir/NAME.crt` and `dir/NAME.key`; returns the
/// two paths.
pub fn issue_into(
    ca: &Ca,
    dir: &Path,
    role: Role,
    name: &str,
    hosts: &[&str],
    days: u32,
) -> Result<(PathBuf, PathBuf), Error> {
    if name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(Error::Invalid {
            what: format!("name {name:?}"),
            problem: "it becomes a file name: no slashes, no leading dot".into(),
        });
    }
    let Issued { cert_pem, key_pem } = ca.issue(role, name, hosts, days)?;
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    // Both checked before either is written: `--name ca` would otherwise replace the
    // site CA's own files.
    for p in [&crt, &key] {
        if p.exists() {
            return Err(exists(p));
        }
    }
    write(&key, &key_pem, true)?;
    write(&crt, &cert_pem, false)?;
    Ok((crt, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_directory_is_made_once_and_issues_files() {
        let dir = tempfile::tempdir().unwrap();
        init_dir(dir.path(), "t", 10).unwrap();
        assert!(init_dir(dir.path(), "t", 10)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        let ca = load_dir(dir.path()).unwrap();
        let (crt, key) = issue_into(&ca, dir.path(), Role::Admin, "alice", &[], 1).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let der = crate::pem_to_der(&std::fs::read_to_string(crt).unwrap()).unwrap();
        assert_eq!(crate::role_of(&der).unwrap(), Role::Admin);
        assert!(issue_into(&ca, dir.path(), Role::Admin, "../x", &[], 1).is_err());
        // Never replaced: not a certificate of the same name, and not the CA's own files.
        let ca_key = std::fs::read(dir.path().join(CA_KEY)).unwrap();
        for name in ["alice", "ca"] {
            let e = issue_into(&ca, dir.path(), Role::Client, name, &[], 1).unwrap_err();
            assert!(e.to_string().contains("already exists"), "{e}");
        }
        assert_eq!(std::fs::read(dir.path().join(CA_KEY)).unwrap(), ca_key);
        assert_eq!(
            crate::role_of(
                &crate::pem_to_der(&std::fs::read_to_string(dir.path().join("alice.crt")).unwrap())
                    .unwrap()
            )
            .unwrap(),
            Role::Admin
        );
    }
}
