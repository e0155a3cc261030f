//! The HTTP port (`http` in the config, default 127.0.0.1:27080; empty switches it off):
//! the dashboard at `/`, Prometheus metrics at `/metrics`, liveness at `/healthz` and
//! readiness at `/readyz`. Read-only views of this node, served over TLS with the
//! node's certificate whenever the gRPC port is.
//!
//! Each node answers from its own applied state, as every node's metrics should: a
//! follower's view may trail the leader's by the entries in flight. No client
//! certificate is asked for: nothing here names a user or host, or changes anything.

mod view;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub use view::View;

use crate::node::Shared;

/// A TLS handshake that takes longer than this is dropped, so idle sockets cannot hold
/// connection slots.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one connection lives, idle or not: a dashboard's refresh or a scraper
/// simply opens another, and nothing can hold a slot for ever.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves until `shutdown` fires; then open connections are closed too.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    tls: Option<Arc<ServerConfig>>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = crate::conns::Slots::new(
        (shared.cfg.limits.max_http_connections as usize).max(1),
        "http",
    );
    // Connections live in this set, so they end with the server, not after it.
    let mut conns = JoinSet::new();
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Some(tcp) = slots.admit(tcp) else {
            continue;
        };
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, &req)) }
            });
            // HTTP/1 only: what dashboards, scrapers and load balancers speak, and with
            // it the header timeout runs from the first byte (protocol sniffing for
            // HTTP/2 would wait for a first byte without any timeout).
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let handshake_by = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
            let serve = async {
                match acceptor {
                    None => builder.serve_connection(TokioIo::new(tcp), svc).await,
                    // One deadline for the first byte and the handshake together.
                    Some(_) if !begins_tls(&tcp, handshake_by).await => {
                        plaintext_told(tcp).await;
                        Ok(())
                    }
                    Some(a) => match tokio::time::timeout_at(handshake_by, a.accept(tcp)).await {
                        Ok(Ok(tls)) => builder.serve_connection(TokioIo::new(tls), svc).await,
                        Ok(Err(e)) => {
                            tracing::debug!("http TLS handshake: {e}");
                            Ok(())
                        }
                        Err(_) => Ok(()),
                    },
                }
            };
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, serve).await {
                tracing::debug!("http connection: {e}");
            }
        });
    }
    conns.shutdown().await;
}

/// Whether the connection's first byte is a TLS handshake record's (0x16), waiting for
/// it until `by`. A connection that says nothing by then counts as TLS: the handshake,
/// already out of time, closes it.
async fn begins_tls(
    tcp: &crate::conns::Limited<tokio::net::TcpStream>,
    by: tokio::time::Instant,
) -> bool {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(by, tcp.get_ref().peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == 0x16,
        _ => true,
    }
}

/// Someone asked for http:// on this HTTPS port (a browser, a scraper set up without
/// TLS): answer in plain HTTP with a sentence that says where to go, instead of a TLS
/// error they cannot read. The request is read first (up to 8 KiB, briefly), so closing
/// does not reset the connection before the answer is read.
async fn plaintext_told(mut tcp: crate::conns::Limited<tokio::net::TcpStream>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 8 << 10];
    let mut got = 0;
    let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, async {
        while got < buf.len() && !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    let here = tcp
        .get_ref()
        .local_addr()
        .map_or_else(|_| "this address".into(), |a| a.to_string());
    let body = format!(
        "This is a Tally node's HTTPS port: ask for https://{here}/ instead of http:// (its certificate is signed by the site CA).\n"
    );
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, async {
        let _ = tcp.write_all(answer.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Only GET and HEAD of four paths; everything else is answered with what exists.
fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            format!(
                "{} is not served here: the HTTP port is read-only (GET)\n",
                req.method()
            ),
        );
    }
    match req.uri().path() {
        "/healthz" => match shared.fatal() {
            None => reply(StatusCode::OK, TEXT, "ok\n".into()),
            Some(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not healthy: consensus stopped ({why}); the node is shutting down\n"),
            ),
        },
        // The same verdict as the gRPC health service's (see health.rs).
        "/readyz" => match crate::health::readiness(shared) {
            Ok(s) => reply(StatusCode::OK, TEXT, s + "\n"),
            Err(s) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, s + "\n"),
        },
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            View::of(shared).metrics(),
        ),
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            View::of(shared).dashboard(),
        ),
        other => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            format!(
                "no page {}: try / (dashboard), /metrics, /healthz or /readyz\n",
                other.escape_debug()
            ),
        ),
    }
}
