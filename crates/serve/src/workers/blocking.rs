//! What the blocking worker classes share: accepting with a bounded wait (the accepted stream
//! type is [`crate::stream::Stream`]), from one thread ([`Acceptor`]) or from many threads of a
//! worker at once ([`SharedAcceptor`]).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{Protocol, ServeConfig};
use crate::conn::send_timeout;
use crate::listener::Listener;
use crate::stream::Stream;

/// Accepts from several non-blocking listeners, waiting at most a given time so the caller can
/// look at the stop phase and beat its heart in between.
#[derive(Debug)]
pub(crate) struct Acceptor {
    listeners: Vec<Listener>,
    /// The protocol of each listener, by index.
    protocols: Vec<Protocol>,
    /// The local address of each listener's connections, when fixed (see
    /// [`Listener::fixed_local`]).
    locals: Vec<Option<SocketAddr>>,
    pollfds: Vec<libc::pollfd>,
    /// `--send-timeout`, given to each accepted connection.
    send_timeout: Option<Duration>,
    /// The listen queue had a connection waiting the last time we looked: try `accept` before
    /// `poll`. Under load (nginx opens a connection per uwsgi request) the queue is rarely
    /// empty and the `poll` would be a syscall per connection for nothing; when the worker is
    /// faster than its clients, the queue is empty after each connection and `poll` first
    /// spares a failing `accept`.
    hot: bool,
    /// Listener to try first, so one busy listener does not starve the others.
    next: usize,
    /// `poll(2)` calls made (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    polls: u64,
}

/// A `poll` that returns sooner than this found a connection already queued (a wait that
/// sleeps takes a wake-up, tens of microseconds): the queue is hot.
const HOT: Duration = Duration::from_micros(10);

impl Acceptor {
    /// Accepts on `listeners`, which speak the protocols `config.bind` gives them.
    pub fn new(listeners: Vec<Listener>, config: &ServeConfig) -> io::Result<Acceptor> {
        let protocols = (0..listeners.len())
            .map(|i| config.protocol_of(i))
            .collect();
        for l in &listeners {
            l.set_nonblocking(true)?;
            prepare_listener(l, send_timeout(config))?;
        }
        let locals = listeners.iter().map(Listener::fixed_local).collect();
        let pollfds = listeners
            .iter()
            .map(|l| libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        Ok(Acceptor {
            listeners,
            protocols,
            locals,
            pollfds,
            send_timeout: send_timeout(config),
            hot: false,
            next: 0,
            polls: 0,
        })
    }

    /// Waits up to `wait` for a connection. `Ok(None)`: none arrived (or another worker process
    /// took it first — the listen socket is shared, so a wake-up can be lost to a sibling).
    pub fn accept(&mut self, wait: Duration) -> io::Result<Option<Accepted>> {
        if self.hot {
            if let Some(accepted) = self.try_accept(false)? {
                return Ok(Some(accepted));
            }
            self.hot = false;
        }
        for p in &mut self.pollfds {
            p.revents = 0;
        }
        let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
        self.polls += 1;
        let started = std::time::Instant::now();
        // SAFETY: pollfds is a valid array of `len` pollfd structs.
        let n = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        let accepted = self.try_accept(true)?;
        self.hot = accepted.is_some() && started.elapsed() < HOT;
        Ok(accepted)
    }

    /// A connection already waiting in a listen queue, without waiting for one: `Ok(None)` when
    /// every queue is empty (a graceful stop's drain, see
    /// [`crate::shutdown::Shutdown::queue_drain_until`]).
    pub fn take_queued(&mut self) -> io::Result<Option<Accepted>> {
        self.try_accept(false)
    }

    /// Accepts from the first listener that has a connection queued, starting after the one
    /// that gave the last. `polled`: only from listeners `poll` reported readable.
    fn try_accept(&mut self, polled: bool) -> io::Result<Option<Accepted>> {
        let n = self.listeners.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if polled && self.pollfds[i].revents == 0 {
                continue;
            }
            match accept_blocking(&self.listeners[i], self.send_timeout) {
                Ok((conn, peer)) => {
                    self.next = (i + 1) % n;
                    return Ok(Some(Accepted {
                        conn,
                        peer,
                        local: self.locals[i],
                        protocol: self.protocols[i],
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// Accepting from many threads of a worker at once: the `thread` class's idle threads, each of
/// which serves the connection it takes.
///
/// With one listener (the usual case) every idle thread blocks in `accept(2)` itself, with the
/// listener's receive timeout (`SO_RCVTIMEO`) bounding the wait. The kernel queues such waiters
/// exclusively and first come, first served: a new connection wakes exactly one thread — of
/// whichever worker process has waited longest — and never the others, so there is no thundering
/// herd, no hand-off from an accepting thread to a serving one, and a worker whose threads are all
/// busy takes no connection that an idle sibling could serve. With several listeners, threads take
/// turns: one at a time polls them all ([`Acceptor`]), the others wait for it.
#[derive(Debug)]
pub(crate) enum SharedAcceptor {
    One {
        listener: Listener,
        protocol: Protocol,
        local: Option<SocketAddr>,
        send_timeout: Option<Duration>,
    },
    Many(Mutex<Acceptor>),
}

impl SharedAcceptor {
    /// Accepts on `listeners` (which speak the protocols `config.bind` gives them), waiting at
    /// most `wait` per call.
    ///
    /// A single listener is made blocking, with `wait` as its receive timeout; both are
    /// properties of the socket, shared with the sibling workers, which all run this same class.
    pub fn new(
        listeners: Vec<Listener>,
        config: &ServeConfig,
        wait: Duration,
    ) -> io::Result<SharedAcceptor> {
        if listeners.len() != 1 {
            return Ok(SharedAcceptor::Many(Mutex::new(Acceptor::new(
                listeners, config,
            )?)));
        }
        let protocol = config.protocol_of(0);
        let listener = listeners.into_iter().next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no listener to accept on")
        })?;
        prepare_listener(&listener, send_timeout(config))?;
        listener.set_nonblocking(false)?;
        let timeout = Some(wait.max(Duration::from_millis(1)));
        match &listener {
            Listener::Tcp(l) => socket2::SockRef::from(l).set_read_timeout(timeout)?,
            Listener::Unix(l) => socket2::SockRef::from(l).set_read_timeout(timeout)?,
        }
        let local = listener.fixed_local();
        Ok(SharedAcceptor::One {
            listener,
            protocol,
            local,
            send_timeout: send_timeout(config),
        })
    }

    /// Waits for a connection, about `wait` at most (the listener's timeout for one listener).
    /// `Ok(None)`: none came. With several listeners, a thread that got its turn only polls if
    /// `running()` still says so (so that stopping does not take a turn per idle thread).
    pub fn accept(
        &self,
        wait: Duration,
        running: &dyn Fn() -> bool,
    ) -> io::Result<Option<Accepted>> {
        match self {
            SharedAcceptor::Many(acceptor) => {
                let mut acceptor = acceptor.lock().unwrap_or_else(|e| e.into_inner());
                if !running() {
                    return Ok(None);
                }
                acceptor.accept(wait)
            }
            SharedAcceptor::One {
                listener,
                protocol,
                local,
                send_timeout,
            } => {
                let started = Instant::now();
                match accept_blocking(listener, *send_timeout) {
                    Ok((conn, peer)) => Ok(Some(Accepted {
                        conn,
                        peer,
                        local: *local,
                        protocol: *protocol,
                    })),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The timeout — or, if it came back at once, a listener that another
                        // process sharing it made non-blocking (a new generation of workers of
                        // another class after a re-exec): then wait here for it to be readable
                        // rather than spin.
                        if started.elapsed() < wait / 2 {
                            wait_readable(listener, wait);
                        }
                        Ok(None)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// A connection already waiting in the listen queue, without waiting for one: `Ok(None)`
    /// when the queue is empty (a graceful stop's drain, see
    /// [`crate::shutdown::Shutdown::queue_drain_until`]). One listener is blocking (see
    /// [`SharedAcceptor::new`]): it is accepted from only when `poll` finds a connection there,
    /// and if a sibling takes that one first, the accept's timeout ends the wait.
    pub fn take_queued(&self) -> io::Result<Option<Accepted>> {
        match self {
            SharedAcceptor::Many(acceptor) => acceptor
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take_queued(),
            SharedAcceptor::One { listener, .. } => {
                if !readable_now(listener) {
                    return Ok(None);
                }
                self.accept(Duration::ZERO, &|| true)
            }
        }
    }
}

/// Whether a connection waits in `listener`'s queue now.
fn readable_now(listener: &Listener) -> bool {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd struct, no wait.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

/// Waits up to `wait` for `listener` to be readable.
fn wait_readable(listener: &Listener, wait: Duration) {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd struct.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// A connection [`Acceptor::accept`] took: the client's address (`None` on a unix socket), the
/// local one when the listener's address gives it, and the protocol its listener speaks.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub conn: Stream,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub protocol: Protocol,
}

/// Serves one accepted connection on this thread, in the given HTTP `mode` or as one uwsgi
/// request (after the `--uwsgi-allow-from` check): what `sync` and `thread` do with it.
pub(crate) fn serve_accepted<H: c10k_http::Handler>(
    accepted: Accepted,
    track: &mut crate::track::ConnTrack,
    handler: &H,
    settings: &crate::conn::ConnSettings,
    shutdown: &crate::shutdown::Shutdown,
    mode: crate::conn_blocking::Mode,
    on_request: &mut dyn FnMut(),
) -> io::Result<()> {
    let Accepted {
        conn,
        peer,
        local,
        protocol,
    } = accepted;
    if protocol == Protocol::Uwsgi && !super::uwsgi_admits(settings, track, peer) {
        return Ok(());
    }
    // Both addresses are known already on a listener bound to a specific IP: no
    // getpeername/getsockname per connection.
    let info = conn.info_known(peer, local);
    crate::conn_blocking::serve(
        conn, info, track, handler, settings, shutdown, mode, protocol, on_request,
    )
    .map(drop)
}

/// Accepts one connection from a non-blocking listener, as a blocking stream with Nagle off,
/// with the client's address (`None` on a unix socket).
///
/// `send_timeout` (`--send-timeout`) becomes the socket's `SO_SNDTIMEO`: a `write` that the
/// client lets sit with its window closed fails after it (a file body's `sendfile` waits with
/// `poll` instead, see `crate::sendfile::send_blocking`), so a client that
/// stops reading gives its thread back (and the app's iterable is closed) instead of holding it
/// until it disconnects. The kernel's timer restarts whenever some bytes go out, so it bounds a
/// stall, not a slow download.
pub(crate) fn accept_blocking(
    listener: &Listener,
    send_timeout: Option<Duration>,
) -> io::Result<(Stream, Option<SocketAddr>)> {
    let (conn, peer) = listener.accept()?;
    // Accepted sockets inherit O_NONBLOCK on some systems; the drivers block. On Linux, std's
    // accept4 gives a blocking socket whatever the listener's mode: no call needed.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    conn.set_nonblocking(false)?;
    if send_timeout.is_some() && !inherits_options(listener) {
        conn.set_write_timeout(send_timeout)?;
    }
    Ok((conn, peer))
}

/// Linux copies a TCP listener's socket options (`TCP_NODELAY`, `SO_SNDTIMEO`) to every
/// connection accepted from it; a unix socket's connections, and other systems', start afresh.
fn inherits_options(l: &Listener) -> bool {
    cfg!(any(target_os = "linux", target_os = "android")) && matches!(l, Listener::Tcp(_))
}

/// Readies a listener for the blocking drivers: Nagle off on TCP (answers go out in one write),
/// and `send_timeout` as its `SO_SNDTIMEO`. Where the accepted sockets inherit both (see
/// [`inherits_options`]), these calls here save two per connection; elsewhere [`accept_blocking`]
/// sets the timeout on each connection. A socket from systemd may have neither yet.
pub(crate) fn prepare_listener(l: &Listener, send_timeout: Option<Duration>) -> io::Result<()> {
    match l {
        Listener::Tcp(t) => {
            crate::listener::limit_unsent(t)?;
            let t = socket2::SockRef::from(t);
            t.set_nodelay(true)?;
            if send_timeout.is_some() {
                t.set_write_timeout(send_timeout)?;
            }
            Ok(())
        }
        Listener::Unix(_) => Ok(()),
    }
}

/// Logs an accept failure and backs off when the process is out of descriptors.
pub(crate) fn accept_error(e: &io::Error) {
    match e.raw_os_error() {
        Some(libc::ECONNABORTED) | Some(libc::EINTR) => {}
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            tracing::error!("accept: {e}; out of file descriptors, pausing accepts for 100 ms");
            std::thread::sleep(Duration::from_millis(100));
        }
        _ => {
            tracing::error!("accept: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BindAddr;

    #[test]
    fn accepted_sockets_block_with_nagle_off_from_a_listener_without_it() {
        // A listener as systemd may hand it over: Nagle on, non-blocking.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&addr.into()).unwrap();
        socket.listen(8).unwrap();
        let l = Listener::Tcp(socket.into());
        let BindAddr::Tcp(bound) = l.local_addr().unwrap() else {
            panic!("a TCP listener has a TCP address")
        };
        let mut acceptor = Acceptor::new(vec![l], &ServeConfig::default()).unwrap();
        let _client = std::net::TcpStream::connect(bound).unwrap();
        let accepted = acceptor
            .accept(Duration::from_secs(5))
            .unwrap()
            .expect("a connection is waiting");
        let Stream::Tcp(s) = &accepted.conn else {
            panic!("a TCP listener accepts TCP streams")
        };
        assert!(s.nodelay().unwrap(), "Nagle is off");
        // A blocking read times out rather than failing with WouldBlock at once.
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 1];
        let _ = std::io::Read::read(&mut &*s, &mut buf);
        assert!(
            started.elapsed() >= Duration::from_millis(15),
            "the socket blocks"
        );
    }

    #[test]
    fn accepted_connections_know_both_addresses_on_specific_and_wildcard_binds() {
        for bind in ["127.0.0.1:0", "0.0.0.0:0"] {
            let l = Listener::bind(&bind.parse().unwrap(), 16, false).unwrap();
            let BindAddr::Tcp(bound) = l.local_addr().unwrap() else {
                panic!("a TCP listener has a TCP address")
            };
            let target = SocketAddr::from(([127, 0, 0, 1], bound.port()));
            let shared =
                SharedAcceptor::new(vec![l], &ServeConfig::default(), Duration::from_secs(5))
                    .unwrap();
            let client = std::net::TcpStream::connect(target).unwrap();
            let accepted = shared
                .accept(Duration::from_secs(5), &|| true)
                .unwrap()
                .expect("a connection is waiting");
            assert_eq!(
                accepted.local.is_some(),
                bind.starts_with("127."),
                "{bind}: only a specific address is known without asking"
            );
            let info = accepted.conn.info_known(accepted.peer, accepted.local);
            assert_eq!(info.peer, Some(client.local_addr().unwrap()), "{bind}");
            assert_eq!(info.local, Some(target), "{bind}");
        }
    }

    #[test]
    fn a_busy_queue_is_accepted_from_without_polling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = Listener::bind(&BindAddr::Unix(path.clone()), 16, false).unwrap();
        let mut acceptor = Acceptor::new(vec![l], &ServeConfig::default()).unwrap();
        let connect = || std::os::unix::net::UnixStream::connect(&path).unwrap();
        let _clients: Vec<_> = (0..3).map(|_| connect()).collect();
        // A queue found busy is tried first: one connection each, no poll(2) in between.
        acceptor.hot = true;
        for _ in 0..3 {
            assert!(acceptor.accept(Duration::from_secs(5)).unwrap().is_some());
        }
        assert_eq!(acceptor.polls, 0, "accepted straight from the queue");
        // Empty: one failing accept, then the wait in poll, and the acceptor cools down.
        assert!(acceptor
            .accept(Duration::from_millis(20))
            .unwrap()
            .is_none());
        assert_eq!(acceptor.polls, 1);
        assert!(!acceptor.hot);
        // Cold: poll first (no failing accept when the worker is faster than its clients).
        let _late = connect();
        assert!(acceptor.accept(Duration::from_secs(5)).unwrap().is_some());
        assert_eq!(acceptor.polls, 2);
    }
}
