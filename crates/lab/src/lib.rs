//! `c10k lab`: one command that reproduces the seed's results table on the machine it runs on —
//! every worker class × workload × concurrency, direct and behind real nginx, beside the Python
//! servers the seed used when they are installed — and draws it.
//!
//! Each cell starts its server fresh, waits until it answers, warms up, runs `c10k bench` as a
//! library for a fixed time, stops the server, and appends a row to `raw.csv`. Rendering
//! (`summary.md`, SVG plots, `index.html`) reads only `raw.csv` and `machine.json`, so
//! `c10k lab render DIR` redoes it from a finished run.

pub mod matrix;
pub mod ports;
pub mod record;
pub mod render;
pub mod servers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use c10k_bench::UsageError;
use matrix::{Front, Matrix, ServerSpec, Workload};
use record::{Machine, Row};
use render::RunInfo;
use servers::Process;

/// Clients used to warm a server up before a cell is measured.
const WARMUP_CLIENTS: usize = 4;

/// The seed's `?delay` Flask app, for the Python peers.
const FLASK_APP: &str = include_str!("../../../lab/peers/flask_app.py");

/// Flags of `c10k lab`.
#[derive(Debug)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[cfg_attr(feature = "cli", command(args_conflicts_with_subcommands = true))]
pub struct LabArgs {
    /// A TOML matrix instead of the built-in one (see lab/matrix.example.toml).
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub matrix: Option<PathBuf>,

    /// The small matrix: delay=0.1 at concurrency 10 and 100, 2 s cells (under two minutes).
    #[cfg_attr(feature = "cli", arg(long, conflicts_with = "matrix"))]
    pub quick: bool,

    /// Where runs go: each run writes DIR/<date-time>-lab/ (the path is printed before the
    /// first cell). The default is ./runs under the current directory.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR", default_value = "runs"))]
    pub out: PathBuf,

    /// A Python with gunicorn/uWSGI (pyuwsgi)/Granian/gevent/Flask installed: adds the seed's
    /// Python servers as rows.
    #[cfg_attr(feature = "cli", arg(long, value_name = "PATH"))]
    pub python: Option<PathBuf>,

    #[cfg_attr(feature = "cli", command(subcommand))]
    pub command: Option<LabCommand>,
}

#[derive(Debug)]
#[cfg_attr(feature = "cli", derive(clap::Subcommand))]
pub enum LabCommand {
    /// Re-render summary.md, the plots and index.html of a finished run from its raw.csv.
    Render {
        /// The run's directory (holding raw.csv and machine.json).
        dir: PathBuf,
    },
}

/// Runs `c10k lab` as the command line asked. `exe` is the c10k binary (for `serve`).
pub fn run(args: LabArgs, exe: &Path) -> anyhow::Result<()> {
    if let Some(LabCommand::Render { dir }) = &args.command {
        for f in render::render_dir(dir)? {
            println!("{}", dir.join(f).display());
        }
        return Ok(());
    }
    let mut matrix = match (&args.matrix, args.quick) {
        (Some(path), _) => {
            Matrix::from_file(path).map_err(|e| UsageError::new(format!("{e:#}")))?
        }
        (None, true) => Matrix::quick(),
        (None, false) => Matrix::default_matrix(),
    };
    if args.python.is_some() && args.matrix.is_none() {
        matrix.servers.extend(matrix::python_peers());
    }
    let mut command = String::from("c10k lab");
    if args.quick {
        command.push_str(" --quick");
    }
    if let Some(m) = &args.matrix {
        command.push_str(&format!(" --matrix {}", m.display()));
    }
    if let Some(p) = &args.python {
        command.push_str(&format!(" --python {}", p.display()));
    }
    let dir = run_dir(&args.out, &utc_stamp(true));
    eprintln!(
        "c10k lab: writing {}/ (--out DIR to choose another place)",
        dir.display()
    );
    let lab = Lab::new(&matrix, exe, args.python.clone())?;
    lab.run(&dir, command)?;
    println!("\nwrote {}", dir.display());
    Ok(())
}

struct Lab<'a> {
    matrix: &'a Matrix,
    exe: PathBuf,
    python: Option<PathBuf>,
    nginx: Option<PathBuf>,
    /// CPU for servers when pinning (the load generator takes the last one).
    server_cpu: Option<usize>,
}

impl<'a> Lab<'a> {
    fn new(matrix: &'a Matrix, exe: &Path, python: Option<PathBuf>) -> anyhow::Result<Lab<'a>> {
        let cpus = record::online_cpus();
        let server_cpu = (cpus >= 2).then_some(0);
        if cpus >= 2 {
            // This thread and every bench thread it starts run on the last CPU.
            servers::pin_current(cpus - 1);
        }
        Ok(Lab {
            matrix,
            exe: exe.to_owned(),
            python,
            nginx: servers::nginx_binary(),
            server_cpu,
        })
    }

    fn run(&self, dir: &Path, command: String) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let info = RunInfo {
            machine: Machine::probe(self.server_cpu.is_some()),
            command,
            started: utc_stamp(false),
        };
        std::fs::write(
            dir.join("machine.json"),
            serde_json::to_string_pretty(&info)?,
        )?;
        let m = self.matrix;
        let total = m.cells();
        eprintln!(
            "c10k lab: {total} cells, {:.0?} each (+{:.0?} warm-up) → {}",
            m.duration,
            m.warmup,
            dir.display()
        );
        let fronts = m.fronts();
        let mut rows = Vec::with_capacity(total);
        let started = Instant::now();
        for server in &m.servers {
            for &front in &fronts {
                for workload in &m.workloads {
                    for &c in &m.concurrency {
                        let row = self.cell(server, front, workload, c);
                        eprintln!("[{:>3}/{total}] {}", rows.len() + 1, progress_line(&row));
                        rows.push(row);
                        // Written after every cell: an interrupted run keeps what it measured.
                        record::write_csv(&dir.join("raw.csv"), &rows)?;
                    }
                }
            }
        }
        eprintln!("done in {:.0?}", started.elapsed());
        render::render(dir, &rows, &info)?;
        print!("{}", render::table::summary(&rows, &info));
        Ok(())
    }

    fn cell(&self, spec: &ServerSpec, front: Front, workload: &Workload, c: usize) -> Row {
        let server = spec.label();
        let mut row = Row {
            mode: front.mode(&server),
            server,
            front: front.as_str().to_owned(),
            workload: workload.to_string(),
            concurrency: c,
            duration_s: self.matrix.duration.as_secs_f64(),
            model_limit: spec.model_limit(workload, c),
            ..Row::default()
        };
        if let Err(e) = self.measure(spec, front, workload, c, &mut row) {
            row.skipped = format!("{e:#}").replace('\n', " ");
        }
        row
    }

    fn measure(
        &self,
        spec: &ServerSpec,
        front: Front,
        workload: &Workload,
        c: usize,
        row: &mut Row,
    ) -> anyhow::Result<()> {
        let tmp = tempfile::Builder::new()
            .prefix("c10k-lab-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let port = ports::free_port()?;
        let uwsgi = front == Front::NginxUwsgi;
        let mut server = self.start_server(spec, port, tmp.path(), uwsgi)?;
        let ready_path = "/";
        if uwsgi {
            // No HTTP to probe it with: listening is ready (nginx is probed below).
            server.wait_listening(addr(port), Duration::from_secs(20))?;
        } else {
            server.wait_ready(addr(port), ready_path, Duration::from_secs(20))?;
        }
        let mut nginx_proc = None;
        let target_port = if front != Front::Direct {
            let nginx = self
                .nginx
                .as_ref()
                .context("nginx is not installed (apt-get install nginx-light)")?;
            let listen = ports::free_port()?;
            let ndir = tmp.path().join("nginx");
            let upstream = if uwsgi {
                servers::Upstream::Uwsgi(port)
            } else {
                servers::Upstream::Http(port)
            };
            let conf = servers::write_nginx_conf(&ndir, listen, upstream)?;
            let mut cmd = Command::new(nginx);
            cmd.arg("-p").arg(&ndir).arg("-c").arg(&conf);
            let mut p = Process::spawn(cmd, "nginx", ndir.join("stderr.log"), self.server_cpu)?;
            p.wait_ready(addr(listen), ready_path, Duration::from_secs(10))?;
            nginx_proc = Some(p);
            listen
        } else {
            port
        };
        let plan = |d: Duration| {
            let mut p =
                c10k_bench::Plan::new(format!("http://127.0.0.1:{target_port}{}", workload.path()));
            p.requests = None;
            p.duration = Some(d);
            p.concurrency = c;
            p.threads = 1;
            p.keep_alive = true;
            p.keep_going = true;
            p.timeout = Duration::from_secs(30);
            if *workload == Workload::Write {
                p.body =
                    Some(br#"{"room":"lab","user":"bench","text":"hello from c10k lab"}"#.to_vec());
                p.content_type = Some("application/json".into());
            }
            p
        };
        if !self.matrix.warmup.is_zero() {
            // Warm up with a few clients only: requests a full-concurrency warm-up leaves queued
            // in a slow server's listen queue would be served inside the measured window, for
            // clients that are gone (a `sync` worker with 1000 queued 1 s requests is busy for
            // minutes).
            let mut warm = plan(self.matrix.warmup);
            warm.concurrency = c.min(WARMUP_CLIENTS);
            c10k_bench::run(&warm).context("warm-up")?;
            // Let what the warm-up left in flight finish.
            let probe = target_port;
            server.wait_ready(addr(probe), ready_path, Duration::from_secs(60))?;
        }
        let cpu_before = server.cpu_seconds();
        let report = c10k_bench::run(&plan(self.matrix.duration)).context("bench")?;
        row.server_cpu_s = server.cpu_seconds() - cpu_before;
        row.server_peak_rss_mib = server.peak_rss_mib();
        row.requests = report.complete_requests;
        row.failures = report.failed_requests + report.non_2xx;
        row.requests_per_s = report.requests_per_second;
        row.transaction_rate = report.siege.transaction_rate;
        row.siege_concurrency = report.siege.concurrency;
        row.p50_ms = report.latency_ms.p50;
        row.p99_ms = report.latency_ms.p99;
        row.p99_9_ms = report.latency_ms.p99_9;
        drop(nginx_proc);
        drop(server);
        Ok(())
    }

    /// Starts the server on `port`, speaking HTTP, or uwsgi when `uwsgi`.
    fn start_server(
        &self,
        spec: &ServerSpec,
        port: u16,
        dir: &Path,
        uwsgi: bool,
    ) -> anyhow::Result<Process> {
        let log = dir.join("server.log");
        if let Some(class) = &spec.worker_class {
            let scheme = if uwsgi { "uwsgi://" } else { "" };
            let mut cmd = Command::new(&self.exe);
            cmd.current_dir(dir)
                .arg("serve")
                .args(["--bind", &format!("{scheme}127.0.0.1:{port}")])
                .args(["--worker-class", class])
                .args(["--workers", &spec.workers.to_string()])
                .args(["--threads", &spec.threads.to_string()])
                .args(["--backlog", "4096", "--log-level", "warn"]);
            return Process::spawn(cmd, &spec.label(), log, self.server_cpu);
        }
        let template = if uwsgi {
            spec.uwsgi_command
                .as_deref()
                .context("this server has no uwsgi-command (it speaks no uwsgi protocol)")?
        } else {
            spec.command.as_deref().context("server without command")?
        };
        if template.contains("{python}") || !spec.requires.is_empty() {
            let python = self
                .python
                .as_ref()
                .context("needs --python PATH (a Python with the peer installed)")?;
            servers::python_has(python, &spec.requires).map_err(anyhow::Error::msg)?;
        }
        std::fs::write(dir.join("flask_app.py"), FLASK_APP)?;
        let python = self
            .python
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "python3".into());
        // {bindir}: where the Python's scripts are (a virtualenv's bin/, for `uwsgi`).
        let bindir = self
            .python
            .as_ref()
            .and_then(|p| p.parent())
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| ".".into());
        // {venv}: the virtualenv that Python belongs to (bindir's parent), for `c10k serve --venv`.
        let venv = Path::new(&bindir)
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| ".".into());
        let line = template
            .replace("{port}", &port.to_string())
            .replace("{python}", &python)
            .replace("{bindir}", &bindir)
            .replace("{venv}", &venv)
            .replace("{c10k}", &self.exe.display().to_string());
        let mut cmd = Command::new("sh");
        cmd.current_dir(dir).args(["-c", &format!("exec {line}")]);
        Process::spawn(cmd, &spec.label(), log, self.server_cpu)
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn progress_line(r: &Row) -> String {
    if r.is_measured() {
        format!(
            "{} | {} | c={} → {:.1} trans/s, p99 {:.1} ms, {} failed",
            r.mode, r.workload, r.concurrency, r.transaction_rate, r.p99_ms, r.failures
        )
    } else {
        format!(
            "{} | {} | c={} → skipped: {}",
            r.mode, r.workload, r.concurrency, r.skipped
        )
    }
}

/// UTC time as `2026-11-30-231502` (for directory names) or `2026-11-30 23:15 UTC`.
/// Where a run started at `stamp` writes: `DIR/<date-time>-lab`, as `--help` says (the suffix
/// tells lab runs apart from the scripts' `runs/<date>-NAME/`).
pub fn run_dir(out: &Path, stamp: &str) -> PathBuf {
    out.join(format!("{stamp}-lab"))
}

fn utc_stamp(for_path: bool) -> String {
    use time::macros::format_description;
    let now = time::OffsetDateTime::now_utc();
    let shown = if for_path {
        now.format(format_description!(
            "[year]-[month]-[day]-[hour][minute][second]"
        ))
    } else {
        now.format(format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
    };
    shown.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamp_shape() {
        let s = super::utc_stamp(true);
        assert_eq!(s.len(), 17, "{s}");
        assert!(s.starts_with("20"), "{s}");
    }
}
