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

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use c10k_store::Store;

mod messages;
mod query;

pub use query::Query;

/// The HTTP methods the application distinguishes; anything else is kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other(String),
}

impl Method {
    /// Maps a request-line token to a method (tokens are case-sensitive, RFC 9110 §9.1).
    pub fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A complete request as the application sees it: the server has already read the whole body.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// The path part of the request target, still percent-encoded (`/messages`).
    pub path: String,
    /// The raw query string without the `?`, if any.
    pub query: Option<String>,
    /// The `Content-Type` header, if the client sent one.
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Request {
    /// A body-less request for `target` (`/path?query`), handy in tests and tools.
    pub fn new(method: Method, target: &str) -> Request {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        Request {
            method,
            path,
            query,
            content_type: None,
            body: Bytes::new(),
        }
    }

    pub fn with_body(mut self, content_type: &str, body: impl Into<Bytes>) -> Request {
        self.content_type = Some(content_type.to_owned());
        self.body = body.into();
        self
    }

    pub fn query(&self) -> Query<'_> {
        Query::new(self.query.as_deref().unwrap_or(""))
    }
}

/// What the application answers. The server adds framing headers (`Content-Length`, `Date`,
/// `Connection`, `Server`) and drops the body of a `HEAD` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: Cow<'static, str>,
    /// Extra headers beyond the framing ones (`Allow`, `Retry-After`, ...).
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn new(
        status: u16,
        content_type: impl Into<Cow<'static, str>>,
        body: impl Into<Bytes>,
    ) -> Response {
        Response {
            status,
            content_type: content_type.into(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<Bytes>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = value.to_string();
        body.push('\n');
        Response::new(status, "application/json", body)
    }

    /// An error answer whose body says why, as one line of text.
    pub fn error(status: u16, reason: impl fmt::Display) -> Response {
        Response::text(status, format!("{reason}\n"))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// How a wait inside the application behaves; see the crate documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Block the OS thread (`sync`, `thread`, `gthread`).
    Block,
    /// Yield to the tokio event loop (`async`). Needs a tokio runtime with timers.
    Yield,
}

/// The request has run past its deadline (`--request-timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("request exceeded its time limit")]
pub struct DeadlineExceeded;

/// Per-request context: how to wait, and until when the request may run.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub wait: Wait,
    pub deadline: Option<Instant>,
}

impl Ctx {
    pub fn new(wait: Wait) -> Ctx {
        Ctx {
            wait,
            deadline: None,
        }
    }

    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Ctx {
        self.deadline = deadline;
        self
    }

    /// Sleeps for `d`, blocking or yielding per [`Wait`]. A sleep that would end past the deadline
    /// sleeps until the deadline and fails, so a blocked worker thread is freed on time under every
    /// worker class (the same `--request-timeout` meaning everywhere).
    pub async fn sleep(&self, d: Duration) -> Result<(), DeadlineExceeded> {
        let now = Instant::now();
        let (d, late) = match self.deadline {
            Some(deadline) if now + d > deadline => (deadline.saturating_duration_since(now), true),
            _ => (d, false),
        };
        match self.wait {
            Wait::Block => std::thread::sleep(d),
            Wait::Yield => tokio::time::sleep(d).await,
        }
        if late {
            Err(DeadlineExceeded)
        } else {
            Ok(())
        }
    }

    pub fn check_deadline(&self) -> Result<(), DeadlineExceeded> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(DeadlineExceeded),
            _ => Ok(()),
        }
    }
}

/// Limits and settings of the built-in application.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// Longest `?delay=` accepted; above it the request gets 400.
    pub max_delay: Duration,
    /// Longest `/cpu?ms=` accepted.
    pub max_cpu: Duration,
}

impl Default for AppConfig {
    fn default() -> AppConfig {
        AppConfig {
            max_delay: Duration::from_secs(60),
            max_cpu: Duration::from_secs(10),
        }
    }
}

/// What a server calls for each request. `c10k serve` runs [`App`]; a Rust program can hand its
/// own implementation to the server library instead. The returned future must honour
/// [`Ctx::wait`]: under [`Wait::Block`] it is driven by `block_on` on a worker thread, so it must
/// not need a tokio runtime context there.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, req: &Request, ctx: Ctx) -> impl std::future::Future<Output = Response> + Send;
}

/// The built-in application. Cheap to share: workers hold it in an `Arc`.
#[derive(Debug)]
pub struct App {
    config: AppConfig,
    /// The write path behind `/messages` and `/ids`; without one those routes answer 503.
    store: Option<Arc<Store>>,
}

impl App {
    pub fn new(config: AppConfig) -> App {
        App {
            config,
            store: None,
        }
    }

    /// An application whose `/messages` and `/ids` routes use `store`.
    pub fn with_store(config: AppConfig, store: Arc<Store>) -> App {
        App {
            config,
            store: Some(store),
        }
    }

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
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
                Method::Get | Method::Head => Ok(self.ids(req)),
                _ => Ok(method_not_allowed("GET, HEAD")),
            },
            path => Ok(Response::error(404, format_args!("no route for {path}"))),
        };
        result.unwrap_or_else(|DeadlineExceeded| {
            Response::error(504, "request exceeded --request-timeout")
        })
    }

    async fn hello(&self, req: &Request, ctx: Ctx) -> Result<Response, DeadlineExceeded> {
        let delay = match req.query().get("delay") {
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
        let ms = match req.query().get("ms") {
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
    fn call(&self, req: &Request, ctx: Ctx) -> impl std::future::Future<Output = Response> + Send {
        self.handle(req, ctx)
    }
}

fn echo(req: &Request) -> Response {
    let content_type = match &req.content_type {
        Some(ct) => Cow::Owned(ct.clone()),
        None => Cow::Borrowed("application/octet-stream"),
    };
    Response::new(200, content_type, req.body.clone())
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

    fn app() -> App {
        App::new(AppConfig::default())
    }

    fn get(target: &str) -> Response {
        pollster::block_on(app().handle(&Request::new(Method::Get, target), Ctx::new(Wait::Block)))
    }

    fn body(resp: &Response) -> &str {
        std::str::from_utf8(&resp.body).unwrap()
    }

    #[test]
    fn hello() {
        let resp = get("/");
        assert_eq!(resp.status, 200);
        assert_eq!(body(&resp), "hello\n");
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
            .any(|(n, v)| *n == "Allow" && v == "GET, HEAD"));
    }
}
