//! Steady client load for the tests that restart workers under it (HUP, `--max-requests`):
//! client threads sending GETs until told to stop, counting answers and failures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{connect, get, Reader};

/// Keeps `clients` threads sending `GET target` until `stop`, each counting (200s, failures).
/// With `keepalive`, each thread reuses its connection until the server says `close`.
pub fn steady_load(
    addr: SocketAddr,
    target: &str,
    clients: usize,
    keepalive: bool,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<(u32, u32)>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            let target = target.to_owned();
            let raw = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, 0u32);
                let mut conn: Option<Reader> = None;
                while !stop.load(Ordering::Relaxed) {
                    if !keepalive {
                        match get(addr, &target) {
                            Ok(r) if r.status == 200 => ok += 1,
                            _ => failed += 1,
                        }
                        continue;
                    }
                    let c = conn.get_or_insert_with(|| Reader::new(connect(addr)));
                    let sent = c.send(raw.as_bytes());
                    match sent.and_then(|_| c.response()) {
                        Ok(r) if r.status == 200 => {
                            ok += 1;
                            if r.header("connection") == Some("close") {
                                conn = None;
                            }
                        }
                        _ => {
                            failed += 1;
                            conn = None;
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

/// Joins the load threads: (200s, failures) in total.
pub fn finish_load(handles: Vec<JoinHandle<(u32, u32)>>) -> (u32, u32) {
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}
