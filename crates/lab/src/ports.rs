//! Free loopback ports for servers that are told their port rather than asked for it (a peer,
//! nginx): the lab's cells, and the tests that aim nginx at a server.
//!
//! A port the kernel hands out for `bind(127.0.0.1:0)` and that is then released is not
//! reserved: until the server binds it, any other process's `bind(:0)` or outgoing connection
//! may take it, and the lab would then measure (or a test talk to) the wrong server. So these
//! ports come from below the kernel's ephemeral range, where neither ever lands, and each is
//! claimed by an abstract Unix socket named after it, held until this process ends, so two
//! processes using this module never pick the same one. An abstract name leaves no file behind.

use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::sync::Mutex;

/// The claims this process holds; released when it exits.
static CLAIMS: Mutex<Vec<UnixListener>> = Mutex::new(Vec::new());

/// How many ports below the ephemeral range the picks come from.
const SPAN: u16 = 10_000;

/// A port on 127.0.0.1 that nothing listened on when picked, that no `bind(:0)` hands out and
/// that no other process using this module picks.
pub fn free_port() -> anyhow::Result<u16> {
    let (lo, hi) = pick_range();
    let span = u32::from(hi - lo);
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        let Some(claim) = claim(port) else { continue };
        // A port some program already listens on (a database, a peer) is not free.
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        CLAIMS.lock().unwrap_or_else(|e| e.into_inner()).push(claim);
        return Ok(port);
    }
    anyhow::bail!("no free loopback port in {lo}..{hi}")
}

/// The `SPAN` ports just below the kernel's ephemeral range (its low end from
/// `/proc/sys/net/ipv4/ip_local_port_range`, 32768 when unreadable), never below 1024.
pub fn pick_range() -> (u16, u16) {
    let ephemeral_lo = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let hi = ephemeral_lo.max(1024 + SPAN);
    (hi - SPAN, hi)
}

/// The claim on `port`, or `None` when another process holds it.
fn claim(port: u16) -> Option<UnixListener> {
    let name = format!("c10k-port-{port}");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    UnixListener::bind_addr(&addr).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Picked ports lie below the ephemeral range, so no `bind(:0)` elsewhere (a c10k admin
    /// listener, a peer) takes one between the pick and the server's bind, and none is picked
    /// twice.
    #[test]
    fn picked_ports_are_never_handed_out_for_port_0_nor_picked_twice() {
        let picked: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: std::collections::HashSet<u16> = picked.iter().copied().collect();
        assert_eq!(distinct.len(), picked.len(), "picked twice: {picked:?}");
        let (lo, hi) = pick_range();
        for p in &picked {
            assert!((lo..hi).contains(p), "{p} is not in {lo}..{hi}");
        }
        let held: Vec<TcpListener> = (0..500)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        for l in &held {
            let port = l.local_addr().unwrap().port();
            assert!(!distinct.contains(&port), "port 0 got picked port {port}");
        }
    }
}
