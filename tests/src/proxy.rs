//! A fault-injecting TCP proxy: put it between a client and a node (or two nodes) and
//! switch faults on and off from the test. Grows into the fault harness's link faults.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    None,
    /// The link is down: open connections are cut, new ones closed at once.
    Down,
    /// Forward requests, but cut the connection instead of forwarding the next reply
    /// bytes, then go back to `None`: the node did the work, the client never hears.
    SwallowNextReply,
    /// Forward both ways, each chunk held back this long (a slow or congested link).
    Delay(std::time::Duration),
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// `127.0.0.1:PORT` to dial instead of the target.
    pub addr: String,
    fault: Arc<watch::Sender<Fault>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: &str) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let fault = Arc::new(watch::channel(Fault::None).0);
        let (f, target) = (fault.clone(), target.to_owned());
        let task = tokio::spawn(async move {
            // The connections belong to this task: aborting it (on drop) drops the set,
            // which aborts every connection. A connection that outlived its proxy could
            // deliver held-back bytes to whatever process binds the target port next:
            // in a soak, a node of the next cluster (seen: a node of a fresh cluster
            // panicked on an AppendEntries from the previous schedule's leader).
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                while pumps.try_join_next().is_some() {}
                if *f.borrow() == Fault::Down {
                    continue; // dropped: closed at once
                }
                pumps.spawn(pump(client, target.clone(), f.clone()));
            }
        });
        Ok(Proxy { addr, fault, task })
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.fault.send_replace(Fault::Down);
    }
}

async fn pump(mut client: TcpStream, target: String, fault: Arc<watch::Sender<Fault>>) {
    let Ok(mut server) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let mut rx = fault.subscribe();
    let (mut a, mut b) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        tokio::select! {
            n = client.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    delay(&fault).await;
                    if server.write_all(&a[..n]).await.is_err() { return }
                }
            },
            n = server.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let swallow = fault.send_if_modified(|f| {
                        let hit = *f == Fault::SwallowNextReply;
                        if hit { *f = Fault::None; }
                        hit
                    });
                    if swallow {
                        return; // both sockets dropped: the reply never arrives
                    }
                    delay(&fault).await;
                    if client.write_all(&b[..n]).await.is_err() { return }
                }
            },
            _ = rx.changed() => if *rx.borrow() == Fault::Down { return },
        }
    }
}

async fn delay(fault: &watch::Sender<Fault>) {
    let d = match *fault.borrow() {
        Fault::Delay(d) => d,
        _ => return,
    };
    tokio::time::sleep(d).await;
}
