//! Starting and stopping what a cell measures: `c10k serve` (this binary), an external command,
//! and nginx in front of either (an `upstream` block written to a temp directory).
//!
//! Servers are pinned to CPU 0 and the load generator (this process) to the last CPU when the
//! machine has two or more, so they do not fight over one core and the figures are repeatable.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A started process tree; stopped (TERM, then KILL) on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    what: String,
    /// Where the process's stderr goes, for error messages.
    log: PathBuf,
}

impl Process {
    pub fn spawn(
        mut cmd: Command,
        what: &str,
        log: PathBuf,
        pin: Option<usize>,
    ) -> anyhow::Result<Process> {
        let err = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(err.try_clone()?)
            .stderr(err)
            .process_group(0);
        if let Some(cpu) = pin {
            // SAFETY: only sched_setaffinity (a plain syscall) runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    pin_current(cpu);
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        Ok(Process {
            child,
            what: what.to_owned(),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the process wrote, for "why did it not start" messages.
    pub fn tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Waits until `GET path` on `addr` answers at all (any status), or fails with the log.
    pub fn wait_ready(
        &mut self,
        addr: SocketAddr,
        path: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}) before answering:\n{}",
                    self.what,
                    self.tail()
                );
            }
            if answers(addr, path) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{} did not answer on {addr} within {limit:?}:\n{}",
                    self.what,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `addr` accepts connections (for a server that speaks no HTTP to probe).
    pub fn wait_listening(&mut self, addr: SocketAddr, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}) before listening:\n{}",
                    self.what,
                    self.tail()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{} did not listen on {addr} within {limit:?}:\n{}",
                    self.what,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU seconds (user + system) used so far by the process and its children.
    pub fn cpu_seconds(&self) -> f64 {
        tree(self.pid()).iter().map(|&p| proc_cpu_seconds(p)).sum()
    }

    /// Sum over the process tree of each process's peak resident set (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        tree(self.pid())
            .iter()
            .map(|&p| proc_hwm_kib(p))
            .sum::<u64>() as f64
            / 1024.0
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pgid = self.child.id() as i32;
        // SAFETY: kill has no memory-safety preconditions; the group is the one we created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Reap what is left of the group (workers of a python master, say).
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answers(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.0\r\nHost: lab\r\n\r\n");
    if std::io::Write::write_all(&mut s, req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n >= 9 && buf.starts_with(b"HTTP/1."))
}

/// Pins the calling thread (and what it later spawns) to one CPU.
pub fn pin_current(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the calls only read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// `pid` and all its descendants (from /proc).
fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(pp) = stat_field(p, 4).and_then(|v| v.parse().ok()) {
                parents.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(n - 3).map(str::to_owned)
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let field = |n| {
        stat_field(pid, n)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (field(14) + field(15)) / ticks
}

fn proc_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// nginx in front of an upstream, from a config the lab writes.
pub fn nginx_binary() -> Option<PathBuf> {
    [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .or_else(|| which("nginx"))
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The server behind nginx, on a loopback port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// HTTP/1.1 with upstream keep-alive (`proxy_pass`).
    Http(u16),
    /// The uwsgi protocol (`uwsgi_pass`), one connection per request as nginx does it.
    Uwsgi(u16),
}

/// nginx's stock `uwsgi_params`, as shipped with nginx (written beside the config so the lab
/// does not depend on where, or in which distribution's variant, the system keeps its copy).
pub const UWSGI_PARAMS: &str = "\
uwsgi_param  QUERY_STRING       $query_string;
uwsgi_param  REQUEST_METHOD     $request_method;
uwsgi_param  CONTENT_TYPE       $content_type;
uwsgi_param  CONTENT_LENGTH     $content_length;
uwsgi_param  REQUEST_URI        $request_uri;
uwsgi_param  PATH_INFO          $document_uri;
uwsgi_param  DOCUMENT_ROOT      $document_root;
uwsgi_param  SERVER_PROTOCOL    $server_protocol;
uwsgi_param  REQUEST_SCHEME     $scheme;
uwsgi_param  HTTPS              $https if_not_empty;
uwsgi_param  REMOTE_ADDR        $remote_addr;
uwsgi_param  REMOTE_PORT        $remote_port;
uwsgi_param  SERVER_PORT        $server_port;
uwsgi_param  SERVER_NAME        $server_name;
";

/// Writes an nginx config in front of `upstream` as a production front would be set up: an
/// HTTP proxy with upstream keep-alive, or `include uwsgi_params; uwsgi_pass`.
pub fn write_nginx_conf(dir: &Path, listen: u16, upstream: Upstream) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("logs"))?;
    let (port, keepalive, location) = match upstream {
        Upstream::Http(port) => (
            port,
            "keepalive 256;",
            "proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $host;
      proxy_read_timeout 120s;",
        ),
        Upstream::Uwsgi(port) => {
            std::fs::write(dir.join("uwsgi_params"), UWSGI_PARAMS)?;
            (
                port,
                // nginx cannot keep a uwsgi upstream connection alive.
                "",
                "include uwsgi_params;
      uwsgi_pass app;
      uwsgi_read_timeout 120s;",
            )
        }
    };
    let conf = format!(
        r#"worker_processes 1;
daemon off;
error_log {dir}/logs/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  upstream app {{
    server 127.0.0.1:{port};
    {keepalive}
  }}
  server {{
    listen 127.0.0.1:{listen} backlog=4096;
    location / {{
      {location}
    }}
  }}
}}
"#,
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

/// Whether `python` can import every module in `modules`.
pub fn python_has(python: &Path, modules: &[String]) -> Result<(), String> {
    for m in modules {
        let ok = Command::new(python)
            .args(["-c", &format!("import {m}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!("{} cannot import {m}", python.display()));
        }
    }
    Ok(())
}
