//! An accepted client connection as a std socket: TCP or a unix socket, behind one type that the
//! blocking drivers, the gthread poller and the master's admin listener all use.
//!
//! The async class has its own (tokio) streams; everything that serves a connection with plain
//! `read`/`write` calls goes through this enum, so "which kind of socket" is asked in one place.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::proto::ConnInfo;

/// An accepted client connection.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// The connection's addresses and transport (a unix socket has no IP addresses).
    #[cfg(test)]
    pub fn info(&self) -> ConnInfo {
        self.info_known(None, None)
    }

    /// [`Stream::info`] from the addresses already known (the peer's from `accept(2)`, the local
    /// one from a listener bound to a specific address): only a missing one costs a system call.
    pub fn info_known(&self, peer: Option<SocketAddr>, local: Option<SocketAddr>) -> ConnInfo {
        match self {
            Stream::Tcp(s) => ConnInfo {
                peer: peer.or_else(|| s.peer_addr().ok()),
                local: local.or_else(|| s.local_addr().ok()),
                transport: c10k_http::Transport::Tcp,
            },
            Stream::Unix(_) => ConnInfo {
                peer: None,
                local: None,
                transport: c10k_http::Transport::Unix,
            },
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}
