//! Listening sockets, set up with `socket2` so every option is applied before `listen(2)`.
//!
//! Listeners are plain std sockets: the blocking worker classes accept on them directly and the
//! async class wraps them in tokio. They are created once by the master and inherited by worker
//! processes as file descriptors.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::{Bind, BindAddr, ServeConfig};
use crate::stream::Stream;

/// A unix socket file the master created, removed when it is dropped (the master stopping), as
/// gunicorn removes its sockets at exit: a file left behind looks like a server to scripts that
/// test for it, and nginx then logs `connection refused` instead of `no such file`. Only the very
/// file bound is removed (same device and inode): a server started on the same path since then
/// keeps its socket, and so does a file some process still listens on: after a `USR2` upgrade
/// the new master serves the same socket when the old one stops (gunicorn's old master does not
/// unlink either). Sockets systemd passed (`LISTEN_FDS`) are systemd's and never get one.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: std::path::PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether the path still names the very file bound.
    fn same(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.id)
            .unwrap_or(false)
    }

    /// Removes the file now, though this process still listens on it: a `SIGHUP` took its
    /// address out of `--bind`, so new clients find no socket there while the old workers
    /// answer the connections already queued (see `rebind`).
    pub(crate) fn remove_now(&self) {
        if self.same() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.same() && !listened_on(&self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether a process listens on the unix socket at `path`: a non-blocking connect is accepted or
/// finds the queue full; refused (or any other error) means no one does.
fn listened_on(path: &std::path::Path) -> bool {
    let Ok(addr) = SockAddr::unix(path) else {
        return true;
    };
    let Ok(socket) = Socket::new(Domain::UNIX, Type::STREAM, None) else {
        return true;
    };
    if socket.set_nonblocking(true).is_err() {
        return true;
    }
    match socket.connect(&addr) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

/// A bound, listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(UnixListener),
}

/// How much of an answer the kernel may hold unsent for one connection (`TCP_NOTSENT_LOWAT`):
/// a writer is woken, and a blocked write goes on, once less than half of it waits.
///
/// Without it Linux grows a connection's send buffer to `net.ipv4.tcp_wmem`'s maximum (4 MiB)
/// and wakes a writer only when a third of that is free again. A client that downloads steadily
/// but slowly (a phone on a poor link, or on loopback a 4 KiB receive window: 30 KB/s) then
/// takes minutes to make room, no write of the server's goes through meanwhile, and
/// `--send-timeout`, which measures the time between writes, dropped it as a stalled client
/// after 20 s with megabytes still queued. With this low-water mark a write goes through for
/// every 64 KiB the client takes, so only a client that really takes nothing for the whole
/// timeout is dropped, and a slow client holds 128 KiB of kernel memory instead of 4 MiB. A
/// fast client is not slowed: what is in flight is not limited, only what waits behind it.
pub(crate) const UNSENT_LOW_WATER: u32 = 128 * 1024;

/// Sets [`UNSENT_LOW_WATER`] on a listening TCP socket; Linux copies it to every connection
/// accepted from it, so no call is made per connection.
pub(crate) fn limit_unsent(l: &std::net::TcpListener) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let v = libc::c_int::try_from(UNSENT_LOW_WATER).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt on a descriptor the listener owns, with a live c_int of the size
        // given.
        let r = unsafe {
            libc::setsockopt(
                l.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                std::ptr::from_ref(&v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = l;
    Ok(())
}

/// How long a TCP listener holds a new connection whose client has sent nothing yet
/// (`TCP_DEFER_ACCEPT`, unless `--no-defer-accept`): the kernel completes the handshake but
/// wakes no worker until the first bytes arrive, so a worker that accepts a connection finds its
/// request already readable. Without it a client's request arrives a moment after its connection
/// (an HTTP client sends once the handshake is done): the worker woke for the connection, found
/// nothing to read, registered the socket with its event loop (or blocked a thread on it), and
/// woke again for the request — two wake-ups, and under `async` four more system calls, per
/// connection. uWSGI defers by default too (`--no-defer-accept` turns it off; it holds a silent
/// client for its socket timeout, 4 s); nginx has `listen ... deferred`. One second: a client
/// that stays silent (a browser's speculative connection, a slowloris) is accepted after it,
/// when the kernel's first SYN-ACK retransmission is answered, and is from then on treated as
/// without it (the same header timeout).
pub(crate) const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// Sets or clears [`DEFER_ACCEPT_SECS`] on a listening socket (nothing on a unix socket). It
/// can change on a listening socket: a `SIGHUP` applies a changed `--no-defer-accept` to the
/// sockets it keeps.
pub(crate) fn defer_accept(fd: std::os::fd::RawFd, on: bool) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let v: libc::c_int = if on { DEFER_ACCEPT_SECS } else { 0 };
        // SAFETY: setsockopt on a descriptor the caller owns, with a live c_int of the size
        // given.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                std::ptr::from_ref(&v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (fd, on);
    Ok(())
}

impl Listener {
    /// Binds `addr` with `backlog`. `SO_REUSEADDR` is always set on TCP so a restart does not
    /// wait out TIME_WAIT; `reuse_port` adds `SO_REUSEPORT`.
    pub fn bind(addr: &BindAddr, backlog: u32, reuse_port: bool) -> io::Result<Listener> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        match addr {
            BindAddr::Tcp(sa) => {
                let socket = Socket::new(Domain::for_address(*sa), Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                if reuse_port {
                    socket.set_reuse_port(true)?;
                }
                if sa.is_ipv6() {
                    socket.set_only_v6(true)?;
                }
                socket.set_nodelay(true)?;
                socket.bind(&SockAddr::from(*sa))?;
                socket.listen(backlog)?;
                Ok(Listener::Tcp(socket.into()))
            }
            BindAddr::Unix(path) => {
                // A stale socket file from a previous run (a crash, a SIGKILL) would make bind
                // fail; remove it only when nothing answers on it. Anything else at the path is
                // not ours to delete (gunicorn: "is not a socket"): before, a mistyped
                // `--bind unix:app.py` removed the file.
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if !meta.file_type().is_socket() {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        ));
                    }
                    if std::os::unix::net::UnixStream::connect(path).is_err() {
                        let _ = std::fs::remove_file(path);
                    }
                }
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                socket.bind(&SockAddr::unix(path)?)?;
                socket.listen(backlog)?;
                Ok(Listener::Unix(socket.into()))
            }
        }
    }

    /// Binds one `--bind` address as every server does: `config`'s backlog, `--reuse-port`
    /// and deferred accepts ([`DEFER_ACCEPT_SECS`]) on TCP, and a unix socket open to a proxy
    /// ([`Listener::open_to_proxies`]).
    pub fn bind_serving(bind: &Bind, config: &ServeConfig) -> anyhow::Result<Listener> {
        use anyhow::Context;
        let listener = Listener::bind(&bind.addr, config.backlog, config.reuse_port)
            .with_context(|| format!("cannot listen on {bind} (--bind)"))?;
        if let Listener::Tcp(t) = &listener {
            defer_accept(t.as_raw_fd(), !config.no_defer_accept)
                .with_context(|| format!("cannot set TCP_DEFER_ACCEPT on {bind}"))?;
        }
        listener
            .open_to_proxies(proxy_mode(config.umask))
            .with_context(|| format!("cannot make {bind} writable for a proxy"))?;
        Ok(listener)
    }

    /// The socket file of a unix listener this process bound, to remove when the server stops
    /// ([`SocketFile`]); `None` for TCP and abstract sockets.
    pub(crate) fn socket_file(&self) -> Option<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        match self.local_addr().ok()? {
            BindAddr::Unix(path) if !path.as_os_str().is_empty() => {
                let meta = std::fs::symlink_metadata(&path).ok()?;
                Some(SocketFile {
                    path,
                    id: (meta.dev(), meta.ino()),
                })
            }
            _ => None,
        }
    }

    /// Lets a proxy running as another user connect to a unix socket: mode 0666. nginx's
    /// workers run as www-data or nobody and need write permission to connect; under the usual
    /// umask 022 the socket was 0755 and every `uwsgi_pass unix:` answered 502 (Permission
    /// denied). gunicorn's sockets are 0777 (its umask 0); uWSGI needs `--chmod-socket`. Who may
    /// reach the socket is then up to its directory's permissions. Nothing to do on TCP.
    /// `--umask` (gunicorn's) narrows it: `mode` is then 0777 without the mask, as gunicorn's
    /// socket under that umask is.
    pub fn open_to_proxies(&self, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        match self.local_addr()? {
            BindAddr::Unix(path) if !path.as_os_str().is_empty() => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            }
            _ => Ok(()),
        }
    }

    /// The address actually bound (the port chosen for `:0`).
    pub fn local_addr(&self) -> io::Result<BindAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(BindAddr::Tcp),
            Listener::Unix(l) => {
                let addr = l.local_addr()?;
                let path = addr
                    .as_pathname()
                    .map(ToOwned::to_owned)
                    .unwrap_or_default();
                Ok(BindAddr::Unix(path))
            }
        }
    }

    /// The local address of every connection this listener accepts, when one address serves
    /// them all: a TCP listener bound to a specific IP. `None` for a wildcard bind (`0.0.0.0`,
    /// `[::]`), where each connection's own address must be asked for, and for unix sockets.
    /// Read once, so accepting needs no `getsockname(2)` per connection.
    pub(crate) fn fixed_local(&self) -> Option<std::net::SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().filter(|a| !a.ip().is_unspecified()),
            Listener::Unix(_) => None,
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(on),
            Listener::Unix(l) => l.set_nonblocking(on),
        }
    }

    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l) => Listener::Unix(l.try_clone()?),
        })
    }

    pub fn into_fd(self) -> OwnedFd {
        match self {
            Listener::Tcp(l) => l.into(),
            Listener::Unix(l) => l.into(),
        }
    }

    /// Wraps an inherited listening descriptor, telling TCP from unix by its address family.
    ///
    /// # Safety
    /// `fd` must be an open listening socket that nothing else owns.
    pub unsafe fn from_raw_fd(fd: RawFd) -> io::Result<Listener> {
        // SAFETY: the caller hands over ownership of an open socket.
        let socket = unsafe { Socket::from_raw_fd(fd) };
        let family = socket.local_addr()?.family();
        if family == libc::AF_UNIX as libc::sa_family_t {
            Ok(Listener::Unix(socket.into()))
        } else {
            Ok(Listener::Tcp(socket.into()))
        }
    }

    /// Accepts one connection, with the client's address (`None` on a unix socket). The stream
    /// keeps the listener's blocking mode. Nagle is off: answers go out in one write, and Linux
    /// copies TCP_NODELAY from the listener (set when accepting starts, see
    /// `workers::blocking::prepare_listener`), so only other systems need a call per connection.
    pub(crate) fn accept(&self) -> io::Result<(Stream, Option<std::net::SocketAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                #[cfg(not(any(target_os = "linux", target_os = "android")))]
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Some(peer)))
            }
            Listener::Unix(l) => Ok((Stream::Unix(l.accept()?.0), None)),
        }
    }

    pub fn into_raw_fd(self) -> RawFd {
        self.into_fd().into_raw_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

/// The mode of a unix socket file this server binds ([`Listener::open_to_proxies`]).
pub(crate) fn proxy_mode(umask: Option<crate::config::Umask>) -> u32 {
    match umask {
        Some(mask) => 0o777 & !mask.0,
        None => 0o666,
    }
}

/// The kernel's cap on any listen queue, if readable.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The warning to log when `backlog` will be silently capped by the kernel (uWSGI's "listen
/// queue full" story in the seed starts here).
pub fn backlog_warning(backlog: u32, somaxconn: Option<u32>) -> Option<String> {
    let cap = somaxconn?;
    (backlog > cap).then(|| {
        format!(
            "--backlog {backlog} is capped to {cap} by net.core.somaxconn; \
             connections beyond {cap} queued will be refused or dropped. \
             Raise it with: sysctl -w net.core.somaxconn={backlog}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_port_zero_and_reports_it() {
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        match l.local_addr().unwrap() {
            BindAddr::Tcp(a) => assert_ne!(a.port(), 0),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn unix_socket_and_fd_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = Listener::bind(&BindAddr::Unix(path.clone()), 16, false).unwrap();
        let fd = l.into_raw_fd();
        // SAFETY: fd was just released by into_raw_fd.
        let back = unsafe { Listener::from_raw_fd(fd) }.unwrap();
        assert!(matches!(back, Listener::Unix(_)));
        assert_eq!(back.local_addr().unwrap(), BindAddr::Unix(path));
    }

    #[test]
    fn a_specific_address_is_every_connection_s_local_address_a_wildcard_is_not() {
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let BindAddr::Tcp(bound) = l.local_addr().unwrap() else {
            panic!("a TCP listener has a TCP address")
        };
        assert_eq!(l.fixed_local(), Some(bound));
        let any = Listener::bind(&"0.0.0.0:0".parse().unwrap(), 16, false).unwrap();
        assert_eq!(any.fixed_local(), None, "asked per connection");
        let dir = tempfile::tempdir().unwrap();
        let unix = Listener::bind(&BindAddr::Unix(dir.path().join("s.sock")), 16, false).unwrap();
        assert_eq!(unix.fixed_local(), None);
    }

    /// By default a worker is not woken for a TCP connection until its client has sent
    /// something (before, `accept` returned the silent connection at once);
    /// `--no-defer-accept` gives it at once.
    #[test]
    fn a_connection_is_accepted_once_its_client_has_sent_something() {
        use std::io::Write;
        use std::time::{Duration, Instant};
        let bind: Bind = "127.0.0.1:0".parse().unwrap();
        let accepts_within = |l: &Listener, wait: Duration| {
            let until = Instant::now() + wait;
            loop {
                match l.accept() {
                    Ok(_) => return true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("accept: {e}"),
                }
                if Instant::now() >= until {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        let addr_of = |l: &Listener| match l.local_addr().unwrap() {
            BindAddr::Tcp(a) => a,
            other => panic!("unexpected {other}"),
        };

        let deferred = Listener::bind_serving(&bind, &ServeConfig::default()).unwrap();
        deferred.set_nonblocking(true).unwrap();
        let mut c = std::net::TcpStream::connect(addr_of(&deferred)).unwrap();
        assert!(
            !accepts_within(&deferred, Duration::from_millis(300)),
            "a silent connection was accepted"
        );
        c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert!(
            accepts_within(&deferred, Duration::from_secs(5)),
            "a connection with bytes to read was not accepted"
        );
        // A client that stays silent is accepted after about a second (its answer to the
        // first SYN-ACK retransmission), not held for good.
        let t0 = Instant::now();
        let _silent = std::net::TcpStream::connect(addr_of(&deferred)).unwrap();
        assert!(
            accepts_within(&deferred, Duration::from_secs(10)),
            "a silent connection was never accepted"
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );

        let config = ServeConfig {
            no_defer_accept: true,
            ..ServeConfig::default()
        };
        let at_once = Listener::bind_serving(&bind, &config).unwrap();
        at_once.set_nonblocking(true).unwrap();
        let _c = std::net::TcpStream::connect(addr_of(&at_once)).unwrap();
        assert!(
            accepts_within(&at_once, Duration::from_secs(5)),
            "--no-defer-accept: a silent connection was not accepted"
        );
    }

    #[test]
    fn warns_only_above_somaxconn() {
        assert!(backlog_warning(2048, Some(4096)).is_none());
        let w = backlog_warning(8192, Some(4096)).unwrap();
        assert!(w.contains("somaxconn"));
        assert!(backlog_warning(8192, None).is_none());
    }
}
