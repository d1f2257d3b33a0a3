//! The experiment matrix: servers × fronts (direct, behind nginx) × workloads × concurrency.
//!
//! A matrix is plain data read from TOML (`c10k lab --matrix FILE`); the built-in default mirrors
//! the seed (4 workers, 50 threads for gthread) and `--quick` is a small version of it.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// One server to measure.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerSpec {
    /// Row label, in the seed's style ("sync + c10k (4 worker)").
    pub name: Option<String>,
    /// A c10k worker class (`sync`, `thread`, `gthread`, `async`)...
    pub worker_class: Option<String>,
    #[serde(default = "four")]
    pub workers: usize,
    #[serde(default = "one")]
    pub threads: usize,
    /// ...or an external command that listens on `{port}` (`{python}` is `--python`, `{bindir}`
    /// the directory it is in, `{venv}` its parent, `{c10k}` this c10k binary).
    pub command: Option<String>,
    /// The same server speaking nginx's uwsgi protocol on `{port}`, for the `nginx + uwsgi
    /// protocol` front (a c10k worker class always can: `--bind uwsgi://`). Without it, that
    /// front's rows are skipped for this server.
    pub uwsgi_command: Option<String>,
    /// Python modules the command needs; the row is skipped with a reason when one is missing.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Requests a `command` server runs at once (workers × threads, or workers × greenlets):
    /// the plots draw its model's limit, min(clients, slots) / delay. c10k classes know theirs.
    #[serde(default)]
    pub slots: Option<usize>,
}

fn four() -> usize {
    4
}
fn one() -> usize {
    1
}

impl ServerSpec {
    pub fn c10k(class: &str, workers: usize, threads: usize) -> ServerSpec {
        ServerSpec {
            name: None,
            worker_class: Some(class.to_owned()),
            workers,
            threads,
            command: None,
            uwsgi_command: None,
            requires: Vec::new(),
            slots: None,
        }
    }

    /// The worker model's limit at `clients` concurrent clients, in transactions/s, for a
    /// `delay` workload: each of the requests that run at once takes `delay` seconds, so
    /// min(clients, slots) / delay — W/delay for sync, min(C, W·T)/delay for gthread, C/delay
    /// for thread and async (the README's formula). 0 when there is no such limit to draw.
    pub fn model_limit(&self, workload: &Workload, clients: usize) -> f64 {
        let Workload::Delay(delay) = workload else {
            return 0.0;
        };
        if *delay <= 0.0 {
            return 0.0;
        }
        let slots = match (self.slots, self.worker_class.as_deref()) {
            (Some(s), _) => s,
            (None, Some("sync")) => self.workers,
            (None, Some("gthread")) => self.workers * self.threads,
            // One request per connection: the clients are the limit.
            (None, Some(_)) => usize::MAX,
            (None, None) => return 0.0,
        };
        clients.min(slots) as f64 / delay
    }

    /// The label used in tables and plots.
    pub fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.worker_class {
            Some(class) => {
                let model = if class == "async" { "async" } else { "sync" };
                if class == "gthread" {
                    format!(
                        "{model} + c10k {class} ({} worker + {} thread)",
                        self.workers, self.threads
                    )
                } else {
                    format!("{model} + c10k {class} ({} worker)", self.workers)
                }
            }
            None => "command".into(),
        }
    }
}

/// What each request does.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// `GET /`
    Hello,
    /// `GET /?delay=SECONDS`: a wait (the seed's experiment).
    Delay(f64),
    /// `GET /cpu?ms=N`: CPU-bound.
    Cpu(u64),
    /// `POST /messages`: the write path.
    Write,
}

impl Workload {
    pub fn path(&self) -> String {
        match self {
            Workload::Hello => "/".into(),
            Workload::Delay(s) => format!("/?delay={s}"),
            Workload::Cpu(ms) => format!("/cpu?ms={ms}"),
            Workload::Write => "/messages".into(),
        }
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Workload, String> {
        let bad = || format!("workload {s:?}: use hello, delay=SECONDS, cpu=Nms or write");
        match s {
            "hello" => return Ok(Workload::Hello),
            "write" => return Ok(Workload::Write),
            _ => {}
        }
        if let Some(v) = s.strip_prefix("delay=") {
            let secs: f64 = v.parse().map_err(|_| bad())?;
            if !(secs.is_finite() && secs >= 0.0) {
                return Err(bad());
            }
            return Ok(Workload::Delay(secs));
        }
        if let Some(v) = s.strip_prefix("cpu=") {
            let ms = v.strip_suffix("ms").unwrap_or(v);
            return ms.parse().map(Workload::Cpu).map_err(|_| bad());
        }
        Err(bad())
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workload::Hello => f.write_str("hello"),
            Workload::Delay(s) => write!(f, "delay={s}"),
            Workload::Cpu(ms) => write!(f, "cpu={ms}ms"),
            Workload::Write => f.write_str("write"),
        }
    }
}

/// A whole experiment.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub servers: Vec<ServerSpec>,
    pub workloads: Vec<Workload>,
    pub concurrency: Vec<usize>,
    /// Also measure every server behind nginx as an HTTP reverse proxy (upstream keep-alive).
    pub behind_nginx: bool,
    /// Also measure every server behind nginx speaking the uwsgi protocol (`uwsgi_pass`), the
    /// seed's deployment.
    pub behind_nginx_uwsgi: bool,
    pub duration: Duration,
    pub warmup: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct MatrixFile {
    #[serde(default)]
    server: Vec<ServerSpec>,
    workloads: Option<Vec<String>>,
    concurrency: Option<Vec<usize>>,
    behind_nginx: Option<bool>,
    behind_nginx_uwsgi: Option<bool>,
    duration: Option<f64>,
    warmup: Option<f64>,
}

impl Matrix {
    /// The seed's table, complete: every class, direct and behind nginx, four workloads,
    /// concurrency 1 to 1000.
    pub fn default_matrix() -> Matrix {
        Matrix {
            servers: c10k_classes(),
            workloads: vec![
                Workload::Hello,
                Workload::Delay(0.1),
                Workload::Cpu(5),
                Workload::Write,
            ],
            concurrency: vec![1, 10, 100, 1000],
            behind_nginx: true,
            behind_nginx_uwsgi: true,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
        }
    }

    /// The seed's experiment only (`delay=0.1`), two concurrency levels, short cells: under two
    /// minutes on two cores.
    pub fn quick() -> Matrix {
        Matrix {
            servers: c10k_classes(),
            workloads: vec![Workload::Delay(0.1)],
            concurrency: vec![10, 100],
            behind_nginx: true,
            behind_nginx_uwsgi: false,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
        }
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Matrix> {
        let file: MatrixFile = toml::from_str(text)?;
        let base = Matrix::default_matrix();
        let workloads = match file.workloads {
            Some(w) => w
                .iter()
                .map(|s| s.parse().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => base.workloads,
        };
        let secs = |v: Option<f64>, d: Duration, key: &str| -> anyhow::Result<Duration> {
            match v {
                None => Ok(d),
                Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
                Some(s) => anyhow::bail!("{key} = {s}: must be a positive number of seconds"),
            }
        };
        let m = Matrix {
            servers: if file.server.is_empty() {
                base.servers
            } else {
                file.server
            },
            workloads,
            concurrency: file.concurrency.unwrap_or(base.concurrency),
            behind_nginx: file.behind_nginx.unwrap_or(base.behind_nginx),
            // A matrix file asks for this front by name: older files keep their cell count.
            behind_nginx_uwsgi: file.behind_nginx_uwsgi.unwrap_or(false),
            duration: secs(file.duration, base.duration, "duration")?,
            warmup: secs(file.warmup, base.warmup, "warmup")?,
        };
        m.validate()?;
        Ok(m)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Matrix> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --matrix {}", path.display()))?;
        Matrix::from_toml(&text).with_context(|| format!("--matrix {}", path.display()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.servers.is_empty(), "no [[server]] to measure");
        anyhow::ensure!(!self.workloads.is_empty(), "workloads is empty");
        anyhow::ensure!(
            !self.concurrency.is_empty() && self.concurrency.iter().all(|&c| c > 0),
            "concurrency needs levels ≥ 1"
        );
        for s in &self.servers {
            match (&s.worker_class, &s.command) {
                (Some(class), None) => anyhow::ensure!(
                    ["sync", "thread", "gthread", "async"].contains(&class.as_str()),
                    "worker-class {class:?}: use sync, thread, gthread or async"
                ),
                (None, Some(cmd)) => anyhow::ensure!(
                    cmd.contains("{port}"),
                    "command {cmd:?} must listen on {{port}}"
                ),
                _ => anyhow::bail!(
                    "each [[server]] needs exactly one of worker-class or command ({:?})",
                    s.name
                ),
            }
        }
        Ok(())
    }

    /// The fronts measured, in order: `direct`, then `nginx` (HTTP proxy) and `nginx-uwsgi`.
    pub fn fronts(&self) -> Vec<Front> {
        let mut f = vec![Front::Direct];
        if self.behind_nginx {
            f.push(Front::NginxHttp);
        }
        if self.behind_nginx_uwsgi {
            f.push(Front::NginxUwsgi);
        }
        f
    }

    pub fn cells(&self) -> usize {
        self.servers.len() * self.fronts().len() * self.workloads.len() * self.concurrency.len()
    }
}

/// What stands between the load generator and the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    Direct,
    /// nginx as an HTTP reverse proxy with upstream keep-alive.
    NginxHttp,
    /// nginx speaking the uwsgi protocol to the server (`uwsgi_pass`).
    NginxUwsgi,
}

impl Front {
    /// The `front` column of raw.csv.
    pub fn as_str(self) -> &'static str {
        match self {
            Front::Direct => "direct",
            Front::NginxHttp => "nginx",
            Front::NginxUwsgi => "nginx-uwsgi",
        }
    }

    /// The row's mode, in the seed's style ("nginx + uwsgi protocol + sync + uWSGI ...").
    pub fn mode(self, server: &str) -> String {
        match self {
            Front::Direct => server.to_owned(),
            Front::NginxHttp => format!("nginx + HTTP proxy + {server}"),
            Front::NginxUwsgi => format!("nginx + uwsgi protocol + {server}"),
        }
    }
}

fn c10k_classes() -> Vec<ServerSpec> {
    vec![
        ServerSpec::c10k("sync", 4, 1),
        ServerSpec::c10k("thread", 4, 1),
        ServerSpec::c10k("gthread", 4, 50),
        ServerSpec::c10k("async", 4, 1),
    ]
}

/// The Python peers the seed compared, added when `--python` has them installed. The app is
/// `lab/peers/flask_app.py` (the seed's `?delay` app).
pub fn python_peers() -> Vec<ServerSpec> {
    let peer = |name: &str, command: &str, requires: &[&str]| ServerSpec {
        name: Some(name.to_owned()),
        worker_class: None,
        workers: 4,
        threads: 1,
        command: Some(command.to_owned()),
        // uWSGI speaks the uwsgi protocol with --socket instead of --http-socket.
        uwsgi_command: command
            .contains("--http-socket")
            .then(|| command.replace("--http-socket", "--socket")),
        requires: requires.iter().map(|s| (*s).to_owned()).collect(),
        // 4 workers × 50 threads, or × 1000 greenlets.
        slots: Some(if name.contains("gevent") { 4000 } else { 200 }),
    };
    // The same Flask app hosted by c10k itself (`c10k serve flask_app:app`), under each class.
    let c10k = |class: &str, threads: usize| {
        let label = match class {
            "gthread" | "async" => format!("{class} + c10k Flask (4 worker + {threads} thread)"),
            _ => format!("{class} + c10k Flask (4 worker)"),
        };
        let command = format!(
            "{{c10k}} serve --bind 127.0.0.1:{{port}} --admin off -k {class} -w 4 --threads {threads} \
             --backlog 4096 --log-level warn --venv {{venv}} flask_app:app"
        );
        ServerSpec {
            name: Some(label),
            worker_class: None,
            workers: 4,
            threads,
            uwsgi_command: Some(command.replace("--bind 127.0.0.1", "--bind uwsgi://127.0.0.1")),
            command: Some(command),
            requires: vec!["flask".to_owned()],
            slots: Some(match class {
                "sync" => 4,
                "thread" => 4000,
                _ => 4 * threads,
            }),
        }
    };
    vec![
        c10k("sync", 1),
        c10k("thread", 1),
        c10k("gthread", 50),
        c10k("async", 50),
        peer(
            "sync + gunicorn (4 worker + 50 thread)",
            "{python} -m gunicorn -w 4 --threads 50 --backlog 2048 -b 127.0.0.1:{port} flask_app:app",
            &["gunicorn", "flask"],
        ),
        peer(
            "async + gunicorn (4 worker + gevent)",
            "{python} -m gunicorn -w 4 -k gevent --worker-connections 1000 --backlog 2048 -b 127.0.0.1:{port} flask_app:app",
            &["gunicorn", "gevent", "flask"],
        ),
        peer(
            "sync + uWSGI (4 worker + 50 thread)",
            "{bindir}/uwsgi --http-socket 127.0.0.1:{port} --master --workers 4 --threads 50 --listen 1024 --disable-logging --module flask_app:app",
            &["pyuwsgi", "flask"],
        ),
        peer(
            "async + uWSGI (4 worker + gevent)",
            "{bindir}/uwsgi --http-socket 127.0.0.1:{port} --master --workers 4 --gevent 1000 --gevent-monkey-patch --listen 1024 --disable-logging --module flask_app:app",
            &["pyuwsgi", "gevent", "flask"],
        ),
        peer(
            "sync + Granian (4 worker + 50 thread)",
            "{python} -m granian --interface wsgi --workers 4 --blocking-threads 50 --host 127.0.0.1 --port {port} flask_app:app",
            &["granian", "flask"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_custom_matrix() {
        let m = Matrix::from_toml(
            r#"
            workloads = ["hello", "delay=0.05", "cpu=5ms"]
            concurrency = [1, 8]
            behind-nginx = false
            duration = 1.5
            [[server]]
            worker-class = "gthread"
            workers = 2
            threads = 8
            [[server]]
            name = "peer"
            command = "peer --port {port}"
            "#,
        )
        .unwrap();
        assert_eq!(m.workloads[1], Workload::Delay(0.05));
        assert_eq!(m.workloads[2], Workload::Cpu(5));
        assert_eq!(
            m.servers[0].label(),
            "sync + c10k gthread (2 worker + 8 thread)"
        );
        assert_eq!(m.cells(), 2 * 3 * 2);
        assert_eq!(m.duration, Duration::from_millis(1500));
    }

    #[test]
    fn refuses_bad_matrices_with_the_reason() {
        for (text, why) in [
            ("workloads = [\"sleep\"]", "workload"),
            ("concurrency = [0]", "concurrency"),
            ("[[server]]\nworker-class = \"fork\"", "fork"),
            ("[[server]]\ncommand = \"x\"", "{port}"),
            ("duration = -1", "duration"),
            ("unknown = 1", "unknown"),
        ] {
            let e = format!("{:#}", Matrix::from_toml(text).unwrap_err());
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn the_uwsgi_front_is_asked_for_by_name() {
        let m = Matrix::from_toml("behind-nginx-uwsgi = true\nbehind-nginx = false").unwrap();
        assert_eq!(m.fronts(), [Front::Direct, Front::NginxUwsgi]);
        let m = Matrix::from_toml("").unwrap();
        assert_eq!(m.fronts(), [Front::Direct, Front::NginxHttp]);
        assert_eq!(
            Front::NginxUwsgi.mode("sync + c10k sync (4 worker)"),
            "nginx + uwsgi protocol + sync + c10k sync (4 worker)"
        );
        let uwsgi = python_peers()
            .into_iter()
            .find(|p| p.label().starts_with("sync + uWSGI"))
            .unwrap();
        assert!(uwsgi
            .uwsgi_command
            .unwrap()
            .contains("--socket 127.0.0.1:{port}"));
        let hosted = python_peers()
            .into_iter()
            .find(|p| p.label() == "gthread + c10k Flask (4 worker + 50 thread)")
            .unwrap();
        assert!(hosted
            .uwsgi_command
            .unwrap()
            .contains("--bind uwsgi://127.0.0.1:{port}"));
        assert!(hosted.command.unwrap().contains("flask_app:app"));
    }

    #[test]
    fn quick_is_small() {
        let q = Matrix::quick();
        let secs = q.cells() as f64 * (q.duration + q.warmup).as_secs_f64();
        assert!(secs < 60.0, "{secs}");
    }
}
