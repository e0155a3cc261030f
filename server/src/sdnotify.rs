//! systemd's service notification protocol (`sd_notify(3)`), spoken directly: a unit
//! with `Type=notify` sets `NOTIFY_SOCKET`, and the service sends newline-separated
//! `KEY=VALUE` lines as datagrams to that Unix socket (`READY=1`, `STATUS=...`,
//! `STOPPING=1`, `WATCHDOG=1`).
//!
//! Written here rather than taken from a crate: the protocol is one datagram per
//! message on a socket std already has, and a crate would bring libsystemd bindings or
//! another copy of the same twenty lines.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// The longest one message may block: systemd reads its notification socket at once,
/// and a stuck manager must not stall the node for long (a message lost is logged).
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A socket in the file system (`/run/systemd/notify`).
    Path(PathBuf),
    /// A Linux abstract-namespace socket: `NOTIFY_SOCKET=@name`, the name without the
    /// `@` (which stands for the leading NUL byte).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `NOTIFY_SOCKET`: `None` when it is unset or empty (not started by a service
    /// manager that waits for notifications); an error naming the value when it is
    /// something this cannot send to.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => {
                let v = v.into_string().map_err(|v| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("NOTIFY_SOCKET is not UTF-8: {v:?}"),
                    )
                })?;
                Notifier::to(&v).map(Some)
            }
        }
    }

    /// To the socket `addr` names, in `NOTIFY_SOCKET`'s syntax: an absolute path, or
    /// `@name` for the abstract namespace.
    pub fn to(addr: &str) -> io::Result<Notifier> {
        let target = if let Some(name) = addr.strip_prefix('@') {
            Target::Abstract(name.as_bytes().to_vec())
        } else if addr.starts_with('/') {
            Target::Path(PathBuf::from(addr))
        } else {
            // systemd 253+ may also hand out `vsock:CID:PORT` (a VM's manager): not a
            // Unix socket, and not something this node runs under.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "NOTIFY_SOCKET={addr:?} is neither an absolute socket path nor an @abstract name"
                ),
            ));
        };
        let sock = UnixDatagram::unbound()?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Notifier { sock, target })
    }

    /// Sends `lines` (`KEY=VALUE`, one per line) as one datagram.
    pub fn send(&self, lines: &str) -> io::Result<()> {
        let sent = match &self.target {
            Target::Path(p) => self.sock.send_to(lines.as_bytes(), p)?,
            Target::Abstract(name) => self.send_abstract(lines.as_bytes(), name)?,
        };
        if sent != lines.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", lines.len()),
            ));
        }
        Ok(())
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn send_abstract(&self, msg: &[u8], name: &[u8]) -> io::Result<usize> {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        self.sock.send_to_addr(msg, &addr)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn send_abstract(&self, _msg: &[u8], _name: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "abstract-namespace sockets exist on Linux only",
        ))
    }

    /// `READY=1`, with a status line.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// `STATUS=...`: what `systemctl status` shows under the unit.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", one_line(status)))
    }

    /// `STOPPING=1`, with a status line: the node began a graceful shutdown.
    pub fn stopping(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
    }

    /// `WATCHDOG=1`: the node is alive (see [`watchdog_interval`]).
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }
}

/// A status is one line of the protocol: line breaks inside it would start new keys.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` (what `sd_watchdog_enabled`
/// recommends), when it is set for this process (`WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        // Meant for another process (a parent that forked us without clearing it).
        if pid.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn messages_arrive_as_one_datagram_each_on_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        manager
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::to(path.to_str().unwrap()).unwrap();
        n.ready("serving: node 1\nfollower").unwrap();
        assert_eq!(recv(&manager), "READY=1\nSTATUS=serving: node 1 follower");
        n.status("not ready: knows no leader").unwrap();
        assert_eq!(recv(&manager), "STATUS=not ready: knows no leader");
        n.watchdog().unwrap();
        assert_eq!(recv(&manager), "WATCHDOG=1");
        n.stopping("stopping").unwrap();
        assert_eq!(recv(&manager), "STOPPING=1\nSTATUS=stopping");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        // Unique per run: the abstract namespace is shared by the whole network namespace.
        let name = format!("tally-sdnotify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        manager
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::to(&format!("@{name}")).unwrap();
        n.ready("up").unwrap();
        assert_eq!(recv(&manager), "READY=1\nSTATUS=up");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::to(dir.path().join("gone").to_str().unwrap()).unwrap();
        assert!(n.ready("up").is_err());
        let e = Notifier::to("vsock:2:1234").unwrap_err().to_string();
        assert!(e.contains("vsock:2:1234"), "{e}");
        assert!(Notifier::to("relative/path").is_err());
    }

    #[test]
    fn the_watchdog_runs_at_half_its_interval_and_only_for_its_process() {
        let d = |s| Some(Duration::from_secs(s));
        assert_eq!(watchdog_interval_from(Some("30000000"), None, 7), d(15));
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("7"), 7),
            d(15)
        );
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 7), None);
    }
}
