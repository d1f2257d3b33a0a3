//! Free addresses for servers a test cannot start on port 0 and ask for their address: nginx,
//! an address a reload adds, a port nobody listens on. They come from the lab's picker, which
//! takes them below the kernel's ephemeral range and claims each, so no other test's
//! `bind(:0)` or pick takes one before the server binds it.

use std::net::SocketAddr;

/// An address on 127.0.0.1 that no other test will take.
pub fn free_addr() -> SocketAddr {
    let port = c10k_lab::ports::free_port().expect("a free loopback port");
    SocketAddr::from(([127, 0, 0, 1], port))
}
