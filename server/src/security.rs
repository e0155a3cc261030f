//! Who may call what. TLS material is loaded from the config here, and [`Guard`] is the
//! one place a caller's role and rate are checked: one tonic interceptor per service, so
//! no handler has to remember to.
//!
//! Roles come from the certificate the caller presented during the TLS handshake (its
//! chain to the site CA already verified by rustls): the subject's OU is `peer`, `admin`
//! or `client` (see `tally-pki`). Administrators are identified by certificate only, not
//! by a bearer token: a token is a password that ends up in shell histories and process
//! listings, while a key stays in a file and a certificate expires by itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tally_pki::Role;
use tally_proto::{CLUSTER_METADATA, SENDER_METADATA};
use tokio_rustls::rustls::ServerConfig;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::config::{ConfigError, TlsFiles};

/// A node's TLS identity and the CA it trusts, read from the configured files.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    identity: Identity,
    ca: Certificate,
    /// The same certificate for the HTTP port, where tonic's config does not reach.
    http: Arc<ServerConfig>,
}

fn read(key: &'static str, path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        key,
        problem: format!("reading {}: {e}", path.display()),
    })
}

impl TlsMaterial {
    /// Reads and checks the files: the certificate must be a node's (role `peer`), or the
    /// other nodes would refuse this one on its first Raft message.
    pub fn load(files: &TlsFiles) -> Result<TlsMaterial, ConfigError> {
        let cert = read("tls.cert", &files.cert)?;
        let key = read("tls.key", &files.key)?;
        let ca = read("tls.ca", &files.ca)?;
        let bad = |key, problem: String| ConfigError { key, problem };
        let der = tally_pki::pem_to_der(&cert)
            .map_err(|e| bad("tls.cert", format!("{}: {e}", files.cert.display())))?;
        match tally_pki::role_of(&der) {
            Ok(Role::Peer) => {}
            Ok(r) => {
                return Err(bad(
                    "tls.cert",
                    format!(
                        "{} has role {r}; a node needs a peer certificate (tallyctl pki issue --role peer)",
                        files.cert.display()
                    ),
                ))
            }
            Err(e) => return Err(bad("tls.cert", format!("{}: {e}", files.cert.display()))),
        }
        tally_pki::pem_to_der(&ca)
            .map_err(|e| bad("tls.ca", format!("{}: {e}", files.ca.display())))?;
        if !key.contains("PRIVATE KEY-----") {
            return Err(bad(
                "tls.key",
                format!("{} holds no PEM private key", files.key.display()),
            ));
        }
        let http = http_config(&cert, &key)
            .map_err(|e| bad("tls.cert", format!("{}: {e}", files.cert.display())))?;
        Ok(TlsMaterial {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
            http,
        })
    }

    /// The HTTP port's TLS: the node's certificate, no client certificates.
    pub fn http_server(&self) -> Arc<ServerConfig> {
        self.http.clone()
    }

    /// The listener's side: our certificate, and client certificates verified against
    /// the CA when presented. They are optional at the TLS layer so that a caller without
    /// one gets a status naming what is missing from [`Guard`], not a bare handshake
    /// failure.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(true)
            // A connection that never finishes its handshake must not hold a slot.
            .timeout(std::time::Duration::from_secs(10))
    }

    /// Dialling a peer: trust only the site CA, and present our node certificate.
    pub fn peer_client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}

fn http_config(cert: &str, key: &str) -> Result<Arc<ServerConfig>, String> {
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("key PEM: {e}"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut c = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    // HTTP/1.1 only, as the port serves (its header timeout and connection lifetime are
    // HTTP/1's): offering h2 here made browsers and curl pick it and then fail on the
    // HTTP/1 bytes that came back.
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// The services, by who may call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Raft: other nodes only.
    Raft,
    /// Admin: administrators only.
    Admin,
    /// Licensing: clients (with a certificate if the cluster requires one) and admins.
    Licensing,
}

/// The interceptor. Cheap to clone; clones share the rate limiter.
#[derive(Debug, Clone)]
pub struct Guard {
    service: Service,
    /// This node's cluster name. Raft calls must carry the same one in
    /// `CLUSTER_METADATA`, checked even without TLS: it is what keeps a leftover or
    /// misdirected peer of another cluster out, not an authentication.
    cluster: Arc<str>,
    /// This node's id: a Raft call that names it as its sender looped back.
    node: u64,
    /// False only under `insecure_plaintext`: nothing is checked but rates.
    tls: bool,
    require_client_cert: bool,
    per_address: Option<Arc<RateLimiter<IpAddr>>>,
    /// Roles of certificates already seen: parsing one costs about 15 µs, and every
    /// call on a connection presents the same certificate.
    roles: Arc<RoleCache>,
}

/// Certificate (DER) → role and common name. Keyed by the whole certificate, not a
/// digest or a pointer, so two certificates can never share an entry. Safe to keep: both
/// are fixed at issue, and expiry and the chain are checked by rustls at every handshake.
#[derive(Debug, Default)]
struct RoleCache {
    map: Mutex<HashMap<Vec<u8>, Known>>,
}

/// What a certificate proved: its role, its common name and its host names.
type Known = (Role, Arc<str>, Arc<[String]>);

/// Who called, as the Guard proved it, handed to the service in the request's
/// extensions: the certificate's role, common name and host names (none without a
/// certificate).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub role: Option<Role>,
    pub cert_name: Option<Arc<str>>,
    pub cert_hosts: Arc<[String]>,
}

/// Certificates remembered before the cache starts over: enough for every workstation
/// of a large site, and a bound on what a stream of new certificates can cost.
const MAX_CACHED_ROLES: usize = 10_000;

impl RoleCache {
    fn role_of(&self, der: &[u8]) -> Result<Known, tally_pki::Error> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = map.get(der) {
            return Ok(r.clone());
        }
        let role = tally_pki::role_of(der)?;
        let name: Arc<str> = tally_pki::common_name(der)
            .unwrap_or_else(|| "(no CN)".into())
            .into();
        let hosts: Arc<[String]> = tally_pki::host_names(der).into();
        if map.len() >= MAX_CACHED_ROLES {
            map.clear();
        }
        let known = (role, name, hosts);
        map.insert(der.to_vec(), known.clone());
        Ok(known)
    }
}

impl Guard {
    pub fn new(
        service: Service,
        (cluster, node): (Arc<str>, u64),
        tls: bool,
        require_client_cert: bool,
        per_address: Option<Arc<RateLimiter<IpAddr>>>,
    ) -> Guard {
        Guard {
            service,
            cluster,
            node,
            tls,
            require_client_cert,
            per_address,
            roles: Arc::default(),
        }
    }

    /// The caller's role and certificate name, if it presented a certificate.
    fn role(&self, req: &Request<()>) -> Result<Option<Known>, Status> {
        let Some(certs) = req.peer_certs() else {
            return Ok(None);
        };
        let Some(leaf) = certs.first() else {
            return Ok(None);
        };
        let role = self.roles.role_of(leaf).map_err(|e| {
            Status::permission_denied(format!("your certificate is not usable here: {e}"))
        })?;
        Ok(Some(role))
    }

    fn check_role(&self, req: &Request<()>) -> Result<Caller, Status> {
        let who = self.role(req)?;
        let caller = Caller {
            role: who.as_ref().map(|(r, _, _)| *r),
            cert_name: who.as_ref().map(|(_, n, _)| n.clone()),
            cert_hosts: who
                .as_ref()
                .map_or_else(|| Arc::from(Vec::new()), |(_, _, h)| h.clone()),
        };
        let (allowed, need): (&[Role], &str) = match self.service {
            Service::Raft => (&[Role::Peer], "a cluster node's certificate (role peer)"),
            Service::Admin => (
                &[Role::Admin],
                "an administrator's certificate (role admin): give tallyctl --cert and --key, or TALLY_CERT and TALLY_KEY",
            ),
            Service::Licensing => (
                &[Role::Client, Role::Admin],
                "a client certificate (role client) from the site CA: give --cert and --key, or TALLY_CERT and TALLY_KEY",
            ),
        };
        match who {
            None if self.service == Service::Licensing && !self.require_client_cert => Ok(caller),
            None => Err(Status::unauthenticated(format!(
                "no client certificate was presented; this call needs {need}"
            ))),
            Some((role, _, _)) if allowed.contains(&role) => Ok(caller),
            Some((role, name, _)) => Err(Status::permission_denied(format!(
                "certificate \"{name}\" has role {role}; this call needs {need}"
            ))),
        }
    }
}

impl Guard {
    /// A Raft call from another cluster (or from a node too old to say) is refused,
    /// naming both clusters, before openraft sees it: its terms and log indexes mean
    /// nothing here, and taking them could corrupt this cluster's log. So is one that
    /// names this node as its sender: a peer address that loops back.
    fn check_cluster(&self, req: &Request<()>) -> Result<(), Status> {
        let theirs = req
            .metadata()
            .get(CLUSTER_METADATA)
            .map(|v| v.to_str().unwrap_or("(not text)"));
        match theirs {
            Some(name) if *name == *self.cluster => Ok(()),
            Some(name) => Err(Status::failed_precondition(format!(
                "this node belongs to cluster \"{}\", and the Raft call came from cluster \"{}\": a node of another cluster is dialling this address (check cluster_name and the peer addresses)",
                self.cluster,
                name.escape_debug()
            ))),
            None => Err(Status::failed_precondition(format!(
                "the Raft call names no cluster ({CLUSTER_METADATA} is missing); this node belongs to cluster \"{}\"",
                self.cluster
            ))),
        }?;
        // A leader that takes its own AppendEntries as a follower would corrupt its state
        // (openraft asserts against it): refuse the loop, saying where to look.
        let from = req
            .metadata()
            .get(SENDER_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match from {
            Some(id) if id == self.node => Err(Status::failed_precondition(format!(
                "this Raft call came from this very node ({id}): an address it dials for a peer leads back to itself (check dial and the peers' advertised addresses)"
            ))),
            Some(_) => Ok(()),
            None => Err(Status::failed_precondition(format!(
                "the Raft call names no sending node ({SENDER_METADATA} is missing or not a node id)"
            ))),
        }
    }
}

impl Interceptor for Guard {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if self.tls {
            let caller = self.check_role(&req)?;
            req.extensions_mut().insert(caller);
        }
        if self.service == Service::Raft {
            self.check_cluster(&req)?;
        }
        if let (Some(limiter), Some(addr)) = (&self.per_address, req.remote_addr()) {
            if !limiter.allow(addr.ip()) {
                return Err(Status::resource_exhausted(format!(
                    "rate limit: more than {} calls per second from {}; slow down and retry (limits.per_address_rps)",
                    limiter.rate,
                    addr.ip()
                )));
            }
        }
        Ok(req)
    }
}

/// Token buckets by key: `rate` per second, bursts of twice that.
#[derive(Debug)]
pub struct RateLimiter<K> {
    pub rate: u32,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Buckets kept before idle ones are dropped, so a scan of many addresses or sessions
/// cannot grow the table without bound.
const MAX_BUCKETS: usize = 100_000;

impl<K: std::hash::Hash + Eq> RateLimiter<K> {
    /// None when `rate` is 0 (the limit is off).
    pub fn new(rate: u32) -> Option<Arc<RateLimiter<K>>> {
        (rate > 0).then(|| {
            Arc::new(RateLimiter {
                rate,
                buckets: Mutex::new(HashMap::new()),
            })
        })
    }

    /// Takes one token for `key` if it has one.
    pub fn allow(&self, key: K) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: K, now: Instant) -> bool {
        let rate = f64::from(self.rate);
        let burst = rate * 2.0;
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_BUCKETS && !map.contains_key(&key) {
            // A full bucket is the same as no bucket: forget those.
            map.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops `key`'s bucket (its session ended).
    pub fn forget(&self, key: &K) {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_role_cache_keeps_certificates_apart_and_caches_no_garbage() {
        let ca = tally_pki::Ca::generate("site", 2).unwrap();
        let der = |role, name| ca.issue(role, name, &[], 2).unwrap().cert_der().unwrap();
        // The same common name with two roles: a cache keyed by the name (or anything
        // short of the whole certificate) would hand the second the first one's role.
        let (client, admin) = (der(Role::Client, "ann"), der(Role::Admin, "ann"));
        let cache = RoleCache::default();
        for _ in 0..3 {
            assert_eq!(cache.role_of(&client).unwrap().0, Role::Client);
            assert_eq!(cache.role_of(&admin).unwrap().0, Role::Admin);
            assert_eq!(&*cache.role_of(&admin).unwrap().1, "ann");
        }
        assert!(cache.role_of(b"not a certificate").is_err());
        let map = cache.map.lock().unwrap();
        assert_eq!(map.len(), 2, "one entry per certificate, none for garbage");
    }

    #[test]
    fn buckets_allow_a_burst_then_the_rate_and_keep_keys_apart() {
        let l = RateLimiter::<u8>::new(10).unwrap();
        let t0 = Instant::now();
        let allowed = (0..50).filter(|_| l.allow_at(1, t0)).count();
        assert_eq!(allowed, 20, "a burst of twice the rate");
        assert!(l.allow_at(2, t0), "another key has its own bucket");
        assert!(!l.allow_at(1, t0));
        let later = t0 + Duration::from_millis(500);
        let refilled = (0..50).filter(|_| l.allow_at(1, later)).count();
        assert_eq!(refilled, 5, "half a second at 10/s");
        assert!(
            RateLimiter::<u8>::new(0).is_none(),
            "0 switches the limit off"
        );
    }
}
