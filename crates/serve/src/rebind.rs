//! The master's listening sockets, and what `SIGHUP` does to them when the configuration's
//! addresses (or the backlog, `--reuse-port`, `--umask` that shape them) change, after
//! gunicorn's `Arbiter.reload`, which closes its listeners and opens the new list.
//!
//! The design choice: the new addresses are opened before anything changes, and an address in
//! both the old and the new list keeps its socket (no gap, no refused connection on it). A reload
//! that cannot open one of the new addresses fails whole — nothing changes, as when the file does
//! not load; one that can swaps the set the master hands to every worker it starts from then on.
//! A removed socket stays open until no worker started before the swap is left (they still accept
//! on it), but first stops taking new connections — a TCP listener drops new SYNs (a socket
//! filter: clients retry, then find the port closed), a unix socket's file is removed — so the
//! old workers empty its queue, and the master holds the last of them back from retiring while
//! connections still wait in it ([`Listening::queued`]). A reload that brings a removed TCP
//! address back while it is still open takes the same socket again. gunicorn closes the old
//! sockets at once, and its old workers' exit resets what waited in them.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use anyhow::Context;

use crate::config::{Bind, BindAddr, ServeConfig, Umask};
use crate::listener::{Listener, SocketFile};
use crate::sys::move_fd_high;

/// One listening socket the master holds.
#[derive(Debug)]
struct Held {
    /// Above the range workers receive listeners in. Declared before `file`: the socket closes
    /// before the file's removal checks that no one listens on it.
    fd: OwnedFd,
    /// The address bound (the port chosen for `:0`).
    addr: BindAddr,
    /// Every way a configuration has named it (`127.0.0.1:0`, the address an old master's
    /// socket was rewritten to), to know it again in a new configuration.
    names: Vec<BindAddr>,
    /// The socket file this master created (a unix listener it bound itself).
    file: Option<SocketFile>,
}

/// What shapes a listener beside its address.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Shape {
    backlog: u32,
    reuse_port: bool,
    no_defer_accept: bool,
    umask: Option<Umask>,
}

impl Shape {
    pub fn of(config: &ServeConfig) -> Shape {
        Shape {
            backlog: config.backlog,
            reuse_port: config.reuse_port,
            no_defer_accept: config.no_defer_accept,
            umask: config.umask,
        }
    }
}

/// What a [`Listening::rebind`] did, for the log.
#[derive(Debug, Default)]
pub(crate) struct Rebound {
    pub opened: Vec<String>,
    pub removed: Vec<String>,
}

/// The listeners the master serves, in `--bind` order, and those a `SIGHUP` removed that older
/// workers still use.
#[derive(Debug)]
pub(crate) struct Listening {
    current: Vec<Held>,
    /// Removed sockets, with the generation that removed them: workers of an older generation
    /// still accept on them.
    closing: Vec<(u64, Held)>,
    /// Raised by every rebind: the workers started since get the new set.
    generation: u64,
    /// Socket files kept, after [`Listening::close`], until the master exits (its workers still
    /// listen on them while they stop).
    files_at_exit: Vec<SocketFile>,
}

impl Listening {
    /// Takes the listeners the server started with. `running` is the running configuration's
    /// `--bind` and `as_given` the one as loaded (an inherited socket's address rewrote the
    /// former); each is another name of the listener at its index. `files` are the unix socket
    /// files this process bound.
    pub fn new(
        listeners: Vec<Listener>,
        running: &[Bind],
        as_given: &[Bind],
        mut files: Vec<SocketFile>,
    ) -> anyhow::Result<Listening> {
        let n = listeners.len();
        let mut current = Vec::with_capacity(n);
        for (i, l) in listeners.into_iter().enumerate() {
            let addr = l.local_addr().context("cannot read a listener's address")?;
            let mut names = vec![addr.clone()];
            for list in [running, as_given] {
                if list.len() == n {
                    if let Some(b) = list.get(i) {
                        names.push(b.addr.clone());
                    }
                }
            }
            let file = match &addr {
                BindAddr::Unix(path) => files
                    .iter()
                    .position(|f| f.path() == path)
                    .map(|j| files.swap_remove(j)),
                BindAddr::Tcp(_) => None,
            };
            let fd = move_fd_high(l.into_fd()).context("cannot move a listener")?;
            current.push(Held {
                fd,
                addr,
                names,
                file,
            });
        }
        Ok(Listening {
            current,
            closing: Vec::new(),
            generation: 0,
            files_at_exit: files,
        })
    }

    /// The generation of the current set: a worker started now serves it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The current listeners' descriptors, in `--bind` order, for a worker or a new master.
    pub fn fds(&self) -> Vec<RawFd> {
        self.current.iter().map(|h| h.fd.as_raw_fd()).collect()
    }

    /// The current listeners as (address bound, descriptor), for status.
    pub fn listeners(&self) -> Vec<(&BindAddr, RawFd)> {
        self.current
            .iter()
            .map(|h| (&h.addr, h.fd.as_raw_fd()))
            .collect()
    }

    /// Makes `config.bind` the current set, shaped by `config` (it was by `old`): opens the
    /// addresses no held socket serves, then keeps the rest and sets the removed ones closing.
    /// An address that cannot be opened is the error, and nothing has changed then.
    pub fn rebind(
        &mut self,
        config: &ServeConfig,
        old: Shape,
        owner: Option<&crate::owner::Owner>,
    ) -> anyhow::Result<Rebound> {
        // Which held socket each new address keeps: the address bound first, then the names a
        // configuration gave it (a `:0` keeps the port it got). Candidates are the current
        // sockets, then the removed TCP ones still open (a HUP that undoes the last one before
        // its old workers are gone): their port is still theirs, and binding it again would
        // fail. A removed unix socket has lost its file: its path is bound afresh.
        let n = self.current.len();
        let revivable: Vec<usize> = (0..self.closing.len())
            .filter(|&k| matches!(self.closing[k].1.addr, BindAddr::Tcp(_)))
            .collect();
        let candidates: Vec<&Held> = self
            .current
            .iter()
            .chain(revivable.iter().map(|&k| &self.closing[k].1))
            .collect();
        let mut pick: Vec<Option<usize>> = vec![None; config.bind.len()];
        let mut taken = vec![false; candidates.len()];
        for exact in [true, false] {
            for (i, bind) in config.bind.iter().enumerate() {
                if pick[i].is_some() {
                    continue;
                }
                let found = candidates.iter().enumerate().position(|(c, h)| {
                    !taken[c]
                        && if exact {
                            h.addr == bind.addr
                        } else {
                            h.names.contains(&bind.addr)
                        }
                });
                if let Some(c) = found {
                    pick[i] = Some(c);
                    taken[c] = true;
                }
            }
        }
        // Open first; dropped on an error, a new unix socket's file goes with it.
        let mut opened = Vec::with_capacity(config.bind.len());
        for (bind, p) in config.bind.iter().zip(&pick) {
            opened.push(match p {
                Some(_) => None,
                None => Some(open(bind, config, owner)?),
            });
        }
        // Nothing fails from here on.
        let new = Shape::of(config);
        let mut old_set: Vec<Option<Held>> = std::mem::take(&mut self.current)
            .into_iter()
            .map(Some)
            .collect();
        let mut closing: Vec<Option<(u64, Held)>> = std::mem::take(&mut self.closing)
            .into_iter()
            .map(Some)
            .collect();
        let mut done = Rebound::default();
        for ((bind, p), fresh) in config.bind.iter().zip(pick).zip(opened) {
            let kept = match p {
                Some(c) if c < n => old_set.get_mut(c).and_then(Option::take),
                Some(c) => revivable
                    .get(c - n)
                    .and_then(|&k| closing.get_mut(k)?.take())
                    .map(|(_, h)| {
                        take_again(&h);
                        done.opened.push(h.addr.to_string());
                        h
                    }),
                None => None,
            };
            let held = match (kept, fresh) {
                (Some(mut h), _) => {
                    if !h.names.contains(&bind.addr) {
                        h.names.push(bind.addr.clone());
                    }
                    reshape(&h, old, new);
                    h
                }
                (None, Some(h)) => {
                    done.opened.push(h.addr.to_string());
                    h
                }
                (None, None) => continue,
            };
            self.current.push(held);
        }
        self.closing = closing.into_iter().flatten().collect();
        self.generation += 1;
        for h in old_set.into_iter().flatten() {
            stop_taking(&h);
            done.removed.push(h.addr.to_string());
            self.closing.push((self.generation, h));
        }
        Ok(done)
    }

    /// The address of a removed listener that workers of a generation `used` accepts still on
    /// has connections waiting in its queue.
    pub fn queued(&self, used: impl Fn(u64) -> bool) -> Option<&BindAddr> {
        self.closing
            .iter()
            .find(|(g, h)| used(*g) && readable(h.fd.as_raw_fd()))
            .map(|(_, h)| &h.addr)
    }

    /// Closes the removed listeners no live worker uses any more; `oldest` is the oldest live
    /// worker's generation.
    pub fn release(&mut self, oldest: Option<u64>) {
        self.closing.retain(|(g, h)| {
            let used = oldest.is_some_and(|o| o < *g);
            if !used {
                tracing::info!(
                    "closed the listener on {} (SIGHUP removed it; no worker uses it now)",
                    h.addr
                );
            }
            used
        });
    }

    /// The server is stopping: closes the master's copies of every listener (once the workers
    /// have served what waits in the queue and closed theirs, new connections are refused
    /// instead of waiting in a queue nobody reads); the socket files go when the master exits.
    pub fn close(&mut self) {
        self.closing.clear();
        for mut h in self.current.drain(..) {
            self.files_at_exit.extend(h.file.take());
        }
    }
}

/// Binds `bind` as a start does, given to the workers' user.
fn open(
    bind: &Bind,
    config: &ServeConfig,
    owner: Option<&crate::owner::Owner>,
) -> anyhow::Result<Held> {
    let listener = Listener::bind_serving(bind, config)?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot read the address of {bind}"))?;
    let file = listener.socket_file();
    if let (Some(owner), BindAddr::Unix(path)) = (owner, &addr) {
        if !path.as_os_str().is_empty() {
            crate::owner::give(path, owner)
                .with_context(|| format!("--user: cannot give {} to it", path.display()))?;
        }
    }
    let fd = move_fd_high(listener.into_fd()).context("cannot move a listener")?;
    Ok(Held {
        fd,
        addr,
        names: vec![bind.addr.clone()],
        file,
    })
}

/// A kept socket takes what of the new shape it can without closing: the backlog (`listen(2)`
/// again sets it), deferred accepts and the unix socket file's mode. `SO_REUSEPORT` counts
/// when a socket binds: a kept one keeps its own.
fn reshape(h: &Held, old: Shape, new: Shape) {
    if new.no_defer_accept != old.no_defer_accept && matches!(h.addr, BindAddr::Tcp(_)) {
        if let Err(e) = crate::listener::defer_accept(h.fd.as_raw_fd(), !new.no_defer_accept) {
            tracing::warn!("SIGHUP: {} keeps its deferred accepts: {e}", h.addr);
        }
    }
    if new.backlog != old.backlog {
        let backlog = i32::try_from(new.backlog).unwrap_or(i32::MAX);
        // A failure only leaves the old queue.
        if let Err(e) = socket2::SockRef::from(&h.fd).listen(backlog) {
            tracing::warn!("SIGHUP: {} keeps its backlog: {e}", h.addr);
        }
    }
    if new.umask != old.umask {
        if let Some(file) = &h.file {
            use std::os::unix::fs::PermissionsExt;
            let mode = crate::listener::proxy_mode(new.umask);
            if let Err(e) =
                std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode))
            {
                tracing::warn!("SIGHUP: {} keeps its mode: {e}", h.addr);
            }
        }
    }
    if new.reuse_port != old.reuse_port {
        tracing::warn!(
            "SIGHUP: {} keeps its socket, and with it its reuse-port ({}): it applies to \
             addresses opened from now on (a stop and start changes it here)",
            h.addr,
            old.reuse_port
        );
    }
}

/// Makes a removed listener take no new connection while the old workers empty its queue: a
/// TCP socket drops every packet that reaches it (new SYNs; the connections already queued are
/// sockets of their own, not filtered), a unix socket's file is removed.
fn stop_taking(h: &Held) {
    match &h.addr {
        BindAddr::Tcp(_) => {
            // BPF_RET | BPF_K with 0: keep no byte of the packet, i.e. drop it.
            let drop_all = [libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0,
            }];
            if let Err(e) = socket2::SockRef::from(&h.fd).attach_filter(&drop_all) {
                tracing::warn!(
                    "SIGHUP: {} takes connections until its last old worker exits: {e}",
                    h.addr
                );
            }
        }
        BindAddr::Unix(_) => {
            if let Some(file) = &h.file {
                file.remove_now();
            }
        }
    }
}

/// Undoes [`stop_taking`] on a removed TCP listener a reload brings back.
fn take_again(h: &Held) {
    if let Err(e) = socket2::SockRef::from(&h.fd).detach_filter() {
        tracing::warn!("SIGHUP: {} still drops new connections: {e}", h.addr);
    }
}

/// Whether a connection waits in a listening socket's queue.
fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLIN != 0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(binds: &[String]) -> ServeConfig {
        ServeConfig {
            bind: binds.iter().map(|b| b.parse().unwrap()).collect(),
            ..ServeConfig::default()
        }
    }

    fn addrs(l: &Listening) -> Vec<String> {
        l.listeners().iter().map(|(a, _)| a.to_string()).collect()
    }

    #[test]
    fn kept_addresses_keep_their_socket_removed_ones_close_after_their_workers() {
        let a = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 8, false).unwrap();
        let a_addr = a.local_addr().unwrap().to_string();
        let given: Vec<Bind> = vec!["127.0.0.1:0".parse().unwrap()];
        let mut l = Listening::new(vec![a], &given, &given, Vec::new()).unwrap();
        let a_fd = l.fds()[0];
        let shape = Shape::of(&ServeConfig::default());

        // `:0` names the socket it got; a second address is opened beside it.
        let c = config(&["127.0.0.1:0".into(), "127.0.0.1:0".into()]);
        let done = l.rebind(&c, shape, None).unwrap();
        assert_eq!(l.fds()[0], a_fd, "kept");
        assert_eq!(addrs(&l)[0], a_addr);
        assert_eq!(done.opened.len(), 1);
        let b_addr = addrs(&l)[1].clone();
        assert_eq!(l.generation(), 1);

        // Remove the first: it stops taking connections, and stays open while a worker of
        // generation 1 or older lives.
        let c = config(std::slice::from_ref(&b_addr));
        let done = l.rebind(&c, shape, None).unwrap();
        assert_eq!(done.removed, std::slice::from_ref(&a_addr));
        assert_eq!(addrs(&l), std::slice::from_ref(&b_addr));
        let a_sock: std::net::SocketAddr = a_addr.parse().unwrap();
        let waiting = std::net::TcpStream::connect_timeout(&a_sock, Duration::from_millis(300));
        assert!(
            waiting.is_err(),
            "a removed listener takes no new connection"
        );
        l.release(Some(1));
        assert_eq!(l.closing.len(), 1);
        l.release(Some(2));
        assert!(l.closing.is_empty());
        let refused = std::net::TcpStream::connect_timeout(&a_sock, Duration::from_secs(2));
        assert_eq!(
            refused.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
    }

    /// `--no-defer-accept` changed by a `SIGHUP` applies to a kept TCP socket.
    #[test]
    fn a_kept_socket_takes_a_changed_no_defer_accept() {
        let defer_secs = |fd: RawFd| {
            let mut v: libc::c_int = -1;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt into a live c_int of the size given, on a listener's fd.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_DEFER_ACCEPT,
                    std::ptr::from_mut(&mut v).cast(),
                    &mut len,
                )
            };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            v
        };
        let given: Vec<Bind> = vec!["127.0.0.1:0".parse().unwrap()];
        let a = Listener::bind_serving(&given[0], &ServeConfig::default()).unwrap();
        let a_addr = a.local_addr().unwrap().to_string();
        let mut l = Listening::new(vec![a], &given, &given, Vec::new()).unwrap();
        let a_fd = l.fds()[0];
        assert!(defer_secs(a_fd) > 0, "deferred by default");
        let mut c = config(std::slice::from_ref(&a_addr));
        c.no_defer_accept = true;
        l.rebind(&c, Shape::of(&ServeConfig::default()), None)
            .unwrap();
        assert_eq!(l.fds()[0], a_fd, "kept");
        assert_eq!(defer_secs(a_fd), 0, "--no-defer-accept applied");
        let back = config(std::slice::from_ref(&a_addr));
        l.rebind(&back, Shape::of(&c), None).unwrap();
        assert!(defer_secs(a_fd) > 0, "deferred again");
    }

    #[test]
    fn a_removed_tcp_listener_still_open_is_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 8, false).unwrap();
        let a_addr = a.local_addr().unwrap().to_string();
        let given: Vec<Bind> = vec!["127.0.0.1:0".parse().unwrap()];
        let mut l = Listening::new(vec![a], &given, &given, Vec::new()).unwrap();
        let a_fd = l.fds()[0];
        let shape = Shape::of(&ServeConfig::default());
        let unix = format!("unix:{}", dir.path().join("b.sock").display());
        l.rebind(&config(std::slice::from_ref(&unix)), shape, None)
            .unwrap();
        assert_eq!(l.closing.len(), 1);
        // A worker of generation 0 still holds `a`, and the undo comes before it exits.
        let c = config(&[a_addr.clone(), unix.clone()]);
        let done = l.rebind(&c, shape, None).unwrap();
        assert_eq!(l.fds()[0], a_fd, "the same socket again, not bound anew");
        assert_eq!(done.opened, std::slice::from_ref(&a_addr));
        assert!(l.closing.is_empty(), "{:?}", l.closing);
        let a_sock: std::net::SocketAddr = a_addr.parse().unwrap();
        std::net::TcpStream::connect_timeout(&a_sock, Duration::from_secs(1))
            .expect("it takes connections again");
    }

    #[test]
    fn an_address_that_cannot_be_bound_changes_nothing_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 8, false).unwrap();
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let given: Vec<Bind> = vec!["127.0.0.1:0".parse().unwrap()];
        let mut l = Listening::new(vec![a], &given, &given, Vec::new()).unwrap();
        let before = l.fds();
        let sock = dir.path().join("new.sock");
        let c = config(&[
            format!("unix:{}", sock.display()),
            busy.local_addr().unwrap().to_string(),
        ]);
        let shape = Shape::of(&ServeConfig::default());
        let e = l.rebind(&c, shape, None).unwrap_err();
        assert!(
            format!("{e:#}").contains(&busy.local_addr().unwrap().to_string()),
            "{e:#}"
        );
        assert_eq!(l.fds(), before);
        assert_eq!(l.generation(), 0);
        assert!(
            !sock.exists(),
            "the socket opened first is closed and removed"
        );
    }

    #[test]
    fn a_removed_unix_socket_loses_its_file_at_once_and_queued_connections_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let a = Listener::bind(&BindAddr::Unix(path.clone()), 8, false).unwrap();
        let files: Vec<SocketFile> = a.socket_file().into_iter().collect();
        let given: Vec<Bind> = vec![format!("unix:{}", path.display()).parse().unwrap()];
        let mut l = Listening::new(vec![a], &given, &given, files).unwrap();
        let queued = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let c = config(&["127.0.0.1:0".into()]);
        l.rebind(&c, Shape::of(&c), None).unwrap();
        assert!(!path.exists(), "removed at once");
        assert_eq!(
            l.queued(|g| g == 1).map(|a| a.to_string()),
            Some(format!("unix:{}", path.display()))
        );
        assert!(l.queued(|g| g == 2).is_none(), "not a newer worker's");
        drop(queued);
        l.release(None);
        assert!(l.closing.is_empty());
    }
}
