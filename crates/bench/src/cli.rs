//! `c10k bench`'s command line: ab's flags with ab's meanings, then long-only extras. Parsing
//! (clap, then checks that name the flag) is kept apart from building the [`Plan`].

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{ArgAction, Args, Subcommand};

pub use crate::plan::parse_source_ips;

use crate::report::ab::TextOptions;
use crate::report::html::HtmlAttrs;
use crate::{hdrlog, report, stats, Measurement, Options, Plan, Progress, Report, UsageError};

/// Load-test an HTTP server (ApacheBench's flags, report and formulas; as fast as wrk).
#[derive(Debug, Clone, Args)]
#[command(
    disable_help_flag = true,
    disable_version_flag = true,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  c10k bench -n 10000 -c 50 -k http://127.0.0.1:8000/\n  \
                  c10k bench -r -n 10 -c 5 'http://127.0.0.1:3000/?delay=1'\n  \
                  c10k bench --duration 10s --rate 2000 -c 100 -k http://127.0.0.1:8000/\n  \
                  c10k bench merge host1.hdr host2.hdr"
)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,

    /// Number of requests to perform.
    // allow_negative_numbers here and below: `-n -1` is a bad value of -n, refused naming -n,
    // not an unknown flag `-1` with clap's advice to write `-- -1`.
    #[arg(short = 'n', value_name = "requests", allow_negative_numbers = true)]
    pub requests: Option<u64>,
    /// Number of multiple requests to make at a time.
    #[arg(
        short = 'c',
        value_name = "concurrency",
        allow_negative_numbers = true,
        default_value_t = 1
    )]
    pub concurrency: usize,
    /// Seconds to max. to spend on benchmarking (without -n: run until then).
    #[arg(short = 't', value_name = "timelimit", allow_negative_numbers = true)]
    pub timelimit: Option<f64>,
    /// Seconds to max. wait for each response.
    #[arg(
        short = 's',
        value_name = "timeout",
        allow_negative_numbers = true,
        default_value_t = 30.0
    )]
    pub timeout: f64,
    /// Use HTTP KeepAlive feature.
    #[arg(short = 'k')]
    pub keepalive: bool,
    /// Don't exit on socket receive errors.
    #[arg(short = 'r')]
    pub keep_going: bool,
    /// Do not show progress.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// File containing data to POST. Remember also to set -T.
    #[arg(short = 'p', value_name = "postfile")]
    pub postfile: Option<PathBuf>,
    /// File containing data to PUT. Remember also to set -T.
    #[arg(short = 'u', value_name = "putfile")]
    pub putfile: Option<PathBuf>,
    /// Content-type header to use for POST/PUT data (default text/plain).
    #[arg(short = 'T', value_name = "content-type")]
    pub content_type: Option<String>,
    /// Add arbitrary header line, eg. 'Accept-Encoding: gzip' (repeatable).
    #[arg(short = 'H', value_name = "attribute", action = ArgAction::Append)]
    pub headers: Vec<String>,
    /// Add cookie, eg. 'Apache=1234' (repeatable).
    #[arg(short = 'C', value_name = "attribute", action = ArgAction::Append)]
    pub cookies: Vec<String>,
    /// Add Basic WWW Authentication, the attributes are a colon separated username and password.
    #[arg(short = 'A', value_name = "attribute")]
    pub auth: Option<String>,
    /// Add Basic Proxy Authentication, the attributes are a colon separated username and password.
    #[arg(short = 'P', value_name = "attribute")]
    pub proxy_auth: Option<String>,
    /// Proxyserver and port number to use.
    #[arg(short = 'X', value_name = "proxy:port")]
    pub proxy: Option<String>,
    /// Size of TCP send/receive buffer, in bytes.
    #[arg(short = 'b', value_name = "windowsize", allow_negative_numbers = true)]
    pub window_size: Option<usize>,
    /// Address to bind to when making outgoing connections.
    #[arg(short = 'B', value_name = "address")]
    pub local_address: Option<String>,
    /// Method name.
    #[arg(short = 'm', value_name = "method")]
    pub method: Option<String>,
    /// Use HEAD instead of GET.
    #[arg(short = 'i')]
    pub head: bool,
    /// Accept variable document length (use this for dynamic pages).
    #[arg(short = 'l')]
    pub variable_length: bool,
    /// Do not show percentiles served table.
    #[arg(short = 'd')]
    pub no_percentiles: bool,
    /// Do not show confidence estimators and warnings.
    #[arg(short = 'S')]
    pub no_confidence: bool,
    /// Output CSV file with percentages served.
    #[arg(short = 'e', value_name = "filename")]
    pub csv_file: Option<PathBuf>,
    /// Output collected data to gnuplot format file.
    #[arg(short = 'g', value_name = "filename")]
    pub gnuplot_file: Option<PathBuf>,
    /// How much troubleshooting info to print.
    #[arg(short = 'v', value_name = "verbosity")]
    pub verbosity: Option<u32>,
    /// Print version number and exit.
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    /// Print out results in HTML tables.
    #[arg(short = 'w')]
    pub html: bool,
    /// String to insert as table attributes (implies -w, as in ab).
    #[arg(short = 'x', value_name = "attributes")]
    pub table_attributes: Option<String>,
    /// String to insert as tr attributes (implies -w).
    #[arg(short = 'y', value_name = "attributes")]
    pub tr_attributes: Option<String>,
    /// String to insert as td or th attributes (implies -w).
    #[arg(short = 'z', value_name = "attributes")]
    pub td_attributes: Option<String>,
    /// ab's TLS options (`-I`, `-Z`, `-f`, `-E`): accepted by the parser only to be refused
    /// with the reason, rather than clap's "unexpected argument" and its advice to pass them
    /// as values.
    #[command(flatten)]
    pub unsupported: Unsupported,
    /// Display usage information (this message); `--help` too, as on every other subcommand.
    #[arg(short = 'h', long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,

    /// Run this long: 10s, 500ms, 2m (like -t, without -n runs until then).
    #[arg(long, value_name = "DURATION", help_heading = "Beyond ab")]
    pub duration: Option<String>,
    /// Open loop: send R requests/second in total, latency from the intended send time.
    #[arg(long, value_name = "R", help_heading = "Beyond ab")]
    pub rate: Option<f64>,
    /// Requests in flight per connection (HTTP/1.1 pipelining; implies keep-alive).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        help_heading = "Beyond ab"
    )]
    pub pipeline: usize,
    /// Event-loop threads (default: number of cores).
    #[arg(long, value_name = "N", help_heading = "Beyond ab")]
    pub threads: Option<usize>,
    /// Speak HTTP/1.0 (default HTTP/1.1).
    #[arg(long = "http1.0", help_heading = "Beyond ab")]
    pub http10: bool,
    /// Connect over this unix socket (the URL still gives Host and path).
    #[arg(long, value_name = "PATH", help_heading = "Beyond ab")]
    pub unix: Option<PathBuf>,
    /// Read more URLs from this file, one a line (used round robin with the others).
    #[arg(long, value_name = "FILE", help_heading = "Beyond ab")]
    pub urls_file: Option<PathBuf>,
    /// Local addresses to spread connections over: 127.0.0.1-127.0.0.8 or a,b,c.
    #[arg(long, value_name = "IPS", help_heading = "Beyond ab")]
    pub source_ips: Option<String>,
    /// Run N engine processes and merge their histograms (past the per-process fd limit).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        help_heading = "Beyond ab"
    )]
    pub processes: usize,
    /// Print the report as JSON (schema: crates/bench/schema/report.schema.json).
    #[arg(long, help_heading = "Beyond ab", conflicts_with = "csv")]
    pub json: bool,
    /// Print the headline figures as CSV.
    #[arg(long, help_heading = "Beyond ab")]
    pub csv: bool,
    /// Write the latency histograms as an HdrHistogram log.
    #[arg(long, value_name = "FILE", help_heading = "Beyond ab")]
    pub hdr_out: Option<PathBuf>,
    /// Open no connection before this Unix time (seconds, e.g. $(( $(date +%s) + 10 ))), so
    /// load from several machines starts together; merge their --hdr-out logs afterwards.
    #[arg(long, value_name = "UNIX_TIME", help_heading = "Beyond ab")]
    pub start_at: Option<String>,
    /// Write the body of every 2xx response to FILE, one line each (e.g. the ids that
    /// POST /messages acknowledged).
    #[arg(long, value_name = "FILE", help_heading = "Beyond ab")]
    pub save_bodies: Option<PathBuf>,
    /// Internal: run as an engine process of --processes.
    #[arg(long, hide = true)]
    pub internal_worker: bool,

    /// The targets, used round robin.
    #[arg(
        value_name = "URL",
        help = "http://hostname[:port]/path (several: round robin)"
    )]
    pub urls: Vec<String>,
}

/// ab flags `c10k bench` does not implement; see [`BenchArgs::unsupported`].
#[derive(Debug, Clone, Default, Args)]
pub struct Unsupported {
    #[arg(short = 'I', hide = true)]
    no_sni: bool,
    #[arg(short = 'Z', hide = true)]
    ciphersuite: Option<String>,
    #[arg(short = 'f', hide = true)]
    tls_protocol: Option<String>,
    #[arg(short = 'E', hide = true)]
    certfile: Option<String>,
}

impl Unsupported {
    /// The first unsupported flag given, with why.
    fn refusal(&self) -> Option<String> {
        let tls = [
            ("-I", self.no_sni),
            ("-Z", self.ciphersuite.is_some()),
            ("-f", self.tls_protocol.is_some()),
            ("-E", self.certfile.is_some()),
        ];
        tls.iter().find(|(_, given)| *given).map(|(flag, _)| {
            format!("{flag}: TLS is not supported (c10k bench speaks plain HTTP; https URLs are refused)")
        })
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Merge HdrHistogram logs from several runs or load machines, exactly.
    Merge(MergeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Logs written by --hdr-out.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Write the merged log here.
    #[arg(long, value_name = "FILE")]
    pub hdr_out: Option<PathBuf>,
    /// Print the merged figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print help (`c10k bench` turns clap's own help flag off for ab's `-h`; this brings it
    /// back here).
    #[arg(short = 'h', long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError::new(msg).into()
}

/// Parses `10s`, `500ms`, `2m`, `1h 30m` (humantime's units) or plain seconds (`3`, `0.5`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).ok()?,
        Err(_) => humantime::parse_duration(s).ok()?,
    };
    (!d.is_zero()).then_some(d)
}

/// How far in the past `--start-at` may lie and still start (at once): the clocks of load
/// machines differ a little and a command takes a moment to launch. Further back is a mistake.
pub const START_AT_SLACK: Duration = Duration::from_secs(5);
/// How far ahead `--start-at` may lie: further is a typo (milliseconds instead of seconds?).
const START_AT_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// Parses `--start-at`: Unix time in seconds (fractions allowed), at most [`START_AT_SLACK`]
/// ago and at most a day ahead of `now`.
pub fn parse_start_at(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let at = s
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .ok_or_else(|| {
            format!(
                "--start-at {s:?}: expected a Unix time in seconds, e.g. $(( $(date +%s) + 10 ))"
            )
        })?;
    match now.duration_since(at) {
        Ok(ago) if ago > START_AT_SLACK => Err(format!(
            "--start-at {s}: that was {:.1} s ago (now is {:.1}); give a moment still to come",
            ago.as_secs_f64(),
            unix_secs(now)
        )),
        Ok(_) => Ok(at),
        Err(ahead) if ahead.duration() > START_AT_HORIZON => Err(format!(
            "--start-at {s}: {:.0} hours from now; expected Unix seconds (not milliseconds)",
            ahead.duration().as_secs_f64() / 3600.0
        )),
        Err(_) => Ok(at),
    }
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn positive_secs(flag: &str, v: f64) -> anyhow::Result<Duration> {
    match Duration::try_from_secs_f64(v) {
        Ok(d) if v > 0.0 => Ok(d),
        _ => Err(usage(format!(
            "{flag} {v}: must be a positive number of seconds"
        ))),
    }
}

fn read_body(flag: &str, p: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| usage(format!("{flag} {}: {e}", p.display())))
}

impl BenchArgs {
    /// ab's HTML report: `-w`, or any of its attribute flags (ab's `-x`, `-y`, `-z` each turn
    /// it on too).
    fn html_report(&self) -> bool {
        self.html
            || self.table_attributes.is_some()
            || self.tr_attributes.is_some()
            || self.td_attributes.is_some()
    }

    /// Checks the flags and builds the plan; errors name the flag.
    pub fn to_plan(&self) -> anyhow::Result<Plan> {
        if let Some(why) = self.unsupported.refusal() {
            return Err(usage(why));
        }
        if self.html_report() && (self.json || self.csv) {
            return Err(usage(
                "-w (or -x, -y, -z): the HTML report cannot be combined with --json or --csv",
            ));
        }
        let mut urls = self.urls.clone();
        if let Some(f) = &self.urls_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| usage(format!("--urls-file {}: {e}", f.display())))?;
            urls.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        if urls.is_empty() {
            return Err(usage(
                "URL: a URL is required (http://hostname[:port]/path)",
            ));
        }
        let mut plan = Plan::new(urls[0].clone());
        plan.urls = urls;
        if self.requests == Some(0) {
            return Err(usage("-n 0: Invalid number of requests"));
        }
        if self.concurrency == 0 {
            return Err(usage("-c 0: Invalid Concurrency"));
        }
        let timelimit = self.timelimit.map(|t| positive_secs("-t", t)).transpose()?;
        let duration = match &self.duration {
            Some(d) => Some(parse_duration(d).ok_or_else(|| {
                usage(format!(
                    "--duration {d:?}: expected a time like 10s, 500ms or 2m"
                ))
            })?),
            None => None,
        };
        plan.duration = match (timelimit, duration) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        plan.requests = match (self.requests, plan.duration) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            // ab's default: one request.
            (None, None) => Some(1),
        };
        if let Some(n) = plan.requests {
            if self.concurrency as u64 > n {
                return Err(usage(
                    "-c: Cannot use concurrency level greater than total number of requests",
                ));
            }
        }
        plan.concurrency = self.concurrency;
        plan.timeout = positive_secs("-s", self.timeout)?;
        plan.keep_alive = self.keepalive;
        plan.keep_going = self.keep_going;
        plan.http10 = self.http10;
        if self.pipeline == 0 || self.pipeline > 1024 {
            return Err(usage(format!(
                "--pipeline {}: must be between 1 and 1024",
                self.pipeline
            )));
        }
        plan.pipeline = self.pipeline;
        if let Some(r) = self.rate {
            if !(r.is_finite() && r >= 0.001) {
                return Err(usage(format!(
                    "--rate {r}: must be at least 0.001 requests per second"
                )));
            }
            if self.pipeline > 1 {
                return Err(usage("--rate cannot be combined with --pipeline"));
            }
            plan.rate = Some(r);
        }
        plan.threads = match self.threads {
            Some(0) => return Err(usage("--threads 0: must be at least 1")),
            Some(t) => t,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.processes == 0 {
            return Err(usage("--processes 0: must be at least 1"));
        }
        if self.processes > self.concurrency {
            return Err(usage("--processes: cannot exceed -c"));
        }
        match (&self.postfile, &self.putfile, self.head) {
            (Some(_), Some(_), _) => return Err(usage("-p and -u: Cannot mix POST and PUT")),
            (Some(_), _, true) | (_, Some(_), true) => {
                return Err(usage("-i: Cannot mix HEAD with POST or PUT"))
            }
            (Some(p), None, false) => plan.body = Some(read_body("-p", p)?),
            (None, Some(p), false) => {
                plan.body = Some(read_body("-u", p)?);
                plan.method = Some("PUT".into());
            }
            (None, None, _) => {}
        }
        plan.head = self.head;
        if let Some(m) = &self.method {
            if m.is_empty()
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
            {
                return Err(usage(format!("-m {m:?}: not a valid method name")));
            }
            plan.method = Some(m.clone());
        }
        plan.content_type.clone_from(&self.content_type);
        for h in &self.headers {
            match h.split_once(':') {
                Some((name, _)) if !name.trim().is_empty() && !h.contains(['\r', '\n']) => {}
                _ => return Err(usage(format!("-H {h:?}: expected 'Name: value'"))),
            }
        }
        plan.headers.clone_from(&self.headers);
        plan.cookies.clone_from(&self.cookies);
        for (flag, v) in [("-A", &self.auth), ("-P", &self.proxy_auth)] {
            if let Some(a) = v {
                if !a.contains(':') {
                    return Err(usage(format!("{flag}: expected user:password")));
                }
            }
        }
        plan.basic_auth.clone_from(&self.auth);
        plan.proxy_auth.clone_from(&self.proxy_auth);
        plan.proxy.clone_from(&self.proxy);
        plan.variable_length = self.variable_length;
        plan.unix.clone_from(&self.unix);
        let mut ips = Vec::new();
        // An address is bound as given; a host name is resolved with the target (see
        // `Plan::local_host`).
        match self
            .local_address
            .as_deref()
            .map(|b| (b, b.parse::<IpAddr>()))
        {
            Some((_, Ok(ip))) => ips.push(ip),
            Some(("", Err(_))) => return Err(usage("-B: empty address")),
            Some((b, Err(_))) => plan.local_host = Some(b.to_string()),
            None => {}
        }
        if let Some(s) = &self.source_ips {
            ips.extend(parse_source_ips(s).ok_or_else(|| {
                usage(format!(
                    "--source-ips {s:?}: expected 127.0.0.1-127.0.0.8 or a comma list"
                ))
            })?);
        }
        plan.source_ips = ips;
        plan.record_samples = self.gnuplot_file.is_some();
        if plan.record_samples && self.processes > 1 {
            return Err(usage("-g cannot be combined with --processes"));
        }
        plan.verbosity = self.verbosity.unwrap_or(0);
        if let Some(s) = &self.start_at {
            plan.start_at = Some(parse_start_at(s, SystemTime::now()).map_err(usage)?);
        }
        plan.save_bodies.clone_from(&self.save_bodies);
        // ab: 0 leaves the OS default.
        plan.window_size = self.window_size.filter(|&w| w > 0);
        crate::plan::Prepared::new(&plan)?;
        Ok(plan)
    }
}

/// Runs `c10k bench` with parsed flags.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.version {
        println!(
            "This is c10k bench {}, ApacheBench 2.3 compatible",
            env!("CARGO_PKG_VERSION")
        );
        return Ok(());
    }
    if let Some(BenchCommand::Merge(m)) = &args.command {
        return merge(m);
    }
    if args.internal_worker {
        return worker();
    }
    let plan = args.to_plan()?;
    {
        // Refuse what the fd limit or port range cannot hold before printing anything.
        let mut share = plan.clone();
        share.concurrency = plan.concurrency.div_ceil(args.processes);
        crate::sys::check_limits(&share)?;
    }
    if let Some(path) = &plan.save_bodies {
        // Start empty; the engine threads (and processes) then append whole lines.
        std::fs::File::create(path)
            .map_err(|e| usage(format!("--save-bodies {}: {e}", path.display())))?;
    }
    if let Some(at) = plan.start_at {
        if let (Ok(left), false) = (at.duration_since(SystemTime::now()), args.quiet) {
            let secs = unix_secs(at);
            eprintln!(
                "Waiting {:.1} s to start at {} UTC ({secs:.3})",
                left.as_secs_f64(),
                ctime(secs as u64)
            );
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let text = !args.json && !args.csv;
    let html = args.html_report();
    // On a terminal, a bar that fits it; elsewhere ab's own lines. Both read the engine's
    // counters, so they are for a single engine process (--processes N shows none).
    let progress = if args.quiet || args.processes > 1 {
        Progress::Off
    } else if std::io::stderr().is_terminal() {
        Progress::Bar
    } else if text {
        match crate::progress::ab_heartbeat(plan.requests) {
            0 => Progress::Off,
            every => Progress::Heartbeat(every),
        }
    } else {
        Progress::Off
    };
    let host = crate::plan::Url::parse(&plan.urls[0])
        .map(|u| u.host)
        .unwrap_or_default();
    // "Benchmarking HOST (be patient)" and what ab puts after it: a newline before heartbeat
    // lines, "..." before "..done".
    let intro = |out: &mut std::io::StdoutLock| -> std::io::Result<()> {
        write!(out, "Benchmarking {host} ")?;
        if let Some(p) = &plan.proxy {
            write!(out, "[through {p}] ")?;
        }
        match progress {
            Progress::Heartbeat(_) => writeln!(out, "(be patient)")?,
            _ => write!(out, "(be patient)...")?,
        }
        out.flush()
    };
    if html {
        // ab's -w: an HTML banner and no "Benchmarking" line; "..done" as in text.
        report::html::write_banner(&mut out)?;
        out.flush()?;
    } else if text {
        report::ab::write_banner(&mut out)?;
        // With a bar, the line is written once the bar is gone, so the two never share a line.
        if progress != Progress::Bar {
            intro(&mut out)?;
        }
        out.flush()?;
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    // A first Ctrl-C ends the run and prints the report (as ab does); a second one exits.
    let _ = signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        1,
        interrupt.clone(),
    );
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, interrupt.clone());
    // The log's start: when the first connection may open.
    let start = plan
        .start_at
        .map_or_else(SystemTime::now, |at| at.max(SystemTime::now()));
    let (m, samples) = if args.processes > 1 {
        let exe = std::env::current_exe().context("locating the c10k binary")?;
        (crate::procs::run(&plan, args.processes, &exe)?, Vec::new())
    } else {
        let opts = Options {
            progress,
            interrupt: Some(interrupt),
        };
        let o = crate::measure(&plan, &opts)?;
        (o.measurement, o.samples)
    };
    if text && !html && progress == Progress::Bar {
        intro(&mut out)?;
    }
    if let Some(why) = &m.aborted {
        if text && !matches!(progress, Progress::Heartbeat(_)) {
            writeln!(out)?;
        }
        out.flush()?;
        eprintln!("{why}");
        // As ab: the count only when some request got its answer.
        let answered: u64 = m.statuses.values().sum();
        if answered > 0 {
            writeln!(out, "Total of {answered} requests completed")?;
            out.flush()?;
        }
        if args.json {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&Report::new(&plan, &m))?
            )?;
        }
        anyhow::bail!("the run was aborted");
    }
    let r = Report::new(&plan, &m);
    if let Progress::Heartbeat(_) = progress {
        out.flush()?;
        eprintln!("Finished {} requests", m.completed);
    }
    if text {
        match progress {
            Progress::Heartbeat(_) => writeln!(out, "\n")?,
            _ => writeln!(out, "..done\n\n")?,
        }
        if html {
            let defaults = HtmlAttrs::default();
            let attrs = HtmlAttrs {
                table: args.table_attributes.clone().unwrap_or(defaults.table),
                tr: args.tr_attributes.clone().unwrap_or(defaults.tr),
                td: args.td_attributes.clone().unwrap_or(defaults.td),
            };
            report::html::write_report(&r, &attrs, &mut out)?;
        } else {
            let o = TextOptions {
                percentiles: !args.no_percentiles,
                confidence: !args.no_confidence,
            };
            report::ab::write_report(&r, &o, &mut out)?;
        }
    } else if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
    } else {
        report::csv::write_csv(&r, &mut out)?;
    }
    out.flush()?;
    if let Some(path) = &args.csv_file {
        write_percentage_csv(path, &m)?;
    }
    if let Some(path) = &args.gnuplot_file {
        write_gnuplot(path, samples)?;
    }
    if let Some(path) = &args.hdr_out {
        let mut f =
            std::fs::File::create(path).with_context(|| format!("--hdr-out {}", path.display()))?;
        hdrlog::write_log(
            &mut f,
            &hdrlog::tagged(&m),
            start,
            Duration::from_micros(m.elapsed_us),
        )?;
    }
    Ok(())
}

/// ab's `-e` file: the time within which each percentage of requests was served.
fn write_percentage_csv(path: &PathBuf, m: &Measurement) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("-e {}", path.display()))?,
    );
    writeln!(f, "Percentage served,Time in ms")?;
    for p in 0..=100 {
        let us = stats::ab_csv_percentile(&m.total, p);
        writeln!(f, "{p},{:.3}", us as f64 / 1000.0)?;
    }
    f.flush()?;
    Ok(())
}

/// ab's `-g` file: one line per request, sorted by total time as ab sorts it.
fn write_gnuplot(path: &PathBuf, mut samples: Vec<crate::Sample>) -> anyhow::Result<()> {
    samples.sort_by_key(|s| s.total_us);
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("-g {}", path.display()))?,
    );
    writeln!(f, "starttime\tseconds\tctime\tdtime\tttime\twait")?;
    for s in samples {
        let secs = s.start_unix_us / 1_000_000;
        writeln!(
            f,
            "{}\t{}\t{}\t{}\t{}\t{}",
            ctime(secs),
            secs,
            stats::round_ms(s.ctime_us),
            stats::round_ms(s.total_us.saturating_sub(s.ctime_us)),
            stats::round_ms(s.total_us),
            stats::round_ms(s.wait_us)
        )?;
    }
    f.flush()?;
    Ok(())
}

/// `Sat Dec 05 21:44:42 2026` (UTC), the shape of apr_ctime: the day is zero-padded, unlike
/// C's ctime (ab's `-g` file shows `Dec 05`).
fn ctime(unix: u64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day] [hour]:[minute]:[second] [year]"
    );
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| format!("{unix} (Unix time)"))
}

/// `c10k bench --internal-worker`: one engine process of `--processes`.
fn worker() -> anyhow::Result<()> {
    let mut input = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)?;
    let plan: Plan = serde_json::from_slice(&input).context("reading the plan")?;
    // Ctrl-C reaches the whole process group: stop early and hand back what was measured.
    let interrupt = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, interrupt.clone());
    let opts = Options {
        progress: Progress::Off,
        interrupt: Some(interrupt),
    };
    let o = crate::measure(&plan, &opts)?;
    serde_json::to_writer(std::io::stdout().lock(), &o.measurement)?;
    Ok(())
}

/// `c10k bench merge FILE...`.
fn merge(args: &MergeArgs) -> anyhow::Result<()> {
    let merged = hdrlog::merge_files(&args.files)?;
    let total = merged
        .get("total")
        .context("the logs hold no `total` histogram")?;
    let q = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    let figures = serde_json::json!({
        "files": args.files.len(),
        "count": total.len(),
        "min_ms": total.min() as f64 / 1000.0,
        "mean_ms": total.mean() / 1000.0,
        "stdev_ms": total.stdev() / 1000.0,
        "p50_ms": q(0.5), "p75_ms": q(0.75), "p90_ms": q(0.9), "p95_ms": q(0.95),
        "p99_ms": q(0.99), "p99_9_ms": q(0.999), "p99_99_ms": q(0.9999),
        "max_ms": total.max() as f64 / 1000.0,
    });
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&figures)?)?;
    } else {
        writeln!(
            out,
            "Merged {} logs: {} responses",
            args.files.len(),
            total.len()
        )?;
        writeln!(out)?;
        writeln!(out, "Latency distribution (ms, HdrHistogram):")?;
        for key in [
            "min", "mean", "stdev", "p50", "p75", "p90", "p95", "p99", "p99_9", "p99_99", "max",
        ] {
            let v = figures[format!("{key}_ms")].as_f64().unwrap_or(0.0);
            writeln!(out, "  {:<7}{v:12.3}", key.replace('_', "."))?;
        }
    }
    if let Some(path) = &args.hdr_out {
        let mut f =
            std::fs::File::create(path).with_context(|| format!("--hdr-out {}", path.display()))?;
        hdrlog::write_log(&mut f, &merged, SystemTime::now(), Duration::ZERO)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ips() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("1e300h"), None);
        assert_eq!(parse_duration("NaN"), None);
        let ips = parse_source_ips("127.0.0.1-127.0.0.3").unwrap();
        assert_eq!(ips.len(), 3);
        assert_eq!(ips[2], "127.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(parse_source_ips("127.0.0.2,::1").unwrap().len(), 2);
        assert!(parse_source_ips("127.0.0.3-127.0.0.1").is_none());
        assert!(parse_source_ips("nope").is_none());
    }

    #[test]
    fn start_at_takes_unix_seconds_near_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s| parse_start_at(s, now);
        assert_eq!(at("1800000010"), Ok(now + Duration::from_secs(10)));
        assert_eq!(at(" 1800000000.25 "), Ok(now + Duration::from_millis(250)));
        // A moment just past (clock skew, launch time) starts at once; further back is refused.
        assert_eq!(at("1799999997"), Ok(now - Duration::from_secs(3)));
        let e = at("1799999990").unwrap_err();
        assert!(
            e.starts_with("--start-at 1799999990: that was 10.0 s ago"),
            "{e}"
        );
        // Milliseconds by mistake, and malformed values, name the flag.
        let e = at("1800000000000").unwrap_err();
        assert!(e.contains("not milliseconds"), "{e}");
        for bad in ["soon", "", "-5", "NaN", "inf", "1e400", "12:00"] {
            let e = at(bad).unwrap_err();
            assert!(
                e.starts_with("--start-at") && e.contains("Unix time"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn ctime_formats_like_apr() {
        assert_eq!(ctime(0), "Thu Jan 01 00:00:00 1970");
        assert_eq!(ctime(1_796_507_082), "Sat Dec 05 21:44:42 2026");
        assert_eq!(ctime(1_796_078_306), "Mon Nov 30 22:38:26 2026");
    }
}
