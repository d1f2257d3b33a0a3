//! The gthread reactor's readiness poller: level-triggered read interest by key, a bounded wait,
//! and a wake-up other threads can send.
//!
//! On Linux it is epoll used directly, because the reactor waits once or twice per request (a
//! uwsgi connection is one request) and the `polling` crate's wait costs five syscalls on Linux
//! (arm a timerfd, re-arm it and the notifier in epoll, wait, clear the notifier) where epoll
//! needs one: `epoll_wait` with its own millisecond timeout, and a read of the eventfd only when a
//! wake-up came. Interest is level-triggered, so the listener stays armed between rounds instead
//! of being re-armed with an `epoll_ctl` per round (the reactor switches it off itself when it
//! has no room). The listener, which every worker's reactor watches, is watched exclusively (see
//! [`Poller::add_exclusive`]). Elsewhere the `polling` crate (kqueue, ...) does the same job in level mode.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

pub(crate) use imp::Poller;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    /// The key of the wake-up eventfd (never a caller's key: theirs are small indices).
    const NOTIFY: u64 = u64::MAX;

    #[derive(Debug)]
    pub(crate) struct Poller {
        epoll: OwnedFd,
        wake: OwnedFd,
        /// A wake-up is pending: further `notify` calls need not write.
        notified: AtomicBool,
    }

    fn check(r: libc::c_int) -> io::Result<libc::c_int> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    impl Poller {
        pub fn new() -> io::Result<Poller> {
            // SAFETY: plain syscalls; the descriptors they return are owned from here on.
            let epoll =
                unsafe { OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
            let wake = unsafe {
                OwnedFd::from_raw_fd(check(libc::eventfd(
                    0,
                    libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
                ))?)
            };
            let poller = Poller {
                epoll,
                wake,
                notified: AtomicBool::new(false),
            };
            poller.ctl(libc::EPOLL_CTL_ADD, poller.wake.as_raw_fd(), NOTIFY, true)?;
            Ok(poller)
        }

        fn ctl(&self, op: libc::c_int, fd: i32, key: u64, readable: bool) -> io::Result<()> {
            let events = if readable { libc::EPOLLIN as u32 } else { 0 };
            self.ctl_events(op, fd, key, events)
        }

        fn ctl_events(&self, op: libc::c_int, fd: i32, key: u64, events: u32) -> io::Result<()> {
            let mut ev = libc::epoll_event { events, u64: key };
            // SAFETY: `ev` is a valid epoll_event for the duration of the call.
            check(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) }).map(drop)
        }

        /// Watches `fd` for reading under `key` (level-triggered).
        ///
        /// # Safety
        /// `fd` must be deleted from the poller before it is closed.
        pub unsafe fn add(&self, fd: &impl AsRawFd, key: usize) -> io::Result<()> {
            self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), key as u64, true)
        }

        /// Watches a listening socket that other workers' pollers watch too, under `key`: a new
        /// connection wakes one of the pollers waiting on it (`EPOLLEXCLUSIVE`), not every one
        /// (each of the others would wake, fail its `accept` and wait again). An exclusive watch
        /// cannot be modified: switch it off with [`Poller::delete`].
        ///
        /// # Safety
        /// `fd` must be deleted from the poller before it is closed.
        pub unsafe fn add_exclusive(&self, fd: &impl AsRawFd, key: usize) -> io::Result<()> {
            let events = (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32;
            self.ctl_events(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), key as u64, events)
        }

        /// Switches read interest in a watched `fd` on or off (the reactor deletes and adds its
        /// exclusive listener watch instead).
        #[cfg(test)]
        pub fn modify(&self, fd: &impl AsRawFd, key: usize, readable: bool) -> io::Result<()> {
            self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), key as u64, readable)
        }

        pub fn delete(&self, fd: &impl AsRawFd) -> io::Result<()> {
            self.ctl(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), 0, false)
        }

        /// Waits up to `timeout` (rounded up to a millisecond) and puts the keys of readable
        /// descriptors in `keys`; a wake-up from [`Poller::notify`] ends the wait with no key.
        pub fn wait(&self, keys: &mut Vec<usize>, timeout: Duration) -> io::Result<()> {
            keys.clear();
            let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
            // SAFETY: `events` has room for the 64 events epoll may write.
            let n =
                unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, ms) };
            let n = match check(n) {
                Ok(n) => n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(e),
            };
            for ev in &events[..n] {
                let key = ev.u64;
                if key == NOTIFY {
                    // Clear first, then allow the next notify to write: a notify in between
                    // finds the flag still set and writes nothing, but its change is seen by
                    // the reactor's round that follows this wait.
                    let mut buf = [0u8; 8];
                    // SAFETY: reads at most 8 bytes into `buf`.
                    let _ = unsafe {
                        libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                    };
                    self.notified.store(false, SeqCst);
                } else {
                    keys.push(key as usize);
                }
            }
            Ok(())
        }

        /// Ends the reactor's current or next wait (from any thread).
        pub fn notify(&self) -> io::Result<()> {
            if self.notified.swap(true, SeqCst) {
                return Ok(());
            }
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes the 8 bytes of `one`.
            let n = unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                // The counter is full: a wake-up is pending anyway.
                if e.kind() != io::ErrorKind::WouldBlock {
                    return Err(e);
                }
            }
            Ok(())
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use super::*;
    use polling::{Event, Events, PollMode};
    use std::sync::Mutex;

    #[derive(Debug)]
    pub(crate) struct Poller {
        poller: polling::Poller,
        events: Mutex<Events>,
    }

    /// A raw descriptor as a `polling` source.
    struct Fd(std::os::fd::RawFd);

    impl std::os::fd::AsFd for Fd {
        fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
            // SAFETY: the caller's descriptor outlives this borrow.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) }
        }
    }

    impl Poller {
        pub fn new() -> io::Result<Poller> {
            Ok(Poller {
                poller: polling::Poller::new()?,
                events: Mutex::new(Events::new()),
            })
        }

        /// # Safety
        /// `fd` must be deleted from the poller before it is closed.
        pub unsafe fn add(&self, fd: &impl AsRawFd, key: usize) -> io::Result<()> {
            self.poller
                .add_with_mode(fd.as_raw_fd(), Event::readable(key), PollMode::Level)
        }

        /// # Safety
        /// `fd` must be deleted from the poller before it is closed.
        pub unsafe fn add_exclusive(&self, fd: &impl AsRawFd, key: usize) -> io::Result<()> {
            // SAFETY: the caller's contract.
            unsafe { self.add(fd, key) }
        }

        #[cfg(test)]
        pub fn modify(&self, fd: &impl AsRawFd, key: usize, readable: bool) -> io::Result<()> {
            let ev = if readable {
                Event::readable(key)
            } else {
                Event::none(key)
            };
            self.poller
                .modify_with_mode(Fd(fd.as_raw_fd()), ev, PollMode::Level)
        }

        pub fn delete(&self, fd: &impl AsRawFd) -> io::Result<()> {
            self.poller.delete(Fd(fd.as_raw_fd()))
        }

        pub fn wait(&self, keys: &mut Vec<usize>, timeout: Duration) -> io::Result<()> {
            keys.clear();
            let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            events.clear();
            match self.poller.wait(&mut events, Some(timeout)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            keys.extend(events.iter().map(|ev| ev.key));
            Ok(())
        }

        pub fn notify(&self) -> io::Result<()> {
            self.poller.notify()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn readiness_is_level_triggered_and_can_be_switched_off() {
        let p = Poller::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        unsafe { p.add(&b, 7) }.unwrap();
        let mut keys = Vec::new();
        p.wait(&mut keys, Duration::ZERO).unwrap();
        assert!(keys.is_empty());
        a.write_all(b"x").unwrap();
        for _ in 0..2 {
            // Unread bytes keep it ready: no re-arming between waits.
            p.wait(&mut keys, Duration::from_secs(5)).unwrap();
            assert_eq!(keys, [7]);
        }
        p.modify(&b, 7, false).unwrap();
        p.wait(&mut keys, Duration::ZERO).unwrap();
        assert!(keys.is_empty(), "interest off");
        p.modify(&b, 7, true).unwrap();
        p.wait(&mut keys, Duration::ZERO).unwrap();
        assert_eq!(keys, [7]);
        p.delete(&b).unwrap();
        p.wait(&mut keys, Duration::ZERO).unwrap();
        assert!(keys.is_empty());
    }

    /// Two workers' pollers watch one listener: a connection wakes one of them, not both.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_connection_wakes_one_of_the_pollers_watching_a_shared_listener() {
        use std::sync::Arc;
        let woken_once = (0..5).any(|_| {
            let l = Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
            l.set_nonblocking(true).unwrap();
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let l = l.clone();
                    std::thread::spawn(move || {
                        let p = Poller::new().unwrap();
                        // SAFETY: deleted below, before the listener is dropped.
                        unsafe { p.add_exclusive(&*l, 3) }.unwrap();
                        let mut keys = Vec::new();
                        p.wait(&mut keys, Duration::from_secs(1)).unwrap();
                        p.delete(&*l).unwrap();
                        keys == [3]
                    })
                })
                .collect();
            // Both are waiting by then, unless the machine is very busy (then try again).
            std::thread::sleep(Duration::from_millis(200));
            let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let woken = waiters
                .into_iter()
                .map(|w| w.join().unwrap())
                .filter(|&w| w)
                .count();
            woken == 1
        });
        assert!(woken_once, "every connection woke both pollers");
    }

    #[test]
    fn notify_ends_a_wait_from_another_thread_and_is_cleared() {
        let p = std::sync::Arc::new(Poller::new().unwrap());
        let waker = {
            let p = p.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                p.notify().unwrap();
                p.notify().unwrap();
            })
        };
        let started = std::time::Instant::now();
        let mut keys = Vec::new();
        p.wait(&mut keys, Duration::from_secs(10)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "woken");
        assert!(keys.is_empty());
        waker.join().unwrap();
        // Both notifies are consumed; a later wait sleeps its whole timeout...
        let slept = (0..3).any(|_| {
            let started = std::time::Instant::now();
            p.wait(&mut keys, Duration::from_millis(30)).unwrap();
            started.elapsed() >= Duration::from_millis(25)
        });
        assert!(slept, "the wake-up was cleared");
        // ...and a new notify still wakes.
        p.notify().unwrap();
        let started = std::time::Instant::now();
        p.wait(&mut keys, Duration::from_secs(10)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
