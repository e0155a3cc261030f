//! Connection caps for both ports: a connection beyond the cap is closed as soon as it is
//! accepted, so a flood of idle or slow connections cannot take every file descriptor of
//! the process (which would stop the other port's accepts too, Raft's among them).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

/// A connection that holds one of its port's slots for as long as it lives.
#[derive(Debug)]
pub struct Limited<T> {
    io: T,
    _slot: OwnedSemaphorePermit,
}

/// A port's connection slots.
#[derive(Debug, Clone)]
pub struct Slots {
    sem: Arc<Semaphore>,
    pub max: usize,
    /// Which port, for the log line when it is full.
    what: &'static str,
}

impl<T> Limited<T> {
    /// The connection itself (to peek at it, or ask its addresses).
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl Slots {
    pub fn new(max: usize, what: &'static str) -> Slots {
        Slots {
            sem: Arc::new(Semaphore::new(max)),
            max,
            what,
        }
    }

    /// The connection with a slot, or `None` (and the connection dropped, so closed) when
    /// every slot is taken.
    pub fn admit<T>(&self, io: T) -> Option<Limited<T>> {
        match self.sem.clone().try_acquire_owned() {
            Ok(slot) => Some(Limited { io, _slot: slot }),
            Err(_) => {
                tracing::warn!(
                    max = self.max,
                    "{}: every connection slot is taken; closing a new connection",
                    self.what
                );
                None
            }
        }
    }

    /// Slots in use.
    pub fn used(&self) -> usize {
        self.max - self.sem.available_permits()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<T: Connected> Connected for Limited<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn a_full_port_closes_new_connections_and_a_freed_slot_is_reused() {
        let slots = Slots::new(2, "test");
        let a = slots.admit(1u8).unwrap();
        let _b = slots.admit(2u8).unwrap();
        assert!(slots.admit(3u8).is_none());
        assert_eq!(slots.used(), 2);
        drop(a);
        assert!(slots.admit(4u8).is_some());
    }
}
