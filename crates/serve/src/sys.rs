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

/// Drops this process's page-table entries for the read-only pages of its own executable that
/// hold no private data (its code and constants), once the worker has booted. Everything a worker
/// runs on the way to serving — argument and config parsing, logging set-up, the interpreter's
/// start — touches code it never runs again, and the kernel maps each touched page with up to 15
/// neighbours (fault-around), so a worker's RSS used to count ~6 MB of the binary it does not use.
/// The pages stay in the page cache (shared with the master and the other workers); what the
/// worker runs afterwards faults back in. Mappings with any private (copy-on-write) page, such as
/// the relocated RELRO segment, are left alone: `MADV_DONTNEED` would revert those to the file.
/// Returns the kibibytes of RSS the executable's mappings had before.
pub fn release_startup_pages() -> std::io::Result<u64> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_string_lossy();
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    let mut current: Option<(usize, usize)> = None; // start, end
    let mut rss = 0u64;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            let perms = fields.next().unwrap_or_default();
            let path = line.split_whitespace().nth(5).unwrap_or_default();
            current = None;
            if path == exe && !perms.contains('w') {
                let (start, end) = first.split_once('-').unwrap_or_default();
                if let (Ok(s), Ok(e)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    current = Some((s, e));
                }
            }
            continue;
        }
        let Some((start, end)) = current else {
            continue;
        };
        match first {
            "Rss:" => rss = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            // The last field of an entry that release needs: a private page vetoes it.
            "Anonymous:" => {
                let anon: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(1);
                current = None;
                if anon != 0 {
                    continue;
                }
                // SAFETY: a read-only, file-backed mapping of our executable with no private
                // pages: dropping its page-table entries loses nothing; later accesses fault
                // the same file pages back in.
                if unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
                } == 0
                {
                    released += rss;
                }
            }
            _ => {}
        }
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    #[test]
    fn releasing_the_start_up_pages_keeps_the_process_running() {
        let kib = super::release_startup_pages().unwrap();
        assert!(kib > 0, "the test binary's own code was resident");
        // Code and constants fault back in: formatting and allocation still work.
        assert_eq!(format!("{:?}", vec![1, 2]), "[1, 2]");
        assert!(super::release_startup_pages().unwrap() > 0);
    }
}
