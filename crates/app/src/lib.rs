//! The built-in c10k application: the routes `c10k serve` answers by default.
//!
//! The key design decision is that the application is written **once**, as `async` code, and every
//! wait it makes (a `?delay=` sleep, later a database or journal wait) goes through a [`Ctx`]. The
//! context decides what a wait means:
//!
//! - [`Wait::Block`]: the wait blocks the calling OS thread. The `sync`, `thread` and `gthread`
//!   worker classes drive [`App::handle`] with a tiny executor (`block_on`) on their own thread, so a
//!   sleeping request occupies that thread exactly as a Flask view does under gunicorn's `sync`.
//! - [`Wait::Yield`]: the wait yields to the event loop (a tokio timer), so other requests run
//!   meanwhile — what gevent's monkey patching gives a Python app.
//!
//! Nothing else in the application knows which worker class runs it, and no socket is needed: the
//! tests call [`App::handle`] directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use c10k_http::{Ctx, DeadlineExceeded, Handler, Method, Request, Response};
use c10k_store::{Store, StoreConfig, StoreStats};

mod messages;
mod query;

pub use query::Query;

/// Limits and settings of the built-in application.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// Longest `?delay=` accepted; above it the request gets 400.
    pub max_delay: Duration,
    /// Longest `/cpu?ms=` accepted.
    pub max_cpu: Duration,
    /// The write path's settings; `None`: `/messages` and `/ids` answer 503.
    pub store: Option<StoreConfig>,
    /// Open the store when the application boots (the operator named `--data-dir` or
    /// `--database`, so a problem with them should stop the start), instead of on the first
    /// request that needs it.
    pub open_store_at_boot: bool,
}

impl Default for AppConfig {
    fn default() -> AppConfig {
        AppConfig {
            max_delay: Duration::from_secs(60),
            max_cpu: Duration::from_secs(10),
            store: None,
            open_store_at_boot: false,
        }
    }
}

/// The built-in application. Cheap to share: workers hold it in an `Arc`.
///
/// It owns its write path: the journal, the id lease and the database pool are opened on the
/// first `/messages` or `/ids` request (or at boot, see [`AppConfig::open_store_at_boot`]), so a
/// server that only answers `/` creates no file and opens no database connection.
#[derive(Debug)]
pub struct App {
    config: AppConfig,
    /// The worker's stable index: its journal is `<data-dir>/journal-<slot>`.
    slot: usize,
    /// The write path behind `/messages` and `/ids`, once opened.
    store: tokio::sync::OnceCell<Arc<Store>>,
}

impl App {
    /// An application for worker slot 0 whose store (if configured) opens when first needed.
    pub fn new(config: AppConfig) -> App {
        App {
            config,
            slot: 0,
            store: tokio::sync::OnceCell::new(),
        }
    }

    /// The application of worker `slot`; opens the store now when the config asks for it.
    pub fn boot(config: AppConfig, slot: usize) -> Result<App, c10k_store::StoreError> {
        let app = App {
            slot,
            ..App::new(config)
        };
        if app.config.open_store_at_boot {
            if let Some(cfg) = &app.config.store {
                let store = Store::open(cfg, slot)?;
                let _ = app.store.set(Arc::new(store));
            }
        }
        Ok(app)
    }

    /// An application whose `/messages` and `/ids` routes use `store`.
    pub fn with_store(config: AppConfig, store: Arc<Store>) -> App {
        App {
            config,
            slot: 0,
            store: tokio::sync::OnceCell::new_with(Some(store)),
        }
    }

    /// The store, if it has been opened.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.get()
    }

    /// The write path's figures, once it is open (for the server's status report).
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.store.get().map(|s| s.stats())
    }

    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    /// Answers one request. Never panics on client input; every refusal carries a reason.
    pub async fn handle(&self, req: &Request, ctx: Ctx) -> Response {
        let result = match req.path.as_str() {
            "/" => match req.method {
                Method::Get | Method::Head => self.hello(req, ctx).await,
                _ => Ok(method_not_allowed("GET, HEAD")),
            },
            "/cpu" => match req.method {
                Method::Get | Method::Head => self.cpu(req, ctx),
                _ => Ok(method_not_allowed("GET, HEAD")),
            },
            "/stream" => match req.method {
                Method::Get | Method::Head => Ok(stream(req)),
                _ => Ok(method_not_allowed("GET, HEAD")),
            },
            "/whoami" => match req.method {
                Method::Get | Method::Head | Method::Post => Ok(whoami(req)),
                _ => Ok(method_not_allowed("GET, HEAD, POST")),
            },
            "/echo" => match req.method {
                Method::Post | Method::Put => Ok(echo(req)),
                _ => Ok(method_not_allowed("POST, PUT")),
            },
            "/messages" => match req.method {
                Method::Post => self.post_message(req, ctx).await,
                Method::Get | Method::Head => self.list_messages(req, ctx).await,
                _ => Ok(method_not_allowed("GET, HEAD, POST")),
            },
            "/ids" => match req.method {
                Method::Get | Method::Head => Ok(self.ids(req).await),
                _ => Ok(method_not_allowed("GET, HEAD")),
            },
            path => Ok(Response::error(404, format_args!("no route for {path}"))),
        };
        result.unwrap_or_else(|DeadlineExceeded| {
            Response::error(504, "request exceeded --request-timeout")
        })
    }

    async fn hello(&self, req: &Request, ctx: Ctx) -> Result<Response, DeadlineExceeded> {
        let delay = match query(req).get("delay") {
            None => Duration::ZERO,
            Some(raw) => match parse_seconds(&raw, self.config.max_delay) {
                Ok(d) => d,
                Err(why) => return Ok(Response::error(400, format_args!("delay: {why}"))),
            },
        };
        if !delay.is_zero() {
            ctx.sleep(delay).await?;
        }
        Ok(Response::text(200, "hello\n"))
    }

    fn cpu(&self, req: &Request, ctx: Ctx) -> Result<Response, DeadlineExceeded> {
        let max_ms = self.config.max_cpu.as_millis() as u64;
        let ms = match query(req).get("ms") {
            None => return Ok(Response::error(400, "ms: missing; use /cpu?ms=N")),
            Some(raw) => match raw.parse::<u64>() {
                Ok(ms) if ms <= max_ms => ms,
                Ok(_) => {
                    return Ok(Response::error(
                        400,
                        format_args!("ms: at most {max_ms} is allowed"),
                    ))
                }
                Err(_) => {
                    return Ok(Response::error(
                        400,
                        format_args!("ms: {raw:?} is not a whole number of milliseconds"),
                    ))
                }
            },
        };
        let spins = burn_cpu(Duration::from_millis(ms), &ctx)?;
        Ok(Response::text(
            200,
            format!("burned {ms} ms ({spins} rounds)\n"),
        ))
    }
}

impl Handler for App {
    async fn call(&self, req: Request, ctx: Ctx) -> Response {
        self.handle(&req, ctx).await
    }
}

/// The query string of `req`, parsed lazily.
pub(crate) fn query(req: &Request) -> Query<'_> {
    Query::new(req.query.as_deref().unwrap_or(""))
}

/// A JSON answer, one line.
pub(crate) fn json(status: u16, value: &serde_json::Value) -> Response {
    let mut body = value.to_string();
    body.push('\n');
    Response::with_body(status, "application/json", body)
}

fn echo(req: &Request) -> Response {
    let content_type = match req.content_type() {
        Some(ct) => Bytes::copy_from_slice(ct.as_bytes()),
        None => Bytes::from_static(b"application/octet-stream"),
    };
    match req.body.to_bytes() {
        Ok(body) => Response::new(200)
            .with_header("Content-Type", content_type)
            .with_full_body(body),
        Err(e) => {
            tracing::error!("echo: cannot read the spooled request body back: {e}");
            Response::error(500, "cannot read the request body")
        }
    }
}

/// Most lines `/stream?n=` sends.
const MAX_STREAM_LINES: u64 = 100_000;

/// `/stream?n=N`: N lines (`line 1\n` ...), each its own chunk of a streamed body whose length
/// the handler does not know in advance, so the server frames it (chunked, close-delimited).
fn stream(req: &Request) -> Response {
    let n = match query(req).get("n") {
        None => 10,
        Some(raw) => match raw.parse::<u64>() {
            Ok(n) if n <= MAX_STREAM_LINES => n,
            _ => {
                return Response::error(
                    400,
                    format_args!("n: {raw:?} is not a whole number of lines ≤ {MAX_STREAM_LINES}"),
                )
            }
        },
    };
    Response::new(200)
        .with_header("Content-Type", "text/plain; charset=utf-8")
        .with_stream(Box::pin(Lines { next: 1, last: n }))
}

/// The lines of `/stream`, made as they are pulled.
struct Lines {
    next: u64,
    last: u64,
}

impl futures_core::Stream for Lines {
    type Item = Result<Bytes, c10k_http::BoxError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.next > self.last {
            return std::task::Poll::Ready(None);
        }
        let line = format!("line {}\n", self.next);
        self.next += 1;
        std::task::Poll::Ready(Some(Ok(Bytes::from(line))))
    }
}

/// `/whoami`: the request as the server handed it to the application, as JSON — what a proxy
/// in front (nginx over HTTP or uwsgi) made of the client's request.
fn whoami(req: &Request) -> Response {
    let headers: Vec<_> = req
        .headers
        .iter()
        .map(|(n, v)| serde_json::json!([n, String::from_utf8_lossy(v)]))
        .collect();
    json(
        200,
        &serde_json::json!({
            "method": req.method.as_str(),
            "target": req.target,
            "path": req.path,
            "query": req.query,
            "version": req.version.as_str(),
            "scheme": req.scheme.as_str(),
            "transport": match req.transport {
                c10k_http::Transport::Tcp => "tcp",
                c10k_http::Transport::Unix => "unix",
            },
            "peer": req.peer.map(|a| a.to_string()),
            "local": req.local.map(|a| a.to_string()),
            "headers": headers,
            "body_bytes": req.body.len(),
        }),
    )
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::error(405, format_args!("method not allowed; use {allow}"))
        .with_header("Allow", allow)
}

/// Parses a non-negative number of seconds (`0.25`, `1`), at most `max`.
fn parse_seconds(raw: &str, max: Duration) -> Result<Duration, String> {
    let secs: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{raw:?} must be a finite number ≥ 0"));
    }
    if secs > max.as_secs_f64() {
        return Err(format!(
            "{secs} s is above the limit of {} s (--max-delay)",
            max.as_secs_f64()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Spins the CPU for `d` of wall time, checking the deadline between rounds. Returns the rounds
/// done so the optimiser cannot drop the work.
fn burn_cpu(d: Duration, ctx: &Ctx) -> Result<u64, DeadlineExceeded> {
    let start = Instant::now();
    let mut rounds = 0u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while start.elapsed() < d {
        for _ in 0..10_000 {
            // xorshift: cheap, data-dependent work.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        rounds += 1;
        ctx.check_deadline()?;
    }
    Ok(rounds + (std::hint::black_box(x) & 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use c10k_http::Wait;

    fn app() -> App {
        App::new(AppConfig::default())
    }

    fn get(target: &str) -> Response {
        pollster::block_on(app().handle(&Request::new(Method::Get, target), Ctx::new(Wait::Block)))
    }

    fn body(resp: &Response) -> &str {
        std::str::from_utf8(resp.body.as_bytes().unwrap()).unwrap()
    }

    #[test]
    fn hello() {
        let resp = get("/");
        assert_eq!(resp.status, 200);
        assert_eq!(body(&resp), "hello\n");
    }

    #[test]
    fn stream_sends_n_lines_as_chunks_and_whoami_echoes_the_request() {
        let resp = get("/stream?n=3");
        assert_eq!(resp.status, 200);
        let c10k_http::Body::Stream(mut s) = resp.body else {
            panic!("a streamed body");
        };
        let mut lines = Vec::new();
        while let Some(chunk) =
            pollster::block_on(std::future::poll_fn(|cx| s.as_mut().poll_next(cx)))
        {
            lines.push(String::from_utf8(chunk.unwrap().to_vec()).unwrap());
        }
        assert_eq!(lines, ["line 1\n", "line 2\n", "line 3\n"]);
        assert_eq!(get("/stream?n=x").status, 400);
        assert_eq!(get("/stream?n=100001").status, 400);

        let mut req = Request::new(Method::Get, "/whoami?a=1");
        req.headers.append("X-Test", "yes");
        req.peer = Some("192.0.2.1:5".parse().unwrap());
        let resp = pollster::block_on(app().handle(&req, Ctx::new(Wait::Block)));
        let v: serde_json::Value = serde_json::from_str(body(&resp)).unwrap();
        assert_eq!(v["peer"], "192.0.2.1:5");
        assert_eq!(v["query"], "a=1");
        assert_eq!(v["headers"][0], serde_json::json!(["X-Test", "yes"]));
    }

    #[test]
    fn delay_blocks_for_that_long() {
        let start = Instant::now();
        let resp = get("/?delay=0.05");
        assert_eq!(resp.status, 200);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn bad_delays_get_400_with_reason() {
        for (q, why) in [
            ("/?delay=abc", "not a number"),
            ("/?delay=-1", "≥ 0"),
            ("/?delay=NaN", "finite"),
            ("/?delay=inf", "finite"),
            ("/?delay=61", "--max-delay"),
        ] {
            let resp = get(q);
            assert_eq!(resp.status, 400, "{q}");
            assert!(body(&resp).contains(why), "{q}: {}", body(&resp));
        }
    }

    #[test]
    fn deadline_turns_a_long_sleep_into_504() {
        let ctx =
            Ctx::new(Wait::Block).with_deadline(Some(Instant::now() + Duration::from_millis(30)));
        let start = Instant::now();
        let resp = pollster::block_on(app().handle(&Request::new(Method::Get, "/?delay=5"), ctx));
        assert_eq!(resp.status, 504);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn yield_waits_let_others_run() {
        let app = app();
        let start = Instant::now();
        let req = Request::new(Method::Get, "/?delay=0.2");
        let ctx = Ctx::new(Wait::Yield);
        let (a, b) = tokio::join!(app.handle(&req, ctx), app.handle(&req, ctx));
        assert_eq!((a.status, b.status), (200, 200));
        // Two yielding 0.2 s sleeps on one thread overlap.
        assert!(start.elapsed() < Duration::from_millis(390));
    }

    #[test]
    fn cpu_route() {
        let resp = get("/cpu?ms=5");
        assert_eq!(resp.status, 200);
        assert!(body(&resp).starts_with("burned 5 ms"));
        assert_eq!(get("/cpu").status, 400);
        assert_eq!(get("/cpu?ms=x").status, 400);
        assert_eq!(get("/cpu?ms=999999").status, 400);
    }

    #[test]
    fn echo_returns_the_body() {
        let req = Request::new(Method::Post, "/echo").with_body("text/plain", "abc");
        let resp = pollster::block_on(app().handle(&req, Ctx::new(Wait::Block)));
        assert_eq!(resp.status, 200);
        assert_eq!(body(&resp), "abc");
    }

    #[test]
    fn unknown_route_and_method() {
        assert_eq!(get("/nope").status, 404);
        let resp = pollster::block_on(
            app().handle(&Request::new(Method::Delete, "/"), Ctx::new(Wait::Block)),
        );
        assert_eq!(resp.status, 405);
        assert!(resp
            .headers
            .iter()
            .any(|(n, v)| n == "Allow" && &v[..] == b"GET, HEAD"));
    }
}
