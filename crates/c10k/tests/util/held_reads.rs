//! Slow disks on demand: [`HeldReads`] holds a file's first read as a disk that takes its time
//! would (a fanotify permission watch; root only, "skipped" elsewhere), and [`evict`] drops a
//! file from the page cache, so that the server must read it from the disk at all.

use std::time::Duration;

/// Holds the first read of a file until [`HeldReads::release`], as a slow disk would (a
/// fanotify permission watch, `FAN_ACCESS_PERM`: every read of the file waits for this side's
/// answer); later reads go through at once. Dropping it lets every read through.
pub struct HeldReads {
    /// Told once the first read waits.
    pub waiting: std::sync::mpsc::Receiver<()>,
    release: Option<std::sync::mpsc::Sender<()>>,
    answerer: Option<std::thread::JoinHandle<()>>,
}

impl HeldReads {
    /// `None` where fanotify's permission events are not allowed (they need CAP_SYS_ADMIN).
    pub fn watch(path: &std::path::Path) -> Option<HeldReads> {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;
        let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        // SAFETY: plain syscalls; the descriptor returned is owned here.
        let fd = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as u32) };
        if fd < 0 {
            eprintln!(
                "skipped: fanotify permission events: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fan = unsafe { OwnedFd::from_raw_fd(fd) };
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let marked = unsafe {
            libc::fanotify_mark(
                fd,
                libc::FAN_MARK_ADD,
                libc::FAN_ACCESS_PERM,
                libc::AT_FDCWD,
                c_path.as_ptr(),
            )
        };
        assert_eq!(marked, 0, "{}", std::io::Error::last_os_error());
        let (waiting_tx, waiting) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let answerer = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let mut first = true;
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reads into our buffer, at most its length.
                let n = unsafe { libc::read(fan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    // Nothing yet (non-blocking): stop once the test has dropped its side.
                    if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) =
                        release_rx.recv_timeout(Duration::from_millis(20))
                    {
                        return;
                    }
                    continue;
                }
                let mut at = 0;
                while at + std::mem::size_of::<libc::fanotify_event_metadata>() <= n as usize {
                    // SAFETY: the kernel wrote whole events; read_unaligned copes with the
                    // buffer's alignment.
                    let ev: libc::fanotify_event_metadata =
                        unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                    at += ev.event_len as usize;
                    if first {
                        first = false;
                        let _ = waiting_tx.send(());
                        // Released by the test, or at the latest when it gives up.
                        let _ = release_rx.recv_timeout(Duration::from_secs(30));
                    }
                    let answer = libc::fanotify_response {
                        fd: ev.fd,
                        response: libc::FAN_ALLOW,
                    };
                    // SAFETY: writes the response struct we own; then closes the event's
                    // descriptor, which the kernel opened for us.
                    unsafe {
                        libc::write(
                            fan.as_raw_fd(),
                            (&raw const answer).cast(),
                            std::mem::size_of_val(&answer),
                        );
                        libc::close(ev.fd);
                    }
                }
            }
        });
        Some(HeldReads {
            waiting,
            release: Some(release),
            answerer: Some(answerer),
        })
    }

    pub fn release(&self) {
        if let Some(r) = &self.release {
            let _ = r.send(());
        }
    }
}

impl Drop for HeldReads {
    fn drop(&mut self) {
        // The answerer lets the held read through and stops; closing the watch lets any read
        // still waiting through.
        drop(self.release.take());
        if let Some(t) = self.answerer.take() {
            let _ = t.join();
        }
    }
}

/// The scenario of a slow disk under one event loop: starts `c10k serve -k CLASS -w 1 --threads 2
/// EXTRA APP` with the probe apps on the Python path and `env` in the app's environment, sends
/// `request` (whose answer reads the watched file), waits until the server reads the file, and
/// checks that meanwhile another client of the same worker gets its `GET /` answered within 3 s;
/// then lets the read through. Returns the server and the first connection, whose answer the
/// caller reads and checks.
pub fn answered_while_a_read_waits(
    held: &HeldReads,
    class: &str,
    extra: &[&str],
    env: &str,
    app: &str,
    request: &[u8],
) -> (super::Server, std::net::TcpStream) {
    use std::io::{Read, Write};
    let apps = super::python::apps();
    let mut args = vec!["-k", class, "-w", "1", "--threads", "2"];
    args.extend_from_slice(&["--pythonpath", &apps, "-e", env]);
    args.extend_from_slice(extra);
    args.push(app);
    let s = super::Server::start(&args);
    let mut slow = super::connect(s.addr);
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(request).unwrap();
    held.waiting
        .recv_timeout(Duration::from_secs(20))
        .expect("the server read the file");
    // The read waits for the "disk": another client of the same worker is answered meanwhile.
    let mut other = super::connect(s.addr);
    other
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    other.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let read = other.read_to_end(&mut answer);
    held.release();
    assert!(
        read.is_ok() && answer.starts_with(b"HTTP/1.1 200 "),
        "{class}: no answer while the file's read waited ({read:?} after {:?}): the event loop \
         waited for the disk",
        String::from_utf8_lossy(&answer)
    );
    (s, slow)
}

/// Drops `path`'s pages from the page cache (synced first, then `POSIX_FADV_DONTNEED`); `false`
/// (with a "skipped" line) when some stay, as on tmpfs, whose pages are the file.
pub fn evict(path: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: advice on a descriptor we hold open.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    // mincore over a mapping of the file, which is never touched: what is still cached. (It
    // answers truly for a file the caller owns, as the test does.)
    // SAFETY: a fresh read-only shared mapping of a file we hold open, unmapped below; its
    // pages are never accessed, so a file truncated meanwhile cannot fault.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: the mapping above, and one byte per page of it in `vec`.
    let r = unsafe { libc::mincore(map, len, vec.as_mut_ptr()) };
    // SAFETY: the mapping made above, of that length.
    unsafe { libc::munmap(map, len) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let cached = vec.iter().filter(|b| *b & 1 == 1).count();
    if cached > 0 {
        eprintln!("skipped: {cached} pages of the file stay in the page cache (tmpfs?)");
    }
    cached == 0
}
