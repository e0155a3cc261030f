//! `tallyd healthcheck URL`: one GET of a node's `/readyz` (or `/healthz`), for container
//! engines whose health checks run a command inside the container. The image is `FROM
//! scratch`, with no curl or wget, and its HTTP port speaks TLS with the node's
//! certificate; so `tallyd` carries the few lines of HTTP/1.1 client this needs itself.
//!
//! HTTP rather than the gRPC port's `grpc.health.v1`: the verdict is the same, but a 503
//! from `/readyz` says *why* ("no leader known", "clock off by ..."), and Docker keeps
//! what a health check printed (`docker inspect`), so the reason is there to read.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_rustls::rustls;

/// The most of an answer read: `/readyz` and `/healthz` say a line.
const MAX_ANSWER: u64 = 64 * 1024;

/// What a node answered: the HTTP status and the body, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// A URL this probe can fetch: `http(s)://HOST:PORT[/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("{url}: give an http:// or https:// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/readyz"),
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("{url}: give the port (HOST:PORT)"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{url}: \"{port}\" is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok(Target {
        tls,
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// GETs `url` within `timeout`, trusting only the CA in `ca` for an https:// URL (the
/// site CA: the node's certificate names 127.0.0.1 and localhost, so a probe inside the
/// container verifies it like any client).
pub async fn get(url: &str, ca: Option<&Path>, timeout: Duration) -> Result<Answer, String> {
    let t = parse(url)?;
    let tls = if t.tls {
        let ca = ca.ok_or_else(|| {
            format!("{url} is https: give the site CA (--ca FILE or TALLY_CA) to verify it")
        })?;
        Some(client_config(ca)?)
    } else {
        None
    };
    tokio::time::timeout(timeout, fetch(&t, tls))
        .await
        .map_err(|_| format!("{url}: no answer within {} ms", timeout.as_millis()))?
}

fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let pem = std::fs::read(ca).map_err(|e| format!("reading CA {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("CA {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("CA {}: no certificate in it", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

async fn fetch(t: &Target, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Answer, String> {
    let addr = format!("{}:{}", t.host, t.port);
    let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    match tls {
        None => exchange(tcp, t).await,
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|e| format!("{}: {e}", t.host))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {addr}: {e}"))?;
            exchange(stream, t).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    t: &Target,
) -> Result<Answer, String> {
    let host = if t.host.contains(':') {
        format!("[{}]:{}", t.host, t.port)
    } else {
        format!("{}:{}", t.host, t.port)
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tallyd-healthcheck\r\nConnection: close\r\n\r\n",
        t.path
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending to {host}: {e}"))?;
    let mut raw = Vec::new();
    // A TLS peer that closes without close_notify still sent the whole answer (the
    // server closes after it): keep what came.
    if let Err(e) = s.take(MAX_ANSWER).read_to_end(&mut raw).await {
        if raw.is_empty() {
            return Err(format!("reading from {host}: {e}"));
        }
    }
    answer(&raw).ok_or_else(|| format!("{host} did not answer HTTP"))
}

/// The status and body of an HTTP/1.x answer (a chunked body is shown as it came).
fn answer(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some(Answer {
        status,
        body: body.trim().to_owned(),
    })
}

/// The data of a chunked body, as far as it parses.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            out.push_str(rest.get(..n.min(rest.len())).unwrap_or(""));
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_readyz_as_the_default_path() {
        let t = parse("https://127.0.0.1:27080").unwrap();
        assert_eq!(
            t,
            Target {
                tls: true,
                host: "127.0.0.1".into(),
                port: 27080,
                path: "/readyz".into()
            }
        );
        let t = parse("http://[::1]:80/healthz").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str(), t.tls),
            ("::1", 80, "/healthz", false)
        );
        assert!(parse("127.0.0.1:27080").is_err());
        assert!(parse("https://127.0.0.1/readyz").is_err());
        assert!(parse("https://:27080/readyz").is_err());
    }

    #[test]
    fn answers_parse_plain_and_chunked() {
        let a = answer(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 17\r\n\r\nnot ready: no leader\n",
        )
        .unwrap();
        assert_eq!(a.status, 503);
        assert_eq!(a.body, "not ready: no leader");
        let a = answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nready:\r\n3\r\n ok\r\n0\r\n\r\n").unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "ready: ok"));
        assert!(answer(b"SSH-2.0-OpenSSH\r\n").is_none());
    }
}
