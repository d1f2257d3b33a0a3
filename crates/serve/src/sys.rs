//! Small OS-level helpers: resource limits, descriptors, the scheduling policy, a worker's
//! start-up pages.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns (soft, hard) after the change.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    rlimit::increase_nofile_limit(u64::MAX)?;
    rlimit::getrlimit(rlimit::Resource::NOFILE)
}

/// Moves a descriptor to 100 or above (close-on-exec). The master hands descriptors to workers
/// at 3, 4, …; keeping its own copies high means `dup2` onto those numbers in the child can never
/// overwrite a descriptor it still has to copy.
pub fn move_fd_high(fd: std::os::fd::OwnedFd) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: fcntl on a descriptor we own; the result is checked.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
    if high < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a fresh descriptor that we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(high) })
}

/// Sets close-on-exec on an inherited descriptor (systemd's and an old master's come without
/// it): the master hands workers their copies explicitly. Failure leaves it as it was.
pub(crate) fn set_cloexec(fd: std::os::fd::RawFd) {
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Whether closing the socket `fd` now could destroy the answer just written: the client has sent
/// bytes that wait unread in its receive queue (closing then makes the kernel answer with a RST
/// instead of a FIN), or part of our answer is still queued unsent (a RST from a request the
/// client sends a moment later would discard it). Either way the close should be staged (RFC
/// 9112 §9.6): shut the writing side, read off what comes, then close. At most two syscalls,
/// neither of which blocks; a small answer on a fast link is sent at once, so most closes stay
/// immediate.
///
/// Each check is made only where it can tell something: unread bytes found by the first need
/// no second, and a unix socket has no queue of unsent bytes (a write lands in the peer's
/// receive queue at once; SIOCOUTQNSD is TCP's and fails there), so it gets the peek alone.
/// Unread bytes matter there too: closing with them makes the peer's next read fail with
/// ECONNRESET instead of ending cleanly.
pub(crate) fn close_may_lose_answer(
    fd: std::os::fd::RawFd,
    transport: c10k_http::Transport,
) -> bool {
    unread_bytes_wait(fd)
        || match transport {
            c10k_http::Transport::Tcp => unsent_bytes_wait(fd),
            c10k_http::Transport::Unix => false,
        }
}

/// Whether the client has sent bytes that wait unread in `fd`'s receive queue (a non-blocking
/// one-byte `MSG_PEEK`, which leaves them there).
fn unread_bytes_wait(fd: std::os::fd::RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `recv` writes at most one byte into `byte`, which we own; MSG_PEEK leaves it queued.
    let unread = unsafe {
        libc::recv(
            fd,
            std::ptr::from_mut(&mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    unread > 0
}

/// Makes closing the TCP `socket` send a RST instead of a FIN (`SO_LINGER` on, 0 s): for an
/// answer known to be incomplete whose framing cannot say so (a close-delimited body whose
/// stream failed), so the peer sees an error rather than a clean end. Bytes still queued unsent
/// are dropped with it. On a unix socket it changes nothing (the peer reads a plain end).
/// Failure leaves the socket as it was.
pub(crate) fn reset_on_close(socket: &impl std::os::fd::AsFd) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(std::time::Duration::ZERO));
}

/// Whether part of what was written to the TCP socket `fd` is still queued unsent.
fn unsent_bytes_wait(fd: std::os::fd::RawFd) -> bool {
    /// `SIOCOUTQNSD` (linux/sockios.h): bytes in the send queue not yet sent.
    const SIOCOUTQNSD: libc::c_ulong = 0x894B;
    let mut unsent: libc::c_int = 0;
    // SAFETY: the ioctl writes one int into `unsent`, which we own; on a socket that does not
    // know it, it fails and writes nothing.
    let r = unsafe { libc::ioctl(fd, SIOCOUTQNSD as _, &mut unsent) };
    r == 0 && unsent > 0
}

/// Points this process's standard output and error (descriptors 1 and 2) at `fd`, as
/// gunicorn's `--capture-output` does; processes started afterwards inherit them.
pub fn redirect_stdout_stderr(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    for target in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors from one that is open (borrowed).
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Puts every thread of this process (and, by inheritance, every thread it starts later) under
/// SCHED_BATCH: a woken thread waits for the running one to block or use up its slice instead of
/// preempting it. Needs no privilege. Returns how many threads were changed.
pub fn batch_scheduling() -> std::io::Result<usize> {
    let param = libc::sched_param { sched_priority: 0 };
    let mut changed = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: plain syscall on a thread id of this process; `param` outlives the call.
        if unsafe { libc::sched_setscheduler(tid, libc::SCHED_BATCH, &param) } == 0 {
            changed += 1;
        } else {
            let e = std::io::Error::last_os_error();
            // A thread that exited meanwhile is no error.
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
    }
    Ok(changed)
}

/// The scheduling policy of thread `tid` of this process (`libc::SCHED_*`).
pub fn scheduling_policy(tid: libc::pid_t) -> std::io::Result<i32> {
    // SAFETY: plain syscall; no memory is passed.
    let p = unsafe { libc::sched_getscheduler(tid) };
    if p < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p)
}

/// What [`release_startup_pages`] dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Kibibytes of RSS the released mappings had before.
    pub kib: u64,
    /// Distinct files (the executable, libpython, other shared libraries, extension modules,
    /// locale files) with at least one mapping released.
    pub files: usize,
}

/// Drops this process's page-table entries for the read-only pages it maps from files and holds
/// no private copy of (code and constants of the executable, libpython, libc, libcrypto, Python
/// extension modules, the locale archive), once the worker has booted.
///
/// Why: a worker is a fresh process (the master re-executes itself), so it runs the interpreter's
/// start, the app's import, argument and config parsing, and the logging set-up itself (a Python
/// worker forked from a zygote, see `zygote`, inherits the zygote's mappings of all but the
/// import, which it runs itself), and the kernel maps each page it touches with up to 15 neighbours (fault-around). That code never runs
/// again, but without this a worker's RSS counts it for good: ~6 MB of file pages per Flask
/// worker, ~3 MB of them the executable's. A gunicorn worker, forked from a master that did that
/// work, never maps those pages at all (fork copies no page-table entries of read-only file
/// mappings), so this is what makes the two figures compare the same thing: what serving uses.
///
/// Why it is safe: the pages stay in the page cache (shared with the master and the other
/// workers); what the worker runs afterwards faults back in as a minor fault, the same as after
/// the kernel reclaims a clean file page, which it may do at any time. Only mappings without
/// write permission and without any private (copy-on-write) page are touched: `MADV_DONTNEED`
/// would revert a private page (the relocated RELRO segment, say) to the file's content. Device
/// and anonymous mappings (`[heap]`, `[stack]`, `[vdso]`) are left alone.
pub fn release_startup_pages() -> std::io::Result<Released> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = Released::default();
    let mut files = std::collections::HashSet::new();
    // The current entry, when it is a candidate: start, end, path.
    let mut current: Option<(usize, usize, &str)> = None;
    let mut rss = 0u64;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // "start-end perms offset dev inode path"
            let perms = fields.next().unwrap_or_default();
            let path = fields.nth(3).unwrap_or_default();
            current = None;
            if path.starts_with('/') && !path.starts_with("/dev/") && !perms.contains('w') {
                let (start, end) = first.split_once('-').unwrap_or_default();
                if let (Ok(s), Ok(e)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    current = Some((s, e, path));
                }
            }
            continue;
        }
        let Some((start, end, path)) = current else {
            continue;
        };
        match first {
            "Rss:" => rss = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            // The last field of an entry that release needs: a private page vetoes it.
            "Anonymous:" => {
                let anon: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(1);
                current = None;
                if anon != 0 || rss == 0 {
                    continue;
                }
                // SAFETY: a read-only, file-backed mapping with no private pages: dropping its
                // page-table entries loses nothing; later accesses fault the same file pages
                // back in. A mapping that went away meanwhile only makes madvise fail.
                if unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
                } == 0
                {
                    released.kib += rss;
                    files.insert(path);
                }
            }
            _ => {}
        }
    }
    released.files = files.len();
    Ok(released)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    use c10k_http::Transport;

    use super::close_may_lose_answer;

    #[test]
    fn a_unix_socket_with_bytes_unread_is_at_risk_without_the_ioctl() {
        // Only the peek tells here (SIOCOUTQNSD fails on a unix socket and is not asked): what
        // the client sent and we did not read would turn its next read into ECONNRESET.
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!close_may_lose_answer(ours.as_raw_fd(), Transport::Unix));
        theirs.write_all(b"GET").unwrap();
        assert!(close_may_lose_answer(ours.as_raw_fd(), Transport::Unix));
        let mut buf = [0u8; 3];
        (&ours).read_exact(&mut buf).unwrap();
        assert!(!close_may_lose_answer(ours.as_raw_fd(), Transport::Unix));
    }

    #[test]
    fn a_tcp_socket_is_at_risk_with_bytes_unread_or_unsent() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        client.connect(&l.local_addr().unwrap().into()).unwrap();
        let mut client = std::net::TcpStream::from(client);
        let (mut ours, _) = l.accept().unwrap();
        assert!(!close_may_lose_answer(ours.as_raw_fd(), Transport::Tcp));
        client.write_all(b"GET").unwrap();
        client.flush().unwrap();
        let mut unread = false;
        for _ in 0..100 {
            unread = close_may_lose_answer(ours.as_raw_fd(), Transport::Tcp);
            if unread {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(unread, "the peek sees the request");
        let mut buf = [0u8; 3];
        ours.read_exact(&mut buf).unwrap();
        assert!(!close_may_lose_answer(ours.as_raw_fd(), Transport::Tcp));
        // More than the client's window takes: the rest waits unsent in our send queue.
        ours.set_nonblocking(true).unwrap();
        let chunk = [b'x'; 64 * 1024];
        while ours.write(&chunk).is_ok() {}
        assert!(close_may_lose_answer(ours.as_raw_fd(), Transport::Tcp));
    }

    #[test]
    fn releasing_the_start_up_pages_keeps_the_process_running() {
        let released = super::release_startup_pages().unwrap();
        assert!(released.kib > 0, "the test binary's own code was resident");
        // Code and constants fault back in: formatting and allocation still work.
        assert_eq!(format!("{:?}", vec![1, 2]), "[1, 2]");
        assert!(super::release_startup_pages().unwrap().kib > 0);
    }

    #[test]
    fn the_shared_libraries_pages_are_released_too() {
        // The test binary maps libc (and ld.so) besides itself; a worker also maps libpython
        // and the app's extension modules, which only this makes it drop.
        let released = super::release_startup_pages().unwrap();
        assert!(
            released.files >= 2,
            "only {} file(s) released: {released:?}",
            released.files
        );
        // libc's code faults back in.
        // SAFETY: getpid has no preconditions.
        assert_eq!(unsafe { libc::getpid() } as u32, std::process::id());
    }

    #[test]
    fn writable_and_private_pages_are_kept() {
        // A private copy-on-write page of a read-only file mapping (what relocation leaves in
        // RELRO) must survive: releasing it would bring back the file's bytes.
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, &[b'f'; 4096]).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(file.as_file());
        // SAFETY: a fresh private mapping of a 4 KiB file we own; unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                fd,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let bytes = p.cast::<u8>();
        // SAFETY: p maps 4096 bytes; write one, then make the mapping read-only like RELRO.
        unsafe {
            *bytes = b'r';
            assert_eq!(libc::mprotect(p, 4096, libc::PROT_READ), 0);
        }
        super::release_startup_pages().unwrap();
        // SAFETY: still mapped.
        assert_eq!(unsafe { *bytes }, b'r', "the private page was dropped");
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p, 4096) };
    }
}
