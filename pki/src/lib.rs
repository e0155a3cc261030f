//! Tally's public-key infrastructure: a site CA, the certificates it issues to nodes,
//! administrators and client hosts, and reading a certificate's role back when a peer
//! presents it.
//!
//! A certificate's role is its subject's organisational unit (OU): `peer` for cluster
//! nodes (they serve, and dial each other for Raft), `admin` for administrators, `client`
//! for hosts that check out seats. A site may issue certificates with its own tooling
//! instead: anything signed by the CA the cluster trusts, with one of those OUs, works.
//!
//! ```
//! use tally_pki::{role_of, Ca, Role};
//!
//! let ca = Ca::generate("example site", 365).unwrap();
//! let node = ca.issue(Role::Peer, "node1", &["tally1.example.com", "10.0.0.1"], 90).unwrap();
//! assert_eq!(role_of(&node.cert_der().unwrap()).unwrap(), Role::Peer);
//! ```

mod files;

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use thiserror::Error;
use x509_cert::der::asn1::{ObjectIdentifier, PrintableStringRef, Utf8StringRef};
use x509_cert::der::Decode as _;

pub use files::{init_dir, issue_into, load_dir, CA_CERT, CA_KEY};

/// The one error type of this crate.
#[derive(Debug, Error)]
pub enum Error {
    /// A certificate or key could not be made or signed.
    #[error("making {what}: {problem}")]
    Generate { what: String, problem: String },
    /// A certificate, key or name given to us is unusable.
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: String },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(what: impl Into<String>, problem: impl std::fmt::Display) -> Error {
    Error::Invalid {
        what: what.into(),
        problem: problem.to_string(),
    }
}

fn generate(what: impl Into<String>, problem: impl std::fmt::Display) -> Error {
    Error::Generate {
        what: what.into(),
        problem: problem.to_string(),
    }
}

/// What a certificate's holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A cluster node: serves clients, and is the only role the Raft service accepts.
    Peer,
    /// An administrator: everything in the `Admin` service.
    Admin,
    /// A host whose applications check out, renew and check in their own seats.
    Client,
}

impl Role {
    /// The OU text that carries the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Admin => "admin",
            Role::Client => "client",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role, Error> {
        match s {
            "peer" => Ok(Role::Peer),
            "admin" => Ok(Role::Admin),
            "client" => Ok(Role::Client),
            other => Err(invalid(
                format!("role {other:?}"),
                "expected peer, admin or client",
            )),
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    // The key stays out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

impl Issued {
    /// The certificate's DER bytes (what a TLS peer presents).
    pub fn cert_der(&self) -> Result<Vec<u8>, Error> {
        pem_to_der(&self.cert_pem)
    }
}

/// Decodes the first `CERTIFICATE` block of a PEM text.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, Error> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .collect();
    if body.is_empty() {
        return Err(invalid("certificate", "no PEM CERTIFICATE block found"));
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| invalid("certificate", format!("its PEM body is not base64: {e}")))
}

/// A site certificate authority that can issue certificates.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn ca_params(dn: DistinguishedName) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn validity(p: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for clocks that are a little behind the CA's.
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

impl Ca {
    /// A new CA for `site`, valid for `days`.
    pub fn generate(site: &str, days: u32) -> Result<Ca, Error> {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Tally CA ({site})"));
        dn.push(DnType::OrganizationName, site);
        let mut params = ca_params(dn);
        validity(&mut params, days);
        let key = KeyPair::generate().map_err(|e| generate("the CA key", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| generate("the CA certificate", e))?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and key, as [`Ca::generate`] made them.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, Error> {
        let der = pem_to_der(cert_pem)?;
        let cert = x509_cert::Certificate::from_der(&der)
            .map_err(|e| invalid("CA certificate", format!("not X.509: {e}")))?;
        // The issuer name written into new certificates must equal the CA's subject
        // byte for byte, so it is rebuilt attribute by attribute, keeping string types.
        let mut dn = DistinguishedName::new();
        for rdn in cert.tbs_certificate.subject.0.iter() {
            for atv in rdn.0.iter() {
                let ty = match atv.oid.to_string().as_str() {
                    "2.5.4.3" => DnType::CommonName,
                    "2.5.4.10" => DnType::OrganizationName,
                    "2.5.4.11" => DnType::OrganizationalUnitName,
                    other => {
                        return Err(invalid(
                            "CA certificate",
                            format!("subject attribute {other} is not one tallyctl pki writes; issue with your own tooling"),
                        ))
                    }
                };
                let value = if let Ok(s) = atv.value.decode_as::<Utf8StringRef<'_>>() {
                    DnValue::Utf8String(s.as_str().to_owned())
                } else if let Ok(s) = atv.value.decode_as::<PrintableStringRef<'_>>() {
                    DnValue::PrintableString(
                        s.as_str()
                            .to_owned()
                            .try_into()
                            .map_err(|e| invalid("CA certificate", format!("{e}")))?,
                    )
                } else {
                    return Err(invalid(
                        "CA certificate",
                        "a subject attribute is neither UTF8String nor PrintableString",
                    ));
                };
                dn.push(ty, value);
            }
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| invalid("CA key", e))?;
        if !spki_matches(&key, &cert) {
            return Err(invalid(
                "CA key",
                "it is not the key of this CA certificate",
            ));
        }
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer: Issuer::new(ca_params(dn), key),
        })
    }

    /// The CA certificate, PEM: what every node and client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM: keep it offline.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for `name` in `role`, valid for `hosts` (DNS names or IP
    /// addresses; a peer always also gets `localhost` and `127.0.0.1`) for `days`.
    pub fn issue(
        &self,
        role: Role,
        name: &str,
        hosts: &[&str],
        days: u32,
    ) -> Result<Issued, Error> {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(invalid(
                format!("name {name:?}"),
                "must be 1 to 64 printable characters",
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, role.as_str());
        let mut all: Vec<&str> = hosts.to_vec();
        if role == Role::Peer {
            all.extend(["localhost", "127.0.0.1"]);
        }
        for h in all {
            let san = match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if !is_dns_name(h) => {
                    return Err(invalid(
                        format!("host {h:?}"),
                        "not an IP address or a DNS name (letters, digits, '-' and '.')",
                    ))
                }
                Err(_) => SanType::DnsName(
                    h.try_into()
                        .map_err(|e| invalid(format!("host {h:?}"), e))?,
                ),
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            // A node is a TLS server to everyone and a TLS client to its peers.
            Role::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Admin | Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let key = KeyPair::generate().map_err(|e| generate(format!("the key of {name}"), e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| generate(format!("the certificate of {name}"), e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn is_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `key` is the key certified by `cert`, comparing the whole public key info.
fn spki_matches(key: &KeyPair, cert: &x509_cert::Certificate) -> bool {
    use rcgen::PublicKeyData as _;
    use x509_cert::der::Encode as _;
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .is_ok_and(|spki| spki == key.subject_public_key_info())
}

const OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

fn subject_text(cert_der: &[u8], oid: ObjectIdentifier) -> Result<Vec<String>, Error> {
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| invalid("certificate", format!("not X.509: {e}")))?;
    let mut out = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter().filter(|a| a.oid == oid) {
            if let Ok(s) = atv.value.decode_as::<Utf8StringRef<'_>>() {
                out.push(s.as_str().to_owned());
            } else if let Ok(s) = atv.value.decode_as::<PrintableStringRef<'_>>() {
                out.push(s.as_str().to_owned());
            }
        }
    }
    Ok(out)
}

/// The role a certificate carries in its subject's OU. The TLS layer has already checked
/// the chain to the trusted CA; this only reads what the CA vouched for.
pub fn role_of(cert_der: &[u8]) -> Result<Role, Error> {
    let ous = subject_text(cert_der, OU)?;
    let mut roles = ous.iter().filter_map(|ou| ou.parse::<Role>().ok());
    match (roles.next(), roles.next()) {
        (Some(r), None) => Ok(r),
        (Some(_), Some(_)) => Err(invalid(
            "certificate",
            "it names more than one role (OU); issue one certificate per role",
        )),
        (None, _) => Err(invalid(
            "certificate",
            "its subject has no role: OU must be peer, admin or client",
        )),
    }
}

/// The certificate's common name, for logs and audit ("who did this").
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    subject_text(cert_der, CN).ok()?.into_iter().next()
}

const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// The host names (DNS names, and IP addresses as text) the certificate vouches for in
/// its subject alternative names: the hosts a client certificate may claim to be.
pub fn host_names(cert_der: &[u8]) -> Vec<String> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let Ok(cert) = x509_cert::Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id != SUBJECT_ALT_NAME {
            continue;
        }
        let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
            continue;
        };
        for name in san.0 {
            match name {
                GeneralName::DnsName(d) => out.push(d.as_str().to_owned()),
                GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                    4 | 16 => {
                        let b = ip.as_bytes();
                        let addr = if b.len() == 4 {
                            IpAddr::from(<[u8; 4]>::try_from(b).unwrap_or_default())
                        } else {
                            IpAddr::from(<[u8; 16]>::try_from(b).unwrap_or_default())
                        };
                        out.push(addr.to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_a_ca_reloads_to_issue_more() {
        let ca = Ca::generate("test", 30).unwrap();
        for role in [Role::Peer, Role::Admin, Role::Client] {
            let c = ca.issue(role, "x", &[], 1).unwrap();
            let der = c.cert_der().unwrap();
            assert_eq!(role_of(&der).unwrap(), role);
            assert_eq!(common_name(&der).as_deref(), Some("x"));
        }
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let c = again
            .issue(Role::Client, "later", &["ws1.example.com", "10.0.0.7"], 1)
            .unwrap();
        assert_eq!(
            host_names(&c.cert_der().unwrap()),
            vec!["ws1.example.com".to_owned(), "10.0.0.7".to_owned()]
        );
        assert!(host_names(b"garbage").is_empty());
        let other = Ca::generate("other", 30).unwrap();
        let e = Ca::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
        assert!(e.to_string().contains("not the key"), "{e}");
    }

    #[test]
    fn bad_input_is_refused_by_name() {
        assert!(role_of(b"garbage")
            .unwrap_err()
            .to_string()
            .contains("not X.509"));
        assert!(pem_to_der("hello").is_err());
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .to_string()
            .contains("peer, admin or client"));
        let ca = Ca::generate("t", 1).unwrap();
        assert!(ca.issue(Role::Peer, "", &[], 1).is_err());
        assert!(ca.issue(Role::Peer, "n", &["bad host!"], 1).is_err());
        // The CA itself carries no role: it must never pass as a node or an admin.
        let ca_der = pem_to_der(ca.cert_pem()).unwrap();
        assert!(role_of(&ca_der)
            .unwrap_err()
            .to_string()
            .contains("no role"));
    }
}
