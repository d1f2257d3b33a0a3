//! The name `ps -o comm`, `top`, `pgrep` and `killall` show for each of the server's processes
//! (`/proc/PID/comm`).
//!
//! The kernel names a process after the file it executes, and the master starts its workers and
//! its zygote through `/proc/self/exe` (see `master`), so they would all be called `exe`: `pgrep
//! c10k` and `killall c10k` would miss them, and `top` would not tell them from any other program
//! started that way. The master hands its own name to each process it starts ([`ENV_NAME`]), which
//! takes it back first thing ([`take_back`]); the zygote then renames itself `c10k-zygote`, and a
//! worker forked from it takes the master's name again.

/// The master's process name, for the processes it starts.
pub(crate) const ENV_NAME: &str = "C10K_PROCESS_NAME";

/// This process's name as `ps` shows it, without the newline.
pub(crate) fn current() -> Vec<u8> {
    let mut name = std::fs::read("/proc/self/comm").unwrap_or_default();
    if name.last() == Some(&b'\n') {
        name.pop();
    }
    name
}

/// In a process the master started: takes the master's name (and removes [`ENV_NAME`], which
/// is not for the application's environment). Does nothing without it.
pub(crate) fn take_back() {
    if let Some(name) = std::env::var_os(ENV_NAME) {
        std::env::remove_var(ENV_NAME);
        set(std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()));
    }
}

/// Names this thread (the process, when called on its main thread): 15 bytes at most, the rest
/// is cut; ignored if it cannot be set.
pub(crate) fn set(name: &[u8]) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from a live buffer.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}
