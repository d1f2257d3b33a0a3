//! `c10k status`: MySQL's `SHOW PROCESSLIST` and `SHOW STATUS` for a running `c10k serve`,
//! read from its admin listener (`--admin`).
//!
//! The server does the gathering (`/status`, `/processlist`); this side fetches the JSON over a
//! plain HTTP/1.0 request, deserialises it into the same typed [`Report`] and [`Processlist`] the
//! server serialised, and draws tables, so `curl` and this command always agree.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use c10k_serve::status::{Processlist, Report};
use c10k_serve::BindAddr;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// How long one admin request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the admin listener is, and the token it wants.
pub struct AdminClient {
    pub addr: BindAddr,
    pub token: Option<String>,
}

/// Fetches `path` from the admin listener and deserialises the JSON answer.
pub fn fetch<T: DeserializeOwned>(admin: &AdminClient, path: &str) -> anyhow::Result<T> {
    let addr = &admin.addr;
    let auth = admin
        .token
        .as_deref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.0\r\nHost: c10k-admin\r\n{auth}\r\n");
    let mut raw = Vec::new();
    let hint = || {
        format!(
            "cannot reach the admin listener at {addr} (is `c10k serve` running, with this \
             --admin?)"
        )
    };
    match addr {
        BindAddr::Tcp(a) => {
            let mut s = TcpStream::connect_timeout(a, TIMEOUT).with_context(hint)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            s.write_all(request.as_bytes())?;
            s.read_to_end(&mut raw).with_context(hint)?;
        }
        BindAddr::Unix(p) => {
            let mut s = UnixStream::connect(p).with_context(hint)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            s.write_all(request.as_bytes())?;
            s.read_to_end(&mut raw).with_context(hint)?;
        }
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the admin listener sent no complete HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let body = &raw[end + 4..];
    if status == "401" {
        bail!(
            "{addr}{path} answered 401: {} (give the server's token with --admin-token or \
             C10K_ADMIN_TOKEN)",
            String::from_utf8_lossy(body).trim()
        );
    }
    if status != "200" {
        bail!(
            "{addr}{path} answered {status}: {}",
            String::from_utf8_lossy(body).trim()
        );
    }
    serde_json::from_slice(body).with_context(|| {
        format!("{addr}{path} did not answer the JSON this c10k reads (a different version?)")
    })
}

/// `c10k status processlist`.
pub fn processlist(addr: &AdminClient, json: bool) -> anyhow::Result<String> {
    let list: Processlist = fetch(addr, "/processlist")?;
    if json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::to_value(&list)?)?
        ));
    }
    Ok(processlist_table(&list))
}

/// `c10k status counters [--like PATTERN]`.
pub fn counters(addr: &AdminClient, like: Option<&str>, json: bool) -> anyhow::Result<String> {
    let report: Report = fetch(addr, "/status")?;
    let counters = filter_counters(&report, like)?;
    if json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&Value::Object(counters))?
        ));
    }
    let rows: Vec<Vec<String>> = counters
        .iter()
        .map(|(k, v)| vec![k.clone(), scalar(v)])
        .collect();
    Ok(in_set(&["Variable_name", "Value"], &rows))
}

/// `c10k status watch`: redraws a summary and the processlist every `interval` until Ctrl-C
/// (SIGINT ends the process) or `count` refreshes.
pub fn watch(
    addr: &AdminClient,
    interval: Duration,
    count: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    let mut last: Option<(Instant, u64)> = None;
    let mut shown = 0u64;
    loop {
        let status: Report = fetch(addr, "/status")?;
        let list: Processlist = fetch(addr, "/processlist")?;
        let mut out = String::new();
        if json {
            let both = serde_json::json!({ "status": status, "processlist": list.processlist });
            out.push_str(&serde_json::to_string(&both)?);
            out.push('\n');
        } else {
            if tty {
                // Home and clear, as top does.
                out.push_str("\x1b[H\x1b[2J");
            }
            let requests = status.counters.requests;
            let now = Instant::now();
            let rate = last
                .map(|(t, n)| {
                    requests.saturating_sub(n) as f64 / now.duration_since(t).as_secs_f64()
                })
                .map(|r| format!("{r:.1}"))
                .unwrap_or_else(|| "-".into());
            last = Some((now, requests));
            out.push_str(&summary(&status, &rate));
            out.push_str(&processlist_table(&list));
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

fn summary(status: &Report, rate: &str) -> String {
    let s = &status.server;
    let c = &status.counters;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "c10k {} pid {}  {} workers ({}), up {}s  requests {} ({rate}/s)  active {}  \
         connections {}",
        s.version,
        s.pid,
        c.workers_running,
        s.worker_class,
        c.uptime_seconds,
        c.requests,
        c.requests_active,
        c.connections_active,
    );
    for l in &status.listeners {
        let _ = writeln!(
            out,
            "listen {}  queue {}/{}{}",
            l.address,
            or_null(l.queue),
            or_null(l.queue_max),
            if l.queue_full { "  FULL" } else { "" }
        );
    }
    out
}

fn processlist_table(list: &Processlist) -> String {
    let rows: Vec<Vec<String>> = list
        .processlist
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.worker.to_string(),
                p.pid.to_string(),
                p.client.clone(),
                p.state.as_str().to_owned(),
                format!("{:.3}", p.time),
                or_null(p.method.as_ref()),
                or_null(p.path.as_ref()),
            ]
        })
        .collect();
    in_set(
        &[
            "Id", "Worker", "Pid", "Client", "State", "Time", "Method", "Path",
        ],
        &rows,
    )
}

/// The counters of a report by name (serde names them, from the struct), keeping the names that
/// match `like`.
fn filter_counters(report: &Report, like: Option<&str>) -> anyhow::Result<Map<String, Value>> {
    let Value::Object(all) = serde_json::to_value(&report.counters)? else {
        bail!("the counters are not a JSON object");
    };
    Ok(all
        .into_iter()
        .filter(|(k, _)| like.is_none_or(|p| sql_like(p, k)))
        .collect())
}

/// `NULL` for a figure the server does not have, as the mysql client prints it.
fn or_null(v: Option<impl std::fmt::Display>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A table and its row count, or `Empty set`, as the mysql client prints them.
fn in_set(headers: &[&str], rows: &[Vec<String>]) -> String {
    match rows.len() {
        0 => "Empty set\n".into(),
        1 => format!("{}1 row in set\n", table(headers, rows)),
        n => format!("{}{n} rows in set\n", table(headers, rows)),
    }
}

/// A MySQL-style box table.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let rule = {
        let mut r = String::from("+");
        for w in &widths {
            r.push_str(&"-".repeat(w + 2));
            r.push('+');
        }
        r.push('\n');
        r
    };
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::from("|");
        for (w, c) in widths.iter().zip(cells) {
            let _ = write!(l, " {c:<w$} |");
        }
        l.push('\n');
        l
    };
    let mut out = rule.clone();
    out.push_str(&line(&mut headers.iter().copied()));
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out.push_str(&rule);
    out
}

/// SQL `LIKE`: `%` matches any run of characters, `_` exactly one, `\` escapes the next;
/// case-insensitive, as MySQL's default collation compares.
pub fn sql_like(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Any,
        One,
        Lit(char),
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '%' => Tok::Any,
            '_' => Tok::One,
            '\\' => Tok::Lit(chars.next().unwrap_or('\\')),
            c => Tok::Lit(c),
        });
    }
    let fold = |c: char| c.to_lowercase().next().unwrap_or(c);
    let text: Vec<char> = text.chars().map(fold).collect();
    // matches[j]: the tokens so far match text[..j].
    let mut matches = vec![false; text.len() + 1];
    matches[0] = true;
    for t in toks {
        let mut next = vec![false; text.len() + 1];
        match t {
            Tok::Any => {
                let mut any = false;
                for j in 0..=text.len() {
                    any |= matches[j];
                    next[j] = any;
                }
            }
            Tok::One => {
                next[1..].copy_from_slice(&matches[..text.len()]);
            }
            Tok::Lit(c) => {
                let c = fold(c);
                for j in 1..=text.len() {
                    next[j] = matches[j - 1] && text[j - 1] == c;
                }
            }
        }
        matches = next;
    }
    matches[text.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use c10k_serve::status::report::Counters;

    #[test]
    fn like_semantics() {
        assert!(sql_like("%connect%", "connections_accepted"));
        assert!(sql_like("%CONNECT%", "connections_active"));
        assert!(!sql_like("%connect%", "requests_2xx"));
        assert!(sql_like("requests\\_%xx", "requests_2xx"));
        assert!(!sql_like("requests\\_%xx", "requestsA2xx"));
        assert!(sql_like("requests__xx", "requests_2xx"));
        assert!(!sql_like("requests_xx", "requests_2xx"));
        assert!(sql_like("%", ""));
        assert!(!sql_like("_", ""));
        assert!(sql_like("bytes_in", "BYTES_IN"));
        assert!(!sql_like("bytes", "bytes_in"));
        assert!(sql_like("%%in", "bytes_in"));
    }

    #[test]
    fn tables() {
        let list: Processlist = serde_json::from_value(serde_json::json!({"processlist": [{
            "id": 3, "worker": 0, "pid": 42, "client": "127.0.0.1:5000", "state": "handling",
            "time": 1.5, "method": "GET", "path": "/?delay=1", "requests": 1
        }]}))
        .unwrap();
        let t = processlist_table(&list);
        assert!(
            t.contains(
                "| 3  | 0      | 42  | 127.0.0.1:5000 | handling | 1.500 | GET    | /?delay=1 |"
            ),
            "{t}"
        );
        assert!(t.ends_with("1 row in set\n"));
        let empty = processlist_table(&Processlist::default());
        assert_eq!(empty, "Empty set\n");
        let report = Report {
            counters: c10k_serve::status::report::Counters {
                connections_accepted: 5,
                requests: 9,
                connections_refused: None,
                ..Default::default()
            },
            ..serde_json::from_value(serde_json::json!({
                "server": {"version": "0", "pid": 1, "started_at": 0, "uptime_seconds": 0.0,
                    "worker_class": "sync", "workers": 1, "threads": 1,
                    "worker_connections": 1, "backlog": 1, "request_tracking": true},
                "listeners": [], "workers": [], "counters": Counters::default(),
                "pool": null, "journal": null
            }))
            .unwrap()
        };
        let m = filter_counters(&report, Some("%connect%")).unwrap();
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m["connections_accepted"], 5);
        assert_eq!(scalar(&m["connections_refused"]), "NULL");
    }
}
