//! Test servers: the real c10k server in-process, and a tiny raw TCP server whose answers a
//! test scripts byte by byte (chunked, close-delimited, truncated, reset, silent).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The c10k server (async class) on 127.0.0.1:0, stopped on drop.
pub struct Serve {
    pub addr: SocketAddr,
    stop: c10k_serve::Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    pub fn start() -> Serve {
        let cfg = c10k_serve::ServeConfig {
            bind: vec!["127.0.0.1:0".parse().unwrap()],
            worker_class: c10k_serve::WorkerClass::Async,
            ..Default::default()
        };
        let server = c10k_serve::Server::bind(cfg).expect("bind");
        let addr = match server.local_addrs()[0].clone() {
            c10k_serve::BindAddr::Tcp(a) => a,
            other => panic!("unexpected {other}"),
        };
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || {
            let _ = server.serve(Arc::new(c10k_app::App::new(Default::default())));
        });
        Serve {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stop.trigger(c10k_serve::Phase::Immediate);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the raw server does after writing its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Keep,
    Close,
    /// Close with SO_LINGER 0: the client sees a reset.
    Reset,
}

type Handler = dyn Fn(u64, &[u8]) -> (Vec<u8>, Next) + Send + Sync;

/// A raw HTTP server: reads requests (head + Content-Length body), numbers them from 0 in
/// arrival order, and writes whatever the handler returns.
pub struct RawServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
    pub first_request: Arc<Mutex<Option<Vec<u8>>>>,
    /// The distinct client addresses seen.
    pub peers: Arc<Mutex<std::collections::BTreeSet<std::net::IpAddr>>>,
    stop: Arc<AtomicBool>,
}

impl RawServer {
    pub fn start(
        handler: impl Fn(u64, &[u8]) -> (Vec<u8>, Next) + Send + Sync + 'static,
    ) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let first_request = Arc::new(Mutex::new(None));
        let peers = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        {
            let (stop, requests, connections, first, peers) = (
                stop.clone(),
                requests.clone(),
                connections.clone(),
                first_request.clone(),
                peers.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, peer)) => {
                            connections.fetch_add(1, Ordering::Relaxed);
                            peers.lock().unwrap().insert(peer.ip());
                            let (stop, requests, first, handler) = (
                                stop.clone(),
                                requests.clone(),
                                first.clone(),
                                handler.clone(),
                            );
                            std::thread::spawn(move || {
                                serve_conn(s, &stop, &requests, &first, &*handler)
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        RawServer {
            addr,
            requests,
            connections,
            first_request,
            peers,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn serve_conn(
    mut s: TcpStream,
    stop: &AtomicBool,
    requests: &AtomicU64,
    first: &Mutex<Option<Vec<u8>>>,
    handler: &Handler,
) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        // Answer every complete request in the buffer (pipelining).
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let total = end + 4 + content_length(&buf[..end]);
            if buf.len() < total {
                break;
            }
            let req: Vec<u8> = buf.drain(..total).collect();
            let idx = requests.fetch_add(1, Ordering::Relaxed);
            if idx == 0 {
                *first.lock().unwrap() = Some(req.clone());
            }
            let (resp, next) = handler(idx, &req);
            if s.write_all(&resp).is_err() {
                return;
            }
            match next {
                Next::Keep => {}
                Next::Close => {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Next::Reset => {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    return;
                }
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// A plan with test-friendly defaults: one thread, short timeout.
pub fn plan(url: &str, n: u64, c: usize) -> c10k_bench::Plan {
    let mut p = c10k_bench::Plan::new(url);
    p.requests = Some(n);
    p.concurrency = c;
    p.threads = 1;
    p.timeout = Duration::from_secs(10);
    p
}

pub fn measure(p: &c10k_bench::Plan) -> c10k_bench::Measurement {
    c10k_bench::measure(p, &Default::default())
        .expect("run")
        .measurement
}

pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";
