//! The examples in `deploy/` as they are used: `nginx -t` on each nginx site; `systemd-analyze
//! verify` on the systemd units and the service's command run under `systemd-socket-activate`;
//! the Kubernetes manifest parsed, its probes, ports and stop timing checked against the args it
//! gives `c10k serve`, and a server started with those args asked what the kubelet asks.
//! (`scripts/cluster.sh` runs the nginx proxy site for real, as its balancer's configuration.)

mod util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use util::get;
use util::ports::free_addr;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The lines of a config file without comments.
fn directives(text: &str) -> String {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of `--flag V` or `--flag=V` in a command line.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&eq)
        }
    })
}

fn secs(args: &[String], name: &str) -> f64 {
    flag(args, name)
        .unwrap_or_else(|| panic!("{name} missing from {args:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{name}: not a number of seconds"))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap()
}

/// A minimal main nginx configuration in `dir` that includes `site`.
fn nginx_conf(site: &Path, dir: &Path) -> PathBuf {
    let params = dir.join("uwsgi_params");
    if std::fs::copy("/etc/nginx/uwsgi_params", &params).is_err() {
        std::fs::write(
            &params,
            "uwsgi_param REQUEST_METHOD $request_method;\n\
             uwsgi_param REQUEST_URI $request_uri;\nuwsgi_param PATH_INFO $document_uri;\n\
             uwsgi_param QUERY_STRING $query_string;\nuwsgi_param SERVER_PROTOCOL $server_protocol;\n",
        )
        .unwrap();
    }
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nworker_processes 1;\nevents {{}}\n\
             http {{\naccess_log off;\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             include {};\n}}\n",
            site.display()
        ),
    )
    .unwrap();
    conf
}

/// `nginx -t` on `site` inside a minimal main configuration in `dir`.
fn nginx_t(site: &Path, dir: &Path) -> (bool, String) {
    let conf = nginx_conf(site, dir);
    let o = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run nginx -t");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn nginx_sites_pass_nginx_t() {
    if !have("nginx") {
        eprintln!("skipped: nginx is not installed (.ci/run installs it)");
        return;
    }
    for site in ["nginx/c10k-proxy.conf", "nginx/c10k-uwsgi.conf"] {
        let dir = tempfile::tempdir().unwrap();
        let (ok, out) = nginx_t(&deploy(site), dir.path());
        assert!(ok, "deploy/{site}: {out}");
        // The check can fail: a copy with one `;` missing is refused.
        let broken = dir.path().join("broken.conf");
        std::fs::write(&broken, read(site).replacen("least_conn;", "least_conn", 1)).unwrap();
        let (ok, _) = nginx_t(&broken, dir.path());
        assert!(!ok, "deploy/{site}: nginx -t accepted a broken copy");
    }
}

#[test]
fn nginx_sites_balance_and_retry_only_what_is_safe() {
    for (site, next) in [
        ("nginx/c10k-proxy.conf", "proxy_next_upstream "),
        ("nginx/c10k-uwsgi.conf", "uwsgi_next_upstream "),
    ] {
        let d = directives(&read(site));
        for want in ["least_conn;", "max_fails=", "fail_timeout=", next] {
            assert!(d.contains(want), "deploy/{site}: no {want}");
        }
        // nginx re-sends a POST that reached a host only with `non_idempotent`: never here.
        assert!(!d.contains("non_idempotent"), "deploy/{site}");
    }
    let d = directives(&read("nginx/c10k-proxy.conf"));
    for want in [
        "keepalive 64;",
        "proxy_http_version 1.1;",
        "proxy_set_header Connection \"\";",
    ] {
        assert!(d.contains(want), "c10k-proxy.conf: no {want}");
    }
    // nginx must drop an idle upstream connection before c10k does, or it may send a request
    // on a connection the host is closing.
    let idle: f64 = d
        .lines()
        .find_map(|l| l.trim().strip_prefix("keepalive_timeout "))
        .and_then(|v| v.trim_end_matches(';').trim_end_matches('s').parse().ok())
        .expect("c10k-proxy.conf: keepalive_timeout Ns;");
    let c10k_idle = c10k_serve::ServeConfig::default().keepalive;
    assert!(
        idle < c10k_idle,
        "upstream keepalive_timeout {idle}s must be below c10k's --keepalive {c10k_idle}s"
    );
}

/// `ExecStart=` of a unit, continuation lines joined, split into words.
fn exec_start(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    line.split_whitespace().map(String::from).collect()
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn systemd_units_verify_and_stop_in_time() {
    let service = read("systemd/c10k.service");
    let args = exec_start(&service);
    assert_eq!(args.get(1).map(String::as_str), Some("serve"), "{args:?}");
    assert!(
        flag(&args, "--database").is_none(),
        "the database URL (a secret) belongs in the EnvironmentFile, not the command line"
    );
    // systemd kills what is left after TimeoutStopSec: a clean stop (drain, in-flight requests,
    // the journals' last flush of up to 5 s) must fit.
    let stop: f64 = unit_value(&service, "TimeoutStopSec")
        .and_then(|v| v.parse().ok())
        .expect("TimeoutStopSec=N");
    let need = secs(&args, "--drain-delay") + secs(&args, "--graceful-timeout") + 5.0;
    assert!(stop > need, "TimeoutStopSec={stop} must exceed {need}");
    assert_eq!(unit_value(&service, "KillMode"), Some("mixed"));
    let socket = read("systemd/c10k.socket");
    assert!(unit_value(&socket, "ListenStream").is_some());

    if !have("systemd-analyze") {
        eprintln!("skipped systemd-analyze verify: not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c10k.socket"), &socket).unwrap();
    std::fs::write(
        dir.path().join("c10k.service"),
        service.replace("/usr/local/bin/c10k", env!("CARGO_BIN_EXE_c10k")),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "./c10k.socket", "./c10k.service"])
        .current_dir(dir.path())
        .output()
        .expect("run systemd-analyze");
    let err = String::from_utf8_lossy(&o.stderr);
    // It reports a bad line of a unit file as a warning and still exits 0: look at both.
    let about_ours: Vec<&str> = err.lines().filter(|l| l.contains("c10k.s")).collect();
    assert!(
        o.status.success() && about_ours.is_empty(),
        "systemd-analyze verify: {err}"
    );
}

fn docs(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(serde_yaml::Value::deserialize)
        .collect::<Result<_, _>>()
        .expect("deploy/kubernetes/c10k.yaml parses as YAML")
}

fn kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in c10k.yaml"))
}

#[test]
fn kubernetes_probes_ports_and_stop_timing_match_the_args() {
    let docs = docs(&read("kubernetes/c10k.yaml"));
    let deployment = kind(&docs, "Deployment");
    let service = kind(&docs, "Service");
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<String> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("args are strings").to_owned())
        .collect();
    assert_eq!(args[0], "serve");
    let ports: BTreeMap<&str, u64> = c["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("named port"),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    let port = |v: &serde_yaml::Value| -> u64 {
        match v {
            serde_yaml::Value::String(name) => *ports
                .get(name.as_str())
                .unwrap_or_else(|| panic!("no port named {name}")),
            v => v.as_u64().expect("a port"),
        }
    };
    let bind = u64::from(port_of(flag(&args, "--bind").expect("--bind")));
    let admin = u64::from(port_of(flag(&args, "--admin").expect("--admin")));
    assert_eq!(ports["http"], bind, "containerPort http vs --bind");
    assert_eq!(ports["admin"], admin, "containerPort admin vs --admin");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            port(&get["port"]),
            admin,
            "{probe} must ask the admin listener"
        );
    }
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert_eq!(port(target), bind, "the Service must send to --bind");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    // The kubelet kills at terminationGracePeriodSeconds, counted from the start of preStop: the
    // sleep, --drain-delay, --graceful-timeout and the journals' last flush (up to 5 s) must fit.
    let pre_stop: f64 = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .and_then(|cmd| cmd.last())
        .and_then(|s| s.as_str())
        .and_then(|s| s.parse().ok())
        .expect("preStop: sleep N");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_f64()
        .expect("grace");
    let need = pre_stop + secs(&args, "--drain-delay") + secs(&args, "--graceful-timeout") + 5.0;
    assert!(
        grace > need,
        "terminationGracePeriodSeconds {grace} must exceed {need}"
    );
    // Secrets come from Secrets, never from the args: the database URL, and the admin token
    // c10k requires when --admin is beyond loopback.
    assert!(flag(&args, "--database").is_none() && flag(&args, "--admin-token").is_none());
    let env = c["env"].as_sequence().expect("env");
    let from_secret = |name: &str| {
        env.iter()
            .any(|e| e["name"].as_str() == Some(name) && !e["valueFrom"]["secretKeyRef"].is_null())
    };
    assert!(from_secret("C10K_DATABASE"));
    let admin_ip: std::net::IpAddr = flag(&args, "--admin")
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(ip, _)| ip.parse().ok())
        .expect("--admin IP:PORT");
    assert!(admin_ip.is_loopback() || from_secret("C10K_ADMIN_TOKEN"));
}

/// `args` with `--NAME V` / `--NAME=V` replaced by `--NAME=value`.
fn with_flag(args: &[String], name: &str, value: &str) -> Vec<String> {
    let eq = format!("{name}=");
    let mut out = Vec::new();
    let mut it = args.iter();
    let mut found = false;
    while let Some(a) = it.next() {
        if a == name {
            it.next();
        } else if !a.starts_with(&eq) {
            out.push(a.clone());
            continue;
        }
        out.push(format!("{name}={value}"));
        found = true;
    }
    assert!(found, "{name} missing from {args:?}");
    out
}

/// A server process (its own process group), killed with its workers when dropped.
struct Running(Child);

impl Running {
    fn start(program: &str, args: &[String]) -> Running {
        let child = Command::new(program)
            .args(args)
            .env("C10K_LOG", "warn")
            .env_remove("C10K_DATABASE")
            .env_remove("C10K_BIND")
            .env_remove("C10K_ADMIN")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        Running(child)
    }

    fn term(&self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: as above; the group is the one the child leads.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Waits until `GET path` at `addr` answers `want`.
fn wait_for_status(addr: SocketAddr, path: &str, want: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if get(addr, path).is_ok_and(|r| r.status == want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn kubernetes_args_start_a_server_whose_probes_answer_and_drain() {
    let docs = docs(&read("kubernetes/c10k.yaml"));
    let c = &kind(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("args are strings").to_owned())
        .collect();
    let ready = c["readinessProbe"]["httpGet"]["path"].as_str().unwrap();
    let live = c["livenessProbe"]["httpGet"]["path"].as_str().unwrap();
    // The same args, on loopback ports of this machine and a temp data dir.
    let (bind, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let args = with_flag(&args, "--bind", &bind.to_string());
    let args = with_flag(&args, "--admin", &admin.to_string());
    let args = with_flag(&args, "--data-dir", dir.path().to_str().unwrap());
    let mut s = Running::start(env!("CARGO_BIN_EXE_c10k"), &args);
    assert!(
        wait_for_status(admin, ready, 200, Duration::from_secs(20)),
        "{ready} never answered 200"
    );
    assert_eq!(get(admin, live).unwrap().status, 200, "{live}");
    assert_eq!(get(bind, "/").unwrap().status, 200);
    // What the kubelet does after preStop: SIGTERM. Readiness turns 503 while requests are still
    // served for --drain-delay.
    s.term();
    assert!(
        wait_for_status(admin, ready, 503, Duration::from_secs(2)),
        "{ready} did not turn 503 on SIGTERM"
    );
    assert_eq!(
        get(admin, live).unwrap().status,
        200,
        "alive while draining"
    );
    assert_eq!(get(bind, "/").unwrap().status, 200, "served while draining");
    // A second SIGTERM ends the delay: a graceful stop.
    s.term();
    let st = s
        .wait_exit(Duration::from_secs(20))
        .expect("the server stopped");
    assert!(st.success(), "{st}");
}

#[test]
fn systemd_service_serves_the_socket_units_listener() {
    if !have("systemd-socket-activate") {
        eprintln!("skipped: systemd-socket-activate is not installed");
        return;
    }
    let service = read("systemd/c10k.service");
    let socket = read("systemd/c10k.socket");
    assert!(
        unit_value(&socket, "ListenStream").is_some_and(|l| l.ends_with(":8000")),
        "c10k.socket"
    );
    let args = exec_start(&service);
    // ExecStart as systemd runs it, with the socket on a loopback port of this machine.
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let args = with_flag(&args[1..], "--admin", &admin.to_string());
    let args = with_flag(&args, "--data-dir", dir.path().to_str().unwrap());
    let mut cmd = vec![
        "-l".to_owned(),
        listen.to_string(),
        env!("CARGO_BIN_EXE_c10k").to_owned(),
    ];
    cmd.extend(args);
    let mut s = Running::start("systemd-socket-activate", &cmd);
    assert!(
        wait_for_status(listen, "/", 200, Duration::from_secs(20)),
        "no answer on the passed socket"
    );
    assert_eq!(get(listen, "/").unwrap().text(), "hello\n");
    assert!(wait_for_status(
        admin,
        "/readyz",
        200,
        Duration::from_secs(10)
    ));
    s.term();
    assert!(wait_for_status(
        admin,
        "/readyz",
        503,
        Duration::from_secs(2)
    ));
    s.term();
    let st = s
        .wait_exit(Duration::from_secs(20))
        .expect("the server stopped");
    assert!(st.success(), "{st}");
}

/// A site file with its upstream's first server line aimed at `upstream` (parameters kept) and
/// `listen 80;` at `listen`: what an operator edits when installing it.
fn aim_site(text: &str, upstream: SocketAddr, listen: SocketAddr) -> String {
    let mut out = String::new();
    let mut aimed = false;
    for line in text.lines() {
        let t = line.trim_start();
        if !aimed && t.starts_with("server ") && t.contains("max_fails") {
            let params = t.split_once(' ').map_or("", |(_, r)| r);
            let params = params.split_once(' ').map_or(";", |(_, r)| r);
            out.push_str(&format!("    server {upstream} {params}\n"));
            aimed = true;
        } else if t == "listen 80;" {
            out.push_str(&format!("    listen {listen};\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(aimed, "no upstream server line");
    out
}

/// Each nginx site in front of a real c10k: HTTP with upstream keep-alive, and the uwsgi
/// protocol (`--bind uwsgi://`).
#[test]
fn nginx_sites_front_a_real_c10k() {
    if !have("nginx") {
        eprintln!("skipped: nginx is not installed (.ci/run installs it)");
        return;
    }
    for (site, scheme) in [
        ("nginx/c10k-proxy.conf", ""),
        ("nginx/c10k-uwsgi.conf", "uwsgi://"),
    ] {
        let (upstream, listen, admin) = (free_addr(), free_addr(), free_addr());
        let dir = tempfile::tempdir().unwrap();
        let c10k = Running::start(
            env!("CARGO_BIN_EXE_c10k"),
            &[
                "serve".into(),
                format!("--bind={scheme}{upstream}"),
                format!("--admin={admin}"),
                format!("--data-dir={}", dir.path().display()),
            ],
        );
        assert!(
            wait_for_status(admin, "/readyz", 200, Duration::from_secs(20)),
            "c10k did not get ready"
        );
        let site_file = dir.path().join("site.conf");
        std::fs::write(&site_file, aim_site(&read(site), upstream, listen)).unwrap();
        let conf = nginx_conf(&site_file, dir.path());
        let nginx = Running::start(
            "nginx",
            &[
                "-p".into(),
                dir.path().display().to_string(),
                "-c".into(),
                conf.display().to_string(),
                "-g".into(),
                "daemon off;".into(),
            ],
        );
        let ok = wait_for_status(listen, "/", 200, Duration::from_secs(10));
        let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        assert!(ok, "deploy/{site}: no 200 through nginx\n{log}");
        for _ in 0..20 {
            let r = get(listen, "/?delay=0").unwrap();
            assert_eq!((r.status, r.text()), (200, "hello\n".to_owned()), "{site}");
        }
        drop(nginx);
        drop(c10k);
    }
}
