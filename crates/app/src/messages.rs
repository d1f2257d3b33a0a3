//! The write-path routes: `POST /messages`, `GET /messages`, `GET /ids`.
//!
//! The routes only parse and answer; every wait happens in [`c10k_store::Store`], whose futures
//! complete through channels that any executor can await, so these handlers run unchanged under
//! `Wait::Block` (`block_on` on a worker thread) and `Wait::Yield` (tokio).

use std::sync::Arc;

use c10k_store::throttle::{Throttle, Verdict};
use c10k_store::{Message, Store, StoreError, MAX_IDS_PER_CALL};
use serde_json::json;

use c10k_http::{Ctx, DeadlineExceeded, Request, Response};

use crate::{json, query, App};

/// Most messages one `GET /messages` returns; the default when `limit` is absent.
const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 100;

impl App {
    /// The store, opened now if this is the first request that needs it; or the answer to give
    /// when there is none.
    async fn store_or_503(&self) -> Result<&Arc<Store>, Response> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let Some(config) = &self.config.store else {
            return Err(Response::error(
                503,
                "the write path is not configured in this server (no store; see --database)",
            ));
        };
        self.store
            .get_or_try_init(|| open_store(config.clone(), self.slot))
            .await
            // The detail (paths, driver text) is for the operator, not the client.
            .map_err(store_error)
    }

    pub(crate) async fn post_message(
        &self,
        req: &Request,
        ctx: Ctx,
    ) -> Result<Response, DeadlineExceeded> {
        // Only JSON: a form or text/plain body is what any web page can send cross-site without
        // a CORS preflight. Checked first, so such a request does not even open the store.
        if !is_json(req.content_type()) {
            return Ok(Response::error(
                415,
                "Content-Type: POST /messages takes application/json",
            ));
        }
        let store = match self.store_or_503().await {
            Ok(s) => s,
            Err(resp) => return Ok(resp),
        };
        let body = match req.body.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot read a spooled request body back: {e}");
                return Ok(Response::error(500, "cannot read the request body"));
            }
        };
        let (room, user, text) = match parse_post(&body) {
            Ok(fields) => fields,
            Err(why) => return Ok(Response::error(400, why)),
        };
        ctx.check_deadline()?;
        match store.post(&room, &user, &text, ctx.deadline).await {
            Ok(msg) => Ok(json(201, &message_json(&msg))),
            Err(e) => Ok(store_error(e)),
        }
    }

    pub(crate) async fn list_messages(
        &self,
        req: &Request,
        ctx: Ctx,
    ) -> Result<Response, DeadlineExceeded> {
        let store = match self.store_or_503().await {
            Ok(s) => s,
            Err(resp) => return Ok(resp),
        };
        let q = query(req);
        let Some(room) = q.get("room") else {
            return Ok(Response::error(
                400,
                "room: missing; use /messages?room=R&after=ID&limit=N",
            ));
        };
        if let Err(e) =
            c10k_store::record::validate_field("room", &room, c10k_store::record::MAX_ROOM)
        {
            return Ok(Response::error(400, e));
        }
        let after = match q.get("after") {
            None => 0,
            // Ids are 63-bit (the databases store them as signed 64-bit integers).
            Some(raw) => match raw.parse::<u64>() {
                Ok(n) if n <= i64::MAX as u64 => n,
                _ => {
                    return Ok(Response::error(
                        400,
                        format_args!(
                            "after: {raw:?} is not a message id (a whole number in 0..2^63)"
                        ),
                    ))
                }
            },
        };
        let limit = match q.get("limit") {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Ok(Response::error(
                        400,
                        format_args!("limit: {raw:?} is not a whole number in 1..={MAX_LIMIT}"),
                    ))
                }
            },
        };
        ctx.check_deadline()?;
        match store.list(&room, after, limit, ctx.deadline).await {
            Ok(rows) => {
                let rows: Vec<_> = rows.iter().map(message_json).collect();
                Ok(json(200, &json!({ "room": room, "messages": rows })))
            }
            Err(e) => Ok(store_error(e)),
        }
    }

    pub(crate) async fn ids(&self, req: &Request) -> Response {
        let store = match self.store_or_503().await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        let count = match query(req).get("count") {
            None => 1,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_IDS_PER_CALL).contains(&n) => n,
                _ => {
                    return Response::error(
                        400,
                        format_args!(
                            "count: {raw:?} is not a whole number in 1..={MAX_IDS_PER_CALL}"
                        ),
                    )
                }
            },
        };
        match store.ids(count) {
            Ok(ids) => json(200, &json!({ "ids": ids })),
            Err(e) => store_error(e),
        }
    }
}

/// Opens the store on a thread of its own (it connects, replays the journal and may wait for a
/// lease), so an event loop is not blocked meanwhile; awaitable under any executor.
async fn open_store(
    config: c10k_store::StoreConfig,
    slot: usize,
) -> Result<Arc<Store>, StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("c10k-store-open-{slot}"))
        .spawn(move || {
            let _ = tx.send(Store::open(&config, slot).map(Arc::new));
        });
    if let Err(e) = spawned {
        return Err(StoreError::Open {
            what: "cannot start a thread to open the store".into(),
            source: Box::new(e),
        });
    }
    rx.await.unwrap_or(Err(StoreError::Closed))
}

fn message_json(m: &Message) -> serde_json::Value {
    json!({ "id": m.id, "room": m.room, "user": m.user, "text": m.text, "ts": m.ts })
}

/// `application/json`, with or without parameters (`; charset=utf-8`), in any letter case.
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// Failures of the write path logged in this process: one line per kind per window.
static ERRORS: std::sync::LazyLock<Throttle> = std::sync::LazyLock::new(Throttle::default);

/// The answer to a request the store failed: the status is decided here, not by the store. The
/// client sees a short reason and, for failures of the server's own (database, journal, ids,
/// opening the store), an error id; the detail — driver errors, OS errors, paths — goes to the
/// log under that id only, at most one line per kind of failure per 10 s.
fn store_error(e: StoreError) -> Response {
    let reason = match &e {
        StoreError::Invalid(why) => return Response::error(400, why),
        StoreError::Deadline => return Response::error(504, "request exceeded --request-timeout"),
        // Says nothing internal and tells the client what to do.
        StoreError::Backlog { .. } => {
            return Response::error(503, &e).with_header("Retry-After", "1")
        }
        StoreError::Db(_) => "the database is unavailable",
        StoreError::Journal(_) => "the write journal cannot be written",
        StoreError::Ids(_) | StoreError::IdsUnavailable(_) | StoreError::LeaseLost(_) => {
            "no message ids can be issued right now"
        }
        StoreError::Closed => "the write path is shutting down",
        StoreError::Open { .. } => "the write path cannot be opened",
        _ => "the write path is unavailable",
    };
    let verdict = ERRORS.check(e.kind());
    if let Verdict::Log { id, unlogged } = &verdict {
        tracing::error!(error_id = %id, kind = e.kind(), unlogged, "write path failed: {e}");
    }
    Response::error(
        503,
        format_args!("{reason}; try again later (error id {})", verdict.id()),
    )
    .with_header("Retry-After", "1")
}

/// Parses `{"room": ..., "user": ..., "text": ...}`; unknown keys are refused so a typo
/// (`"txt"`) is not silently a missing field.
fn parse_post(body: &[u8]) -> Result<(String, String, String), String> {
    if body.is_empty() {
        return Err(r#"body: expected JSON {"room": ..., "user": ..., "text": ...}"#.into());
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body: not valid JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("body: expected a JSON object".into());
    };
    if let Some(k) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "room" | "user" | "text"))
    {
        return Err(format!("{k}: unknown field; expected room, user, text"));
    }
    let field = |name: &str| -> Result<String, String> {
        match map.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{name}: must be a string")),
            None => Err(format!("{name}: missing")),
        }
    };
    Ok((field("room")?, field("user")?, field("text")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AppConfig;
    use c10k_http::{Method, Wait};
    use c10k_store::StoreConfig;

    fn app_with_store(dir: &std::path::Path) -> App {
        let mut cfg = StoreConfig::in_dir(dir);
        cfg.instance_id = Some(1);
        cfg.flush_interval = 5;
        let store = Store::open(&cfg, 0).unwrap();
        App::with_store(AppConfig::default(), Arc::new(store))
    }

    fn call(app: &App, req: Request) -> Response {
        pollster::block_on(app.handle(&req, Ctx::new(Wait::Block)))
    }

    fn post(app: &App, body: &str) -> Response {
        call(
            app,
            Request::new(Method::Post, "/messages").with_body("application/json", body.to_owned()),
        )
    }

    fn json_body(resp: &Response) -> serde_json::Value {
        serde_json::from_slice(resp.body.as_bytes().unwrap()).unwrap()
    }

    #[test]
    fn without_a_store_the_routes_answer_503() {
        let app = App::new(AppConfig::default());
        for req in [
            Request::new(Method::Get, "/ids"),
            Request::new(Method::Get, "/messages?room=a"),
            Request::new(Method::Post, "/messages").with_body("application/json", "{}"),
        ] {
            let resp = call(&app, req);
            assert_eq!(resp.status, 503);
            assert!(std::str::from_utf8(resp.body.as_bytes().unwrap())
                .unwrap()
                .contains("not configured"));
        }
    }

    #[test]
    fn the_store_opens_on_the_first_write_path_request() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut cfg = StoreConfig::in_dir(&data);
        cfg.instance_id = Some(1);
        let app = App::boot(
            AppConfig {
                store: Some(cfg),
                ..AppConfig::default()
            },
            3,
        )
        .unwrap();
        for target in ["/", "/cpu?ms=1", "/nope"] {
            call(&app, Request::new(Method::Get, target));
        }
        assert!(!data.exists(), "serving / must not create the data dir");
        assert!(app.store_stats().is_none());
        let resp = call(&app, Request::new(Method::Get, "/ids?count=2"));
        assert_eq!(resp.status, 200);
        assert!(data.join("journal-3").is_dir(), "worker 3's journal");
        assert!(app.store_stats().is_some());
    }

    #[test]
    fn a_store_that_cannot_open_is_503_without_internals() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let app = App::new(AppConfig {
            store: Some(StoreConfig::in_dir(&file)),
            ..AppConfig::default()
        });
        let resp = call(&app, Request::new(Method::Get, "/ids"));
        assert_eq!(resp.status, 503);
        let text = std::str::from_utf8(resp.body.as_bytes().unwrap()).unwrap();
        assert!(!text.contains("not-a-dir"), "{text}");
    }

    #[test]
    fn post_then_read_your_writes_then_ids() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_store(dir.path());
        let mut ids = Vec::new();
        for i in 0..5 {
            let resp = post(
                &app,
                &format!(r#"{{"room":"r1","user":"ann","text":"hi {i}"}}"#),
            );
            assert_eq!(resp.status, 201, "{:?}", resp.body);
            let v = json_body(&resp);
            assert_eq!(v["room"], "r1");
            assert_eq!(v["text"], format!("hi {i}"));
            assert!(v["ts"].as_u64().unwrap() > 1_700_000_000_000);
            ids.push(v["id"].as_u64().unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        // Immediately visible, flushed or not.
        let resp = call(&app, Request::new(Method::Get, "/messages?room=r1"));
        assert_eq!(resp.status, 200);
        let got: Vec<u64> = json_body(&resp)["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        assert_eq!(got, ids);
        let resp = call(
            &app,
            Request::new(
                Method::Get,
                &format!("/messages?room=r1&after={}&limit=2", ids[1]),
            ),
        );
        let got: Vec<u64> = json_body(&resp)["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        assert_eq!(got, ids[2..4]);

        let resp = call(&app, Request::new(Method::Get, "/ids?count=3"));
        assert_eq!(resp.status, 200);
        assert_eq!(json_body(&resp)["ids"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn bad_input_gets_400_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_store(dir.path());
        let long = "x".repeat(5000);
        for (body, why) in [
            ("", "body"),
            ("nope", "not valid JSON"),
            ("[1]", "JSON object"),
            (r#"{"room":"a","user":"b"}"#, "text: missing"),
            (
                r#"{"room":"a","user":"b","text":1}"#,
                "text: must be a string",
            ),
            (
                r#"{"room":"a","user":"b","text":"c","x":1}"#,
                "x: unknown field",
            ),
            (
                r#"{"room":"","user":"b","text":"c"}"#,
                "room: must not be empty",
            ),
            (
                &format!(r#"{{"room":"a","user":"b","text":"{long}"}}"#),
                "text: at most 4096",
            ),
        ] {
            let resp = post(&app, body);
            assert_eq!(resp.status, 400, "{body}");
            let text = std::str::from_utf8(resp.body.as_bytes().unwrap()).unwrap();
            assert!(text.contains(why), "{body}: {text}");
        }
        for (target, why) in [
            ("/messages", "room: missing"),
            ("/messages?room=a&after=x", "after"),
            ("/messages?room=a&limit=0", "limit"),
            ("/messages?room=a&limit=100000", "limit"),
            ("/ids?count=0", "count"),
            ("/ids?count=10001", "count"),
        ] {
            let resp = call(&app, Request::new(Method::Get, target));
            assert_eq!(resp.status, 400, "{target}");
            assert!(
                std::str::from_utf8(resp.body.as_bytes().unwrap())
                    .unwrap()
                    .contains(why),
                "{target}"
            );
        }
    }

    #[test]
    fn backlog_past_max_lag_is_503_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = StoreConfig::in_dir(dir.path());
        cfg.database = Some(format!("postgres://u:p@127.0.0.1:{port}/db")); // nobody listens
        cfg.instance_id = Some(1);
        cfg.max_lag = 2;
        cfg.db_acquire_timeout = 0.3;
        let app = App::with_store(
            AppConfig::default(),
            Arc::new(Store::open(&cfg, 0).unwrap()),
        );
        let body = r#"{"room":"r","user":"u","text":"t"}"#;
        assert_eq!(
            post(&app, body).status,
            201,
            "acknowledged from the journal"
        );
        assert_eq!(post(&app, body).status, 201);
        let resp = post(&app, body);
        assert_eq!(resp.status, 503);
        assert!(resp
            .headers
            .iter()
            .any(|(n, v)| n == "Retry-After" && &v[..] == b"1"));
        assert!(std::str::from_utf8(resp.body.as_bytes().unwrap())
            .unwrap()
            .contains("--max-lag"));
    }

    fn text(resp: &Response) -> &str {
        std::str::from_utf8(resp.body.as_bytes().unwrap()).unwrap()
    }

    #[test]
    fn post_needs_a_json_content_type() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_store(dir.path());
        let body = r#"{"room":"r","user":"u","text":"t"}"#;
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
        ] {
            let resp = call(
                &app,
                Request::new(Method::Post, "/messages").with_body(ct, body),
            );
            assert_eq!(resp.status, 415, "{ct}");
            assert!(text(&resp).contains("application/json"));
        }
        let mut untyped = Request::new(Method::Post, "/messages");
        untyped.body = bytes::Bytes::from_static(body.as_bytes()).into();
        assert_eq!(call(&app, untyped).status, 415);
        for ct in ["application/json", "Application/JSON; charset=utf-8"] {
            let resp = call(
                &app,
                Request::new(Method::Post, "/messages").with_body(ct, body),
            );
            assert_eq!(resp.status, 201, "{ct}");
        }
    }

    #[test]
    fn after_outside_63_bits_is_400() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_store(dir.path());
        assert_eq!(
            post(&app, r#"{"room":"big","user":"u","text":"t"}"#).status,
            201
        );
        for after in [
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
        ] {
            let resp = call(
                &app,
                Request::new(Method::Get, &format!("/messages?room=big&after={after}")),
            );
            assert_eq!(resp.status, 400, "after={after}");
            assert!(text(&resp).contains("2^63"));
        }
        let resp = call(
            &app,
            Request::new(Method::Get, "/messages?room=big&after=9223372036854775807"),
        );
        assert_eq!(resp.status, 200);
        assert_eq!(json_body(&resp)["messages"].as_array().unwrap().len(), 0);
    }

    /// A database failure answers 503 with a short reason, `Retry-After` and an error id — never
    /// the driver's text, addresses or paths — and a burst of them shares one logged id.
    #[test]
    fn store_failures_answer_without_internals() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = StoreConfig::in_dir(dir.path());
        cfg.database = Some(format!("postgres://u:secretpw@127.0.0.1:{port}/db"));
        cfg.instance_id = Some(1);
        cfg.write_mode = c10k_store::WriteMode::Direct;
        cfg.db_acquire_timeout = 0.2;
        let app = App::with_store(
            AppConfig::default(),
            Arc::new(Store::open(&cfg, 0).unwrap()),
        );
        let mut ids = std::collections::HashSet::new();
        for _ in 0..5 {
            let resp = post(&app, r#"{"room":"r","user":"u","text":"t"}"#);
            assert_eq!(resp.status, 503);
            assert!(resp.headers.iter().any(|(n, _)| n == "Retry-After"));
            let text = text(&resp);
            for leak in [
                "127.0.0.1",
                &port.to_string(),
                "postgres",
                "secretpw",
                "pool",
                "onnect",
                "/",
            ] {
                assert!(!text.contains(leak), "{leak:?} in {text:?}");
            }
            let id = text
                .split("error id ")
                .nth(1)
                .unwrap_or_else(|| panic!("no error id in {text:?}"))
                .trim_end_matches([')', '\n']);
            ids.insert(id.to_owned());
        }
        assert_eq!(ids.len(), 1, "one logged failure per window: {ids:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn works_under_yield_too() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_store(dir.path());
        let req = Request::new(Method::Post, "/messages")
            .with_body("application/json", r#"{"room":"y","user":"u","text":"t"}"#);
        let (a, b) = tokio::join!(
            app.handle(&req, Ctx::new(Wait::Yield)),
            app.handle(&req, Ctx::new(Wait::Yield))
        );
        assert_eq!((a.status, b.status), (201, 201));
        let resp = app
            .handle(
                &Request::new(Method::Get, "/messages?room=y"),
                Ctx::new(Wait::Yield),
            )
            .await;
        assert_eq!(json_body(&resp)["messages"].as_array().unwrap().len(), 2);
    }
}
