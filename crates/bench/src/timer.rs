//! A `timerfd` that wakes the event loop at a nanosecond deadline. `epoll_wait` counts its
//! timeout in whole milliseconds, which would add up to a millisecond of send delay to every
//! request in `--rate` mode (and to the latency measured from its intended time); the timerfd
//! makes the schedule precise to the scheduler's wakeup latency instead.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mio::{Interest, Registry, Token};

#[derive(Debug)]
pub struct PreciseTimer {
    fd: OwnedFd,
    /// The deadline currently set, in the engine's clock; `u64::MAX` when disarmed.
    armed: u64,
}

impl PreciseTimer {
    pub fn new(registry: &Registry, token: Token) -> io::Result<PreciseTimer> {
        // SAFETY: timerfd_create takes no pointers; we own the returned descriptor.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        registry.register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            token,
            Interest::READABLE,
        )?;
        Ok(PreciseTimer {
            fd,
            armed: u64::MAX,
        })
    }

    /// Makes the timer fire at `deadline` (engine clock, ns), `now` being the current time.
    pub fn arm(&mut self, deadline: u64, now: u64) -> io::Result<()> {
        if deadline == self.armed {
            return Ok(());
        }
        // A zero it_value would disarm the timer: fire in 1 ns instead.
        let d = deadline.saturating_sub(now).max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (d / 1_000_000_000) as libc::time_t,
                tv_nsec: (d % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: both pointers point at values we own for the duration of the call.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        self.armed = deadline;
        Ok(())
    }

    /// The timer fired: consume the expiry so the next one signals again.
    pub fn fired(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a buffer we own.
        let _ = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        self.armed = u64::MAX;
    }
}
