//! Forked workers: a zygote process starts the application's runtime (the Python interpreter)
//! once and forks every worker from it, as gunicorn's and uWSGI's masters fork theirs.
//!
//! **Why.** A worker started by exec shares only file-backed pages with its siblings. Forked
//! workers share every page of the runtime that none of them has written since the fork: less
//! memory (PSS), and, where workers share a CPU, one copy of those pages in its caches instead of
//! one per worker (`scripts/worker-sharing.sh` measures what that is worth).
//!
//! **Who forks.** The master cannot: it starts no runtime, and it stays single-threaded and
//! small. So it starts one more process the way it starts a worker (`/proc/self/exe`, the same
//! descriptors and environment), plus one end of a control socket: the zygote. The zygote runs
//! [`Forking::prepare`], starts no thread, and then waits for requests, each a slot number.
//! For each, it forks twice ([`Forking::fork`], the runtime's own fork with its hooks): the
//! middle process reports the worker's pid on the control socket and exits, so the worker is
//! re-parented to the master, which is a child subreaper (`PR_SET_CHILD_SUBREAPER`) and reaps
//! it as it reaps the workers it starts by exec. The worker waits until the master is its
//! parent, sets its death signal (which a change of parent would otherwise fire), and goes on
//! with a worker's boot in that slot.
//!
//! **When it fails.** A zygote that cannot prepare the runtime, dies, or does not answer (within
//! 15 s; its first answer, after the runtime's start, within `--timeout` if that is longer) is
//! stopped, and the master starts that worker by exec as it does without a zygote: the worker's
//! own boot then says what is wrong. The master does not wait for that first answer: it sends
//! the request ([`Zygote::begin`]) and goes on with its loop (signals, its admin endpoint, the
//! workers that serve meanwhile) until the answer comes ([`Zygote::answer`]); later requests
//! are quick forks, which it waits for. The master stops a zygote when it stops, at each rolling
//! restart (`HUP`), whose configuration and listeners the old one would still hold, and at
//! `USR1`, whose reopened log files it would not have (it ignores the signal).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The environment variable that makes a started process a zygote: its control socket's
/// descriptor.
pub(crate) const ENV_ZYGOTE: &str = "C10K_ZYGOTE_FD";
/// How long the master waits for a worker's pid; for the first, the zygote's start included,
/// at least (see [`Zygote::new`]).
const REPLY_WAIT: Duration = Duration::from_secs(15);
/// The zygote's answer when it could not start the runtime ([`Forking::prepare`] failed).
const NOT_PREPARED: i64 = i64::MIN;
/// How long a forked worker waits to be re-parented to the master.
const REPARENT_WAIT: Duration = Duration::from_secs(5);

/// How a hosted runtime is started once in a zygote and forked into workers.
pub struct Forking {
    /// Starts the runtime, in the zygote, before any fork. An error stops the zygote, and the
    /// master starts its workers by exec (whose boot reports the error).
    pub prepare: Box<dyn FnOnce() -> anyhow::Result<()>>,
    /// `fork(2)` with the runtime's fork hooks (Python: `PyOS_BeforeFork` and the
    /// `PyOS_AfterFork_*` pair). Returns 0 in the child and the child's pid in the parent.
    pub fork: fn() -> io::Result<libc::pid_t>,
}

impl std::fmt::Debug for Forking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forking").finish_non_exhaustive()
    }
}

/// Whether this process was started as a zygote.
pub(crate) fn is_zygote() -> bool {
    std::env::var_os(ENV_ZYGOTE).is_some()
}

/// The master's end of a zygote.
#[derive(Debug)]
pub(crate) struct Zygote {
    pid: i32,
    control: OwnedFd,
    /// How long the answer to the first request ([`Zygote::begin`]) may take.
    start_wait: Duration,
    /// The first request, sent by [`Zygote::begin`], while its answer has not come.
    pending: Option<Pending>,
}

/// A request whose answer the master collects from its loop instead of waiting for it.
#[derive(Debug)]
struct Pending {
    slot: usize,
    deadline: Instant,
}

/// A connected pair of control sockets (close-on-exec): the master keeps the first and hands
/// the second to the zygote.
pub(crate) fn control_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into `fds` on success.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((crate::sys::move_fd_high(a)?, crate::sys::move_fd_high(b)?))
}

impl Zygote {
    /// Its first answer may take `start_wait` where that is longer than [`REPLY_WAIT`]: the
    /// zygote prepares the runtime first, and that includes the application's import under
    /// `--preload`, which may take as long as a worker's boot.
    pub(crate) fn new(pid: i32, control: OwnedFd, start_wait: Duration) -> Zygote {
        Zygote {
            pid,
            control,
            start_wait: start_wait.max(REPLY_WAIT),
            pending: None,
        }
    }

    /// Asks for the first worker, in `slot`, without waiting: the zygote answers once it has
    /// prepared the runtime, which under `--preload` is the application's import. Until
    /// [`Zygote::answer`] returns it, [`Zygote::preparing`] says what to poll and how long.
    pub(crate) fn begin(&mut self, slot: usize) -> io::Result<()> {
        send(self.control.as_raw_fd(), slot as i64, 0)?;
        self.pending = Some(Pending {
            slot,
            deadline: Instant::now() + self.start_wait,
        });
        Ok(())
    }

    /// While the answer to [`Zygote::begin`]'s request has not come: the control socket, which
    /// becomes readable with it, and when the master stops waiting for it.
    pub(crate) fn preparing(&self) -> Option<(RawFd, Instant)> {
        let p = self.pending.as_ref()?;
        Some((self.control.as_raw_fd(), p.deadline))
    }

    /// The answer to [`Zygote::begin`]'s request, once it has come or its time is up: the slot
    /// asked for and its worker's pid, or why there is none. `None` while the zygote prepares
    /// (and when nothing is pending). Does not block.
    pub(crate) fn answer(&mut self) -> Option<(usize, Result<i32, ForkError>)> {
        let p = self.pending.as_ref()?;
        let mut pfd = libc::pollfd {
            fd: self.control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout only looks.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n <= 0 || pfd.revents == 0 {
            if Instant::now() < p.deadline {
                return None;
            }
            let slot = self.pending.take()?.slot;
            let late = io::Error::new(io::ErrorKind::TimedOut, "the zygote did not answer");
            return Some((slot, Err(late.into())));
        }
        let slot = self.pending.take()?.slot;
        Some((slot, self.read_answer(slot).and_then(worker_pid)))
    }

    /// The slot whose request [`Zygote::begin`] sent, taken back (the zygote exited before it
    /// answered).
    pub(crate) fn abandon(&mut self) -> Option<usize> {
        self.pending.take().map(|p| p.slot)
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Asks for a worker in `slot` and returns its pid, once it is forked (it may still be
    /// waiting to be re-parented). Waits at most [`REPLY_WAIT`]: only after the answer to
    /// [`Zygote::begin`]'s first request, which waits for the runtime's start. Gives up early, with
    /// [`ForkError::Stopping`], when `wake` (the master's signal pipe, which this drains) is
    /// readable and `stopping()` says a signal to stop came.
    pub(crate) fn fork_worker(
        &self,
        slot: usize,
        wake: RawFd,
        stopping: impl Fn() -> bool,
    ) -> Result<i32, ForkError> {
        worker_pid(self.ask(slot, wake, stopping)?)
    }

    /// Sends the request for `slot` and returns the zygote's answer to it.
    fn ask(&self, slot: usize, wake: RawFd, stopping: impl Fn() -> bool) -> Result<i64, ForkError> {
        send(self.control.as_raw_fd(), slot as i64, 0)?;
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(
                    io::Error::new(io::ErrorKind::TimedOut, "the zygote did not answer").into(),
                );
            }
            let mut pfds = [self.control.as_raw_fd(), wake].map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: a valid array of two pollfds.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if pfds[1].revents != 0 {
                drain(wake);
                if stopping() {
                    return Err(ForkError::Stopping);
                }
            }
            if pfds[0].revents == 0 {
                continue;
            }
            return self.read_answer(slot);
        }
    }

    /// Reads the zygote's answer to the request for `slot` (the control socket is readable).
    fn read_answer(&self, slot: usize) -> Result<i64, ForkError> {
        let exited = || io::Error::new(io::ErrorKind::UnexpectedEof, "the zygote exited");
        // A zygote that exits with our request unread resets the connection.
        let (got, value) = match recv(self.control.as_raw_fd()) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(exited().into()),
            other => other?.ok_or_else(exited)?,
        };
        if got != slot as i64 {
            return Err(io::Error::other(format!(
                "the zygote answered for slot {got}, not {slot}"
            ))
            .into());
        }
        Ok(value)
    }
}

/// A worker's pid from the zygote's answer, or why it forked none.
fn worker_pid(answer: i64) -> Result<i32, ForkError> {
    match answer {
        pid if pid > 0 => Ok(pid as i32),
        NOT_PREPARED => Err(ForkError::NotPrepared),
        errno => Err(io::Error::from_raw_os_error(-errno as i32).into()),
    }
}

/// Why the zygote gave no worker.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForkError {
    /// It could not start the runtime: any zygote started with this configuration would fail
    /// the same way.
    #[error("the zygote could not start the application's runtime")]
    NotPrepared,
    /// A signal to stop came while the master waited.
    #[error("a signal to stop came")]
    Stopping,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Blocks (`SIG_BLOCK`) or unblocks (`SIG_UNBLOCK`) HUP and TERM for the calling thread.
fn block_signals(how: libc::c_int) {
    // SAFETY: the set is initialised by sigemptyset before use, and pthread_sigmask reads it
    // from a live local; a null old-set pointer is allowed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// In a worker, once its signal handlers are installed: delivers a HUP or TERM that came while
/// they were blocked (a worker forked from the zygote inherits the zygote's mask), and lets the
/// threads the worker starts from here, and the processes the application starts, receive them.
/// Nothing is blocked in a worker started by exec.
pub(crate) fn unblock_signals() {
    block_signals(libc::SIG_UNBLOCK);
}

/// Reads whatever a non-blocking descriptor holds.
fn drain(fd: RawFd) {
    let mut sink = [0u8; 64];
    // SAFETY: reads into a live buffer of its length.
    while unsafe { libc::read(fd, sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
}

/// One message: two little-endian i64 (the slot, and a pid or 0 or `-errno`).
fn send(fd: RawFd, slot: i64, value: i64) -> io::Result<()> {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&slot.to_le_bytes());
    buf[8..].copy_from_slice(&value.to_le_bytes());
    loop {
        // SAFETY: sends from a live buffer of its length.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n == buf.len() as isize {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(if n < 0 {
            e
        } else {
            io::Error::other("short send")
        });
    }
}

/// The next message, or `None` at end of stream (the other end is closed).
fn recv(fd: RawFd) -> io::Result<Option<(i64, i64)>> {
    let mut buf = [0u8; 16];
    loop {
        // SAFETY: receives into a live buffer of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n == 0 {
            return Ok(None);
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n != buf.len() as isize {
            return Err(io::Error::other("a control message of the wrong size"));
        }
        let slot = i64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
        let value = i64::from_le_bytes(buf[8..].try_into().unwrap_or_default());
        return Ok(Some((slot, value)));
    }
}

/// The zygote's life: prepares the runtime, then forks workers until the master closes the
/// control socket (the zygote then exits). Returns only in a forked worker, with its slot.
/// `boot_error` is the exit status of a zygote that cannot prepare the runtime and of a worker
/// its master did not adopt.
pub(crate) fn serve(forking: Forking, boot_error: i32) -> anyhow::Result<usize> {
    let fd: RawFd = std::env::var(ENV_ZYGOTE)
        .ok()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("zygote started without a valid {ENV_ZYGOTE}"))?;
    // SAFETY: the master placed the control socket at this descriptor for this process alone.
    let control = unsafe { OwnedFd::from_raw_fd(fd) };
    // Not for the runtime's environment (Python copies it at start) nor the workers'.
    std::env::remove_var(ENV_ZYGOTE);
    // SAFETY: getppid has no preconditions. The zygote is the master's child.
    let master = unsafe { libc::getppid() };
    // A SIGHUP or SIGTERM sent to every process of the server (a process group, systemd's
    // `KillMode=control-group`) must not end the zygote: the master stops it (SIGKILL) when it
    // is done with it, and its control socket's end of stream stops it if the master dies.
    // SIGINT is ignored already, as by every worker. They are blocked, not ignored: a worker
    // forked from here inherits the mask, so a HUP (the master retires a worker with it) or a
    // TERM sent before the worker has its handlers waits for them ([`unblock_signals`]). An
    // ignored HUP was lost, and a rolling restart that retired a worker just forked waited for
    // it forever.
    block_signals(libc::SIG_BLOCK);
    // `ps -o comm`, `top` and `pgrep c10k-zygote` tell it from the workers; a worker takes back
    // the name it had.
    let name = crate::proc_name::current();
    crate::proc_name::set(b"c10k-zygote");
    if let Err(e) = (forking.prepare)() {
        // The worker the master then starts by exec meets the same error and reports it. The
        // master is told (it has asked for a worker already) so that it starts no other zygote
        // to meet it again.
        tracing::debug!("the zygote cannot start the runtime: {e:#}");
        if let Ok(Some((slot, _))) = recv(control.as_raw_fd()) {
            let _ = send(control.as_raw_fd(), slot, NOT_PREPARED);
        }
        std::process::exit(boot_error);
    }
    tracing::debug!("zygote ready");
    loop {
        let Some((slot, _)) = recv(control.as_raw_fd()).context("zygote control socket")? else {
            std::process::exit(0);
        };
        let Ok(slot_index) = usize::try_from(slot) else {
            send(control.as_raw_fd(), slot, -i64::from(libc::EINVAL))?;
            continue;
        };
        if let Err(e) = single_threaded() {
            send(
                control.as_raw_fd(),
                slot,
                -i64::from(e.raw_os_error().unwrap_or(0)),
            )?;
            continue;
        }
        match (forking.fork)() {
            Err(e) => send(control.as_raw_fd(), slot, -errno(&e))?,
            Ok(0) => {
                // The middle process: fork the worker, say its pid, exit.
                match (forking.fork)() {
                    Ok(0) => {
                        drop(control);
                        crate::proc_name::set(&name);
                        adopted_by(master, boot_error);
                        return Ok(slot_index);
                    }
                    Ok(pid) => {
                        let sent = send(control.as_raw_fd(), slot, i64::from(pid));
                        // SAFETY: kill has no memory-safety preconditions; _exit ends this copy
                        // without running the runtime's exit handlers, which belong to the
                        // zygote.
                        unsafe {
                            if sent.is_err() {
                                // A worker the master does not know of (it gave up waiting
                                // or is gone) must not serve beside the one it starts instead.
                                libc::kill(pid, libc::SIGKILL);
                            }
                            libc::_exit(i32::from(sent.is_err()))
                        };
                    }
                    Err(e) => {
                        let _ = send(control.as_raw_fd(), slot, -errno(&e));
                        // SAFETY: as above.
                        unsafe { libc::_exit(1) };
                    }
                }
            }
            Ok(middle) => wait_for(middle),
        }
    }
}

fn errno(e: &io::Error) -> i64 {
    i64::from(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Only a process with one thread forks safely: the child gets the forking thread alone, and a
/// lock another thread held stays locked in it for good. The runtime's preparation must not
/// start threads (nor must an application imported in it); this makes sure it did not.
fn single_threaded() -> io::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    match threads {
        Some(1) => Ok(()),
        other => {
            tracing::warn!(
                threads = other.unwrap_or(0),
                "the zygote has more than one thread, so it cannot fork workers, and they are \
                 started by exec instead (with --preload: the application started a thread \
                 at import; start it later, e.g. at its first request)"
            );
            Err(io::Error::from_raw_os_error(libc::EDEADLK))
        }
    }
}

/// Reaps the middle process.
fn wait_for(pid: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child; status is ours.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// In a forked worker: waits until the middle process has exited and `master` is this process's
/// parent, then sets the death signal the master's other workers have (it is cleared by a
/// fork and would fire at the change of parent if set before). Exits if the master is gone or
/// did not adopt the worker: a worker its master cannot reap must not serve.
fn adopted_by(master: libc::pid_t, boot_error: i32) {
    let deadline = Instant::now() + REPARENT_WAIT;
    // SAFETY: getppid has no preconditions.
    while unsafe { libc::getppid() } != master {
        if Instant::now() >= deadline {
            tracing::error!("a forked worker was not adopted by its master; exiting");
            // SAFETY: as in `serve`.
            unsafe { libc::_exit(boot_error) };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number, and getppid have no
    // memory-safety preconditions.
    unsafe {
        // TERM is blocked until the worker has its handlers (`unblock_signals`), which it
        // installs before the application's import: the death signal then stops it gracefully.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        if libc::getppid() != master {
            libc::_exit(0);
        }
    }
}
