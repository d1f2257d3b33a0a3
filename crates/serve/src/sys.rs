//! Small OS-level helpers: resource limits, descriptors, the scheduling policy.

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
