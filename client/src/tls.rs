//! TLS towards the cluster: the site CA to trust, and the certificate and key this host
//! or administrator presents. The cluster reads the caller's role (client, admin) from
//! that certificate; see the deployment guide for making them.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::Error;

/// Trust in a cluster's CA, and optionally a certificate to present.
///
/// ```no_run
/// # fn demo() -> Result<(), tally_client::Error> {
/// use tally_client::{ConnectOptions, Tls};
///
/// // From files...
/// let tls = Tls::from_files("/etc/tally/ca.crt".as_ref(), Some(("/etc/tally/ws1.crt".as_ref(), "/etc/tally/ws1.key".as_ref())))?;
/// // ...or from TALLY_CA, TALLY_CERT and TALLY_KEY.
/// let opts = ConnectOptions { tls: Tls::from_env()?.or(Some(tls)), ..Default::default() };
/// # let _ = opts; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tls {
    ca_pem: String,
    identity: Option<(String, String)>,
}

impl std::fmt::Debug for Tls {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

fn tls_error(problem: impl Into<String>) -> Error {
    Error::Tls {
        problem: problem.into(),
    }
}

fn read(what: &str, path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| tls_error(format!("reading the {what} {}: {e}", path.display())))?;
    let marker = if what == "key" {
        "PRIVATE KEY-----"
    } else {
        "-----BEGIN CERTIFICATE-----"
    };
    if !text.contains(marker) {
        return Err(tls_error(format!(
            "the {what} {} is not PEM (no {marker:?} line)",
            path.display()
        )));
    }
    Ok(text)
}

impl Tls {
    /// Trust the CA in `ca_pem`, presenting no certificate.
    ///
    /// ```
    /// let tls = tally_client::Tls::from_pem("-----BEGIN CERTIFICATE-----\n...");
    /// assert!(!tls.has_identity());
    /// ```
    pub fn from_pem(ca_pem: impl Into<String>) -> Tls {
        Tls {
            ca_pem: ca_pem.into(),
            identity: None,
        }
    }

    /// Also present this certificate and key (both PEM).
    ///
    /// ```
    /// let tls = tally_client::Tls::from_pem("ca").with_identity("cert", "key");
    /// assert!(tls.has_identity());
    /// ```
    pub fn with_identity(mut self, cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Tls {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Whether a certificate will be presented.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// Reads the CA and, if given, a certificate and key from PEM files; errors name the
    /// file and what is wrong with it.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Tls, Error> {
        let mut tls = Tls::from_pem(read("CA certificate", ca)?);
        if let Some((cert, key)) = identity {
            tls = tls.with_identity(read("certificate", cert)?, read("key", key)?);
        }
        Ok(tls)
    }

    /// From `TALLY_CA`, `TALLY_CERT` and `TALLY_KEY` (file paths): `None` when `TALLY_CA`
    /// is unset (plaintext), an error when only some of them are set.
    pub fn from_env() -> Result<Option<Tls>, Error> {
        let var = |n: &str| std::env::var_os(n).filter(|v| !v.is_empty());
        Tls::from_paths(
            var("TALLY_CA").as_deref().map(Path::new),
            var("TALLY_CERT").as_deref().map(Path::new),
            var("TALLY_KEY").as_deref().map(Path::new),
        )
    }

    /// The rules of [`Tls::from_env`] for paths from anywhere (flags, a config file):
    /// a certificate needs its key and a CA; no CA means no TLS.
    pub fn from_paths(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<Tls>, Error> {
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(tls_error(
                    "a certificate was given without its key (--key / TALLY_KEY)",
                ))
            }
            (None, Some(_)) => {
                return Err(tls_error(
                    "a key was given without its certificate (--cert / TALLY_CERT)",
                ))
            }
        };
        match ca {
            Some(ca) => Tls::from_files(ca, identity).map(Some),
            None if identity.is_some() => Err(tls_error(
                "a certificate was given but no CA to trust (--ca / TALLY_CA)",
            )),
            None => Ok(None),
        }
    }

    pub(crate) fn client_config(&self) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_given_credentials_are_refused_by_name() {
        let p = Path::new("/nonexistent");
        let e = Tls::from_paths(None, Some(p), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("without its key"), "{e}");
        let e = Tls::from_paths(None, Some(p), Some(p))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no CA"), "{e}");
        let e = Tls::from_paths(Some(p), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent"), "{e}");
        assert!(Tls::from_paths(None, None, None).unwrap().is_none());
        let dir = std::env::temp_dir().join(format!("tally-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.crt");
        std::fs::write(&f, "hello").unwrap();
        let e = Tls::from_paths(Some(&f), None, None)
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("not PEM"), "{e}");
    }
}
