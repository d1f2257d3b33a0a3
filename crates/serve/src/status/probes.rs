//! Linux probes behind the status figures: a listener's accept queue (`TCP_INFO`), the kernel's
//! listen-overflow count (`/proc/net/netstat`) and a process's resident memory
//! (`/proc/PID/statm`).
//!
//! Each probe answers `None` when the kernel does not tell (another OS, a unix socket, a process
//! that has gone), so the report shows `null` rather than a made-up zero.

use std::os::fd::RawFd;

/// `TCP_LISTEN` of the kernel's tcp_states.h (libc does not export it).
const TCP_LISTEN: u8 = 10;

/// Accept-queue figures of a TCP listener: (waiting, limit), from `TCP_INFO`.
pub(crate) fn listen_queue(fd: RawFd) -> Option<(u32, u32)> {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: fd is a socket we own; the pointer and length describe `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0 && info.tcpi_state == TCP_LISTEN).then_some((info.tcpi_unacked, info.tcpi_sacked))
}

/// The kernel's count of connections dropped on a full listen queue (`TcpExt: ListenOverflows`).
pub(crate) fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    parse_netstat(&text, "TcpExt:", "ListenOverflows")
}

fn parse_netstat(text: &str, prefix: &str, field: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Resident set size of `pid`, from `/proc/PID/statm`.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BindAddr;
    use crate::listener::Listener;
    use std::os::fd::AsRawFd;

    #[test]
    fn netstat_field() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                    TcpExt: 0 17 20\nIpExt: InNoRoutes\nIpExt: 3\n";
        assert_eq!(parse_netstat(text, "TcpExt:", "ListenOverflows"), Some(17));
        assert_eq!(parse_netstat(text, "TcpExt:", "Nope"), None);
        assert!(
            listen_overflows().is_some(),
            "/proc/net/netstat is readable on Linux"
        );
    }

    #[test]
    fn queue_of_a_real_listener() {
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 7, false).unwrap();
        let (queue, max) = listen_queue(l.as_raw_fd()).unwrap();
        assert_eq!((queue, max), (0, 7));
        let addr = match l.local_addr().unwrap() {
            BindAddr::Tcp(a) => a,
            BindAddr::Unix(_) => unreachable!(),
        };
        let _c = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(listen_queue(l.as_raw_fd()).unwrap().0, 1);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
