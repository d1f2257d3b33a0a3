//! Operating-system limits that bound how many connections one process can open: the open-file
//! limit (raised to the hard limit at start) and the ephemeral port range. When a run asks for
//! more than they allow, the error names the limit that binds and what to do about it.

use crate::plan::Plan;
use crate::usage::UsageError;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns (soft, hard) after the change.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    rlimit::increase_nofile_limit(u64::MAX)?;
    rlimit::getrlimit(rlimit::Resource::NOFILE)
}

/// The ephemeral port range (`net.ipv4.ip_local_port_range`), if readable.
pub fn port_range() -> Option<(u32, u32)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse().ok());
    Some((it.next()??, it.next()??))
}

/// File descriptors one process needs beyond its connections (stdio, epoll, files).
pub const FD_RESERVE: u64 = 32;

/// Raises the fd limit and refuses plans that cannot fit under the limits.
pub fn check_limits(plan: &Plan) -> Result<(), UsageError> {
    let need = plan.concurrency as u64 + FD_RESERVE;
    if let Ok((soft, hard)) = raise_nofile_limit() {
        if need > soft {
            return Err(UsageError::new(format!(
                "-c {}: needs {need} open files but the limit that binds is RLIMIT_NOFILE = {soft} \
                 (hard limit {hard}); raise it (ulimit -n, LimitNOFILE=) or spread the connections \
                 over processes with --processes {}",
                plan.concurrency,
                need.div_ceil(soft.saturating_sub(FD_RESERVE).max(1)),
            )));
        }
    }
    if plan.unix.is_none()
        && plan.source_ips.len() + usize::from(plan.local_host.is_some()) <= 1
        && plan.reuses_connections()
    {
        if let Some((lo, hi)) = port_range() {
            let ports = u64::from(hi.saturating_sub(lo) + 1);
            if plan.concurrency as u64 > ports {
                return Err(UsageError::new(format!(
                    "-c {}: one local address has {ports} ephemeral ports \
                     (net.ipv4.ip_local_port_range = {lo} {hi}), the limit that binds; \
                     spread connections with --source-ips 127.0.0.1-127.0.0.N",
                    plan.concurrency
                )));
            }
        }
    }
    Ok(())
}
