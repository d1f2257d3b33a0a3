//! Accepted sockets that join tokio's reactor only when they first have to wait.
//!
//! Registering a socket with the reactor costs two `epoll_ctl` calls per connection (add, and
//! delete at close). nginx opens a uwsgi connection per request and writes the whole request
//! before we accept it; the answer of a small handler fits in the socket buffer. Such a
//! connection reads, writes and closes without ever waiting, so [`accept`] takes it off the
//! listener without registering it and [`LazyStream`] does its I/O directly, non-blocking, until
//! a read or write would block; only then is the socket handed to tokio. (uWSGI reaches the same
//! count by never using its event loop for a connection at all: it blocks on it.) A connection
//! that waits — an HTTP keep-alive client between requests, a slow body — ends up registered
//! after one read that found nothing, and is served by tokio from there on.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use c10k_http::{FileBody, Transport};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::StagedClose;
use crate::listener::Listener;
use crate::stream::Stream;

/// A std stream that tokio can adopt.
pub(crate) trait Adopt: Read + Write + AsRawFd + AsFd + Sized {
    type Registered: AsyncRead + AsyncWrite + Writable + Unpin;
    /// TCP or unix: which checks a staged close makes (see `crate::sys::close_may_lose_answer`).
    const TRANSPORT: Transport;
    /// Registers the (non-blocking) socket with the current runtime's reactor.
    fn register(self) -> io::Result<Self::Registered>;
    fn shutdown_write(&self) -> io::Result<()>;
}

/// What [`LazyStream::send_file`] needs of a registered (tokio) socket: to wait until it is
/// writable, and to run a non-blocking operation that clears that readiness if it would block.
pub(crate) trait Writable: AsRawFd + AsFd {
    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send;
    fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

macro_rules! writable {
    ($t:ty) => {
        impl Writable for $t {
            fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
                <$t>::writable(self)
            }
            fn try_write_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
                self.try_io(tokio::io::Interest::WRITABLE, f)
            }
        }
    };
}
writable!(tokio::net::TcpStream);
writable!(tokio::net::UnixStream);

/// A connection that can send a file body with `sendfile(2)` (see `crate::sendfile`).
pub(crate) trait SendFile {
    /// Sends all of `f`; returns the bytes sent and whether that was all of it.
    /// `stall` (`--send-timeout`): how long the socket may stay full before the send fails.
    fn send_file(
        &mut self,
        f: &mut FileBody,
        stall: Option<std::time::Duration>,
    ) -> impl std::future::Future<Output = (u64, bool)> + Send;
}

impl<S: Adopt> StagedClose for LazyStream<S> {
    fn close_may_lose_answer(&self) -> bool {
        let fd = match self {
            LazyStream::Direct(s) => s.as_raw_fd(),
            LazyStream::Registered(s) => s.as_raw_fd(),
            LazyStream::Lost => return false,
        };
        crate::sys::close_may_lose_answer(fd, S::TRANSPORT)
    }

    fn reset_on_close(&self) {
        match self {
            LazyStream::Direct(s) => crate::sys::reset_on_close(s),
            LazyStream::Registered(s) => crate::sys::reset_on_close(s),
            LazyStream::Lost => {}
        }
    }
}

impl<S: Adopt + Send> SendFile for LazyStream<S>
where
    S::Registered: Send + Sync,
{
    async fn send_file(
        &mut self,
        f: &mut FileBody,
        stall: Option<std::time::Duration>,
    ) -> (u64, bool) {
        let mut sent = 0u64;
        let mut probe = crate::page_cache::Probe::new();
        while f.len > 0 {
            // What `sendfile` may send without a disk read, which would hold the event loop
            // (see `crate::page_cache`); what is not cached is read in off the loop first.
            let ready = match probe.ready(f) {
                Some(n) => n,
                None => match probe.load(f).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!("reading a file body: {e}");
                        return (sent, false);
                    }
                },
            };
            let step = match self {
                LazyStream::Direct(s) => {
                    match crate::sendfile::send_once(s.as_raw_fd(), f, ready) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => match self.register() {
                            Ok(()) => Ok(0),
                            Err(e) => Err(e),
                        },
                        other => other,
                    }
                }
                LazyStream::Registered(s) => match writable_within(s, stall).await {
                    Ok(()) => {
                        let fd = s.as_raw_fd();
                        match s.try_write_io(|| crate::sendfile::send_once(fd, f, ready)) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                            other => other,
                        }
                    }
                    Err(e) => Err(e),
                },
                LazyStream::Lost => Err(lost()),
            };
            match step {
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    // `--send-timeout` (see `writable_within`): worth a line, unlike a client
                    // that went away.
                    tracing::warn!("sending a file body: {e}");
                    return (sent, false);
                }
                Err(e) => {
                    tracing::debug!("sending a file body: {e}");
                    return (sent, false);
                }
            }
        }
        (sent, true)
    }
}

/// Waits until `s` is writable, for at most `stall` (`None`: as long as it takes).
async fn writable_within<W: Writable>(s: &W, stall: Option<std::time::Duration>) -> io::Result<()> {
    match stall {
        Some(limit) => match tokio::time::timeout(limit, s.writable()).await {
            Ok(ready) => ready,
            Err(_) => Err(crate::conn::stalled(limit)),
        },
        None => s.writable().await,
    }
}

impl Adopt for std::net::TcpStream {
    type Registered = tokio::net::TcpStream;
    const TRANSPORT: Transport = Transport::Tcp;
    fn register(self) -> io::Result<tokio::net::TcpStream> {
        tokio::net::TcpStream::from_std(self)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl Adopt for std::os::unix::net::UnixStream {
    type Registered = tokio::net::UnixStream;
    const TRANSPORT: Transport = Transport::Unix;
    fn register(self) -> io::Result<tokio::net::UnixStream> {
        tokio::net::UnixStream::from_std(self)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// A non-blocking socket, served directly until it would block, then through tokio.
pub(crate) enum LazyStream<S: Adopt> {
    Direct(S),
    Registered(S::Registered),
    /// Registration failed; the socket is gone and every operation fails.
    Lost,
}

impl<S: Adopt> LazyStream<S> {
    /// `socket` must be in non-blocking mode (what [`accept`] returns).
    pub fn new(socket: S) -> LazyStream<S> {
        LazyStream::Direct(socket)
    }

    /// Hands the socket to tokio (after an operation found it not ready).
    fn register(&mut self) -> io::Result<()> {
        if let LazyStream::Direct(_) = self {
            let LazyStream::Direct(s) = std::mem::replace(self, LazyStream::Lost) else {
                unreachable!("matched Direct above")
            };
            *self = LazyStream::Registered(s.register()?);
        }
        Ok(())
    }

    /// True once the socket had to wait and tokio serves it (for tests).
    #[cfg(test)]
    pub fn is_registered(&self) -> bool {
        matches!(self, LazyStream::Registered(_))
    }
}

fn lost() -> io::Error {
    io::Error::other("the socket could not be registered with the event loop")
}

impl<S: Adopt + Unpin> AsyncRead for LazyStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this {
                LazyStream::Registered(s) => return Pin::new(s).poll_read(cx, buf),
                LazyStream::Lost => return Poll::Ready(Err(lost())),
                LazyStream::Direct(s) => match s.read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Registered sockets start "not ready": this returns Pending, and the
                        // reactor wakes the task when bytes arrive.
                        this.register()?;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                },
            }
        }
    }
}

impl<S: Adopt + Unpin> AsyncWrite for LazyStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this {
                LazyStream::Registered(s) => return Pin::new(s).poll_write(cx, data),
                LazyStream::Lost => return Poll::Ready(Err(lost())),
                LazyStream::Direct(s) => match s.write(data) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.register()?,
                    Err(e) => return Poll::Ready(Err(e)),
                },
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LazyStream::Registered(s) => Pin::new(s).poll_flush(cx),
            // Writes go straight to the socket: nothing is buffered here.
            LazyStream::Direct(_) | LazyStream::Lost => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LazyStream::Registered(s) => Pin::new(s).poll_shutdown(cx),
            LazyStream::Direct(s) => Poll::Ready(s.shutdown_write()),
            LazyStream::Lost => Poll::Ready(Err(lost())),
        }
    }
}

/// An accepted connection, not registered with the reactor, and the client's address (`None`
/// on a unix socket).
pub(crate) type Accepted = (Stream, Option<SocketAddr>);

/// A listener watched by the reactor; what it accepts is not registered (see the module docs).
pub(crate) struct LazyListener {
    fd: AsyncFd<Listener>,
}

impl LazyListener {
    pub fn new(l: Listener) -> io::Result<LazyListener> {
        l.set_nonblocking(true)?;
        if let Listener::Tcp(t) = &l {
            // Answers go out in one write; nothing to gain from Nagle holding the last segment.
            // Linux copies the option to every accepted socket: one call here, none per
            // connection (a socket from systemd may not have it yet).
            socket2::SockRef::from(t).set_nodelay(true)?;
            // A slow client's writes wake for every 64 KiB it takes (see the constant).
            crate::listener::limit_unsent(t)?;
        }
        // SAFETY: a Listener owns its descriptor and always returns that one; it stays open
        // until the AsyncFd (which owns the Listener) is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }?;
        Ok(LazyListener { fd })
    }

    /// The next connection, in non-blocking mode (the tests' way; workers use
    /// [`LazyListener::accept_after`]).
    #[cfg(test)]
    pub async fn accept(&self) -> io::Result<Accepted> {
        self.accept_after(|| std::future::ready(())).await
    }

    /// The next connection, in non-blocking mode; each time one is waiting, `first()` is
    /// awaited before taking it (it may leave it to a sibling worker meanwhile).
    pub async fn accept_after<F: std::future::Future<Output = ()>>(
        &self,
        mut first: impl FnMut() -> F,
    ) -> io::Result<Accepted> {
        loop {
            let mut ready = self.fd.readable().await?;
            first().await;
            match ready.try_io(|l| accept_nonblocking(l.get_ref())) {
                Ok(result) => return result,
                // The queue is empty again (a sibling worker took the connection): wait.
                Err(_would_block) => continue,
            }
        }
    }

    /// A connection already waiting in the queue, without waiting for one: `Ok(None)` when it
    /// is empty (a graceful stop's drain, see
    /// [`crate::shutdown::Shutdown::queue_drain_until`]).
    pub fn take_queued(&self) -> io::Result<Option<Accepted>> {
        match accept_nonblocking(self.fd.get_ref()) {
            Ok(accepted) => Ok(Some(accepted)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`: one call where std's `accept` and then
/// `set_nonblocking` would be two.
fn accept_nonblocking(l: &Listener) -> io::Result<Accepted> {
    let sock = socket2::SockRef::from(l);
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    let (s, addr) = sock.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    let (s, addr) = {
        let (s, addr) = sock.accept()?;
        s.set_nonblocking(true)?;
        (s, addr)
    };
    Ok(match l {
        Listener::Tcp(_) => {
            let peer = addr
                .as_socket()
                .ok_or_else(|| io::Error::other("accepted a TCP connection without an address"))?;
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            s.set_nodelay(true)?;
            (Stream::Tcp(s.into()), Some(peer))
        }
        Listener::Unix(_) => (Stream::Unix(s.into()), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_connection_with_its_request_there_is_served_without_the_reactor() {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sock");
            let l = Listener::bind(&crate::config::BindAddr::Unix(path.clone()), 8, false).unwrap();
            let l = LazyListener::new(l).unwrap();
            let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
            client.write_all(b"ping").unwrap();
            let (Stream::Unix(s), None) = l.accept().await.unwrap() else {
                panic!("a unix listener accepts unix streams")
            };
            let mut s = LazyStream::new(s);
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            s.write_all(b"pong").await.unwrap();
            assert!(!s.is_registered(), "nothing had to wait");
            // Now it must wait: the reactor takes over and wakes the read.
            let reader = async {
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).await.unwrap();
                (buf, s.is_registered())
            };
            let writer = async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                client.write_all(b"again").unwrap();
                client
            };
            let ((buf, registered), mut client) = tokio::join!(reader, writer);
            assert_eq!(&buf, b"again");
            assert!(registered, "the wait went through the reactor");
            let mut got = [0u8; 4];
            client.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"pong");
        });
    }

    #[test]
    fn tcp_accepts_carry_the_peer_address() {
        runtime().block_on(async {
            let addr = "127.0.0.1:0".parse().unwrap();
            let l = Listener::bind(&crate::config::BindAddr::Tcp(addr), 8, false).unwrap();
            let crate::config::BindAddr::Tcp(bound) = l.local_addr().unwrap() else {
                panic!("a TCP listener has a TCP address")
            };
            let l = LazyListener::new(l).unwrap();
            let client = std::net::TcpStream::connect(bound).unwrap();
            let (Stream::Tcp(s), Some(peer)) = l.accept().await.unwrap() else {
                panic!("a TCP listener accepts TCP streams")
            };
            assert_eq!(peer, client.local_addr().unwrap());
            assert!(s.nodelay().unwrap(), "Nagle is off on accepted sockets");
        });
    }
}
