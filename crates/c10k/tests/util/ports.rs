//! Free ports for servers a test cannot start on port 0 and ask for their address: nginx, a
//! peer, an address a reload adds, a port nobody listens on.
//!
//! A port the kernel hands out for `bind(127.0.0.1:0)` and then freed is not reserved: while the
//! test starts its server, any other test's `bind(:0)` or outgoing connection may take it (CI
//! saw nginx refused its port because another test's c10k admin listener had just got it). So
//! these ports come from below the kernel's ephemeral range, where neither ever lands, and each
//! is claimed by an abstract Unix socket named after it, held until the test process ends, so
//! two test processes never pick the same one. The abstract name leaves no file behind.

use std::net::{SocketAddr, TcpListener};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixListener;
use std::sync::Mutex;

/// The claims this process holds; dropped (and so released) only when it exits.
static CLAIMS: Mutex<Vec<UnixListener>> = Mutex::new(Vec::new());

/// How many ports below the ephemeral range the picks come from.
const SPAN: u16 = 10_000;

/// An address on 127.0.0.1 whose port no other test and no `bind(:0)` will take, and which
/// nothing listened on when it was picked.
pub fn free_addr() -> SocketAddr {
    let (lo, hi) = pick_range();
    let span = u32::from(hi - lo);
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        let Some(claim) = claim(port) else { continue };
        // A port some program already listens on (a database, a peer): not free.
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        CLAIMS.lock().unwrap().push(claim);
        return SocketAddr::from(([127, 0, 0, 1], port));
    }
    panic!("no free port in {lo}..{hi}");
}

/// The `SPAN` ports just below the kernel's ephemeral range (from
/// `/proc/sys/net/ipv4/ip_local_port_range`; 32768 when unreadable), never below 1024.
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
    let name = format!("c10k-test-port-{port}");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    UnixListener::bind_addr(&addr).ok()
}
