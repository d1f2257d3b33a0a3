#!/usr/bin/env python3
"""Replay gunicorn's HTTP request corpus against live gunicorn and c10k, and list the differences.

gunicorn's repository has tests/requests/{valid,invalid}/NAME.http, each with NAME.py giving the
parse it expects (or the exception, for an invalid one) and sometimes a `cfg`. This script loads
them with gunicorn's own tests/treq.py, starts gunicorn (gthread and sync) and `c10k serve`
(sync and async) on an app that answers with the environ keys a parser decides (as JSON), sends
each file's bytes to every server, and prints one line per case where the servers, or gunicorn
and its .py, disagree. The live gunicorn is the reference users see; the .py is printed where it
differs from it. A `cfg` setting that c10k has a flag for is passed on; the others (gunicorn's
compatibility switches) are shown, and c10k runs with its defaults.

  python scripts/gunicorn-corpus.py GUNICORN_CHECKOUT [--c10k target/debug/c10k] [--add-host]

Run it with the python of a venv that has gunicorn (treq imports it); the servers use the same
venv. --add-host puts `Host: h` into HTTP/1.1 requests that have none, so that c10k's 400 for a
missing Host (RFC 9112 §3.2) does not hide what it does with the rest (it edits the bytes
blindly, so a body holding a request line, valid/020's, changes too). --json FILE keeps every
result. README.md ("Where c10k differs on purpose") says why each difference left is there.
It starts local servers on free ports and sends about 500 requests: no load.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

APP = '''
import json

KEYS = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "RAW_URI", "SERVER_PROTOCOL",
        "CONTENT_LENGTH", "CONTENT_TYPE")


def app(environ, start_response):
    out = {k: environ.get(k) for k in KEYS}
    out["headers"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    try:
        out["body"] = environ["wsgi.input"].read().decode("latin-1")
    except Exception as e:  # gunicorn reads the body lazily: its framing errors land here
        out["body_error"] = type(e).__name__
    data = json.dumps(out, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
'''

# gunicorn settings that c10k has a flag for, with the same meaning.
C10K_FLAGS = {
    "limit_request_line": "--limit-request-line",
    "limit_request_fields": "--limit-request-fields",
    "limit_request_field_size": "--limit-request-field_size",
    "forwarded_allow_ips": "--forwarded-allow-ips",
}
SERVERS = ("gunicorn-gthread", "gunicorn-sync", "c10k-sync", "c10k-async")
KEYS = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "RAW_URI", "SERVER_PROTOCOL",
        "CONTENT_TYPE", "CONTENT_LENGTH", "headers", "body", "body_error")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    """One server per (kind, cfg difference), started when first needed."""

    def __init__(self, c10k, workdir):
        self.c10k = c10k
        self.dir = workdir
        self.venv = os.path.dirname(os.path.dirname(sys.executable))
        self.running = {}

    def port(self, kind, diff):
        key = (kind, json.dumps(diff, sort_keys=True, default=str))
        if key not in self.running:
            self.running[key] = self.start(kind, diff)
        return self.running[key][0]

    def start(self, kind, diff):
        port = free_port()
        name, worker = kind.split("-")
        log = open(os.path.join(self.dir, "%s-%d.log" % (kind, port)), "w")
        if name == "gunicorn":
            conf = os.path.join(self.dir, "gunicorn-%d.conf.py" % port)
            with open(conf, "w") as f:
                for k, v in diff.items():
                    f.write("%s = %r\n" % (k, ",".join(v) if isinstance(v, list) else v))
            # --threads above 1 turns sync into gthread.
            threads = "4" if worker == "gthread" else "1"
            cmd = [os.path.join(self.venv, "bin", "gunicorn"), "-c", conf, "-k", worker,
                   "--threads", threads, "--no-control-socket", "-b", "127.0.0.1:%d" % port,
                   "--chdir", self.dir, "envdump:app"]
        else:
            extra = []
            for k, v in diff.items():
                if k in C10K_FLAGS:
                    extra += [C10K_FLAGS[k], ",".join(v) if isinstance(v, list) else str(v)]
            cmd = [self.c10k, "serve", "-k", worker, "-b", "127.0.0.1:%d" % port,
                   "--venv", self.venv, "--chdir", self.dir] + extra + ["envdump:app"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        end = time.time() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError("%s exited; see %s" % (" ".join(cmd), log.name))
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return port, proc
            except OSError:
                if time.time() > end:
                    raise
                time.sleep(0.1)

    def stop(self):
        for _, proc in self.running.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for _, proc in self.running.values():
            proc.wait()


def exchange(port, data):
    """Sends `data`, half-closes, and returns every response byte until the server closes."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(3)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                return out, False
            if not b:
                return out, True
            out += b


def responses(raw, closed):
    """The byte stream as [(status, environ dict or None)]."""
    res = []
    while raw.startswith(b"HTTP/"):
        head, sep, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        if not sep:
            res.append((status, None))
            break
        hdrs = {}
        for line in lines[1:]:
            n, _, v = line.partition(b":")
            hdrs[n.strip().lower()] = v.strip()
        n = int(hdrs.get(b"content-length", len(rest)))
        body, raw = rest[:n], rest[n:]
        try:
            env = json.loads(body)
            env = {k: env[k] for k in KEYS if k in env}
        except ValueError:
            env = None
        res.append((status, env))
    if raw:
        res.append(("junk", None))
    if not closed:
        res.append(("no close", None))
    return res


def expected_env(exp):
    """A valid case's .py expectation as the environ the app reports."""
    u = exp["uri"]
    env = {"REQUEST_METHOD": exp["method"], "PATH_INFO": u["path"], "QUERY_STRING": u["query"],
           "RAW_URI": u["raw"], "SERVER_PROTOCOL": "HTTP/%d.%d" % exp["version"],
           "CONTENT_TYPE": None, "CONTENT_LENGTH": None, "headers": {}}
    for n, v in exp["headers"]:
        if n in ("CONTENT-TYPE", "CONTENT-LENGTH"):
            env[n.replace("-", "_")] = v
        elif "_" not in n:
            k = "HTTP_" + n.replace("-", "_")
            env["headers"][k] = env["headers"][k] + "," + v if k in env["headers"] else v
    body = exp["body"]
    env["body"] = body.decode("latin-1") if isinstance(body, bytes) else body
    return env


def show(res):
    """A server's answers, short: `200`, `200 200`, `200(app: InvalidChunkSize)`, `-`."""
    parts = []
    for status, env in res:
        if env and "body_error" in env:
            parts.append("%s(app: %s)" % (status, env["body_error"]))
        else:
            parts.append(str(status))
    return " ".join(parts) or "-"


def env_diff(a, b):
    out = []
    for (_, ea), (_, eb) in zip(a, b):
        if ea and eb:
            out += ["%s %r/%r" % (k, ea.get(k), eb.get(k))
                    for k in KEYS if k != "body_error" and ea.get(k) != eb.get(k)]
    return "; ".join(out)


def refused(res):
    """Whether a server kept the request from the app (a 4xx/5xx, or an error on reading)."""
    return not res or any(s != 200 or (e and "body_error" in e) for s, e in res)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gunicorn", help="a gunicorn checkout (its tests/requests and tests/treq.py)")
    ap.add_argument("--c10k", default="target/debug/c10k")
    ap.add_argument("--add-host", action="store_true")
    ap.add_argument("--only", help="run the cases whose kind/name contains this")
    ap.add_argument("--json", help="write every result here, one JSON object a line")
    args = ap.parse_args()
    corpus = os.path.join(args.gunicorn, "tests", "requests")
    sys.path.insert(0, os.path.join(args.gunicorn, "tests"))
    import treq
    from gunicorn.config import Config
    default = {k: s.value for k, s in Config().settings.items()}

    work = tempfile.mkdtemp(prefix="gunicorn-corpus-")
    with open(os.path.join(work, "envdump.py"), "w") as f:
        f.write(APP)
    servers = Servers(os.path.abspath(args.c10k), work)
    out = open(args.json, "w") if args.json else None
    print("%-44s %-34s %-10s %-10s %s" % ("case", "gunicorn 27", "c10k sync", "c10k async",
                                           "notes"))
    try:
        for kind in ("valid", "invalid"):
            names = sorted(f[:-5] for f in os.listdir(os.path.join(corpus, kind))
                           if f.endswith(".http"))
            for name in names:
                case = kind + "/" + name
                if args.only and args.only not in case:
                    continue
                base = os.path.join(corpus, kind, name)
                mod = treq.load_py(base + ".py")
                diff = {k: s.value for k, s in mod["cfg"].settings.items()
                        if k != "http_parser" and s.value != default.get(k)}
                if kind == "valid":
                    expect = treq.request(base + ".http", mod["request"])
                    data = expect.data
                    expect = [(200, expected_env(e)) for e in expect.expect]
                else:
                    data = treq.badrequest(base + ".http").data
                    expect = mod["request"].__name__
                if args.add_host and b"\r\nhost:" not in data.lower():
                    data = data.replace(b" HTTP/1.1\r\n", b" HTTP/1.1\r\nHost: h\r\n")
                    if kind == "valid":
                        for _, e in expect:
                            if e["SERVER_PROTOCOL"] == "HTTP/1.1":
                                e["headers"]["HTTP_HOST"] = "h"
                row = {"case": case, "cfg": {k: str(v) for k, v in diff.items()}}
                for server in SERVERS:
                    row[server] = responses(*exchange(servers.port(server, diff), data))
                if out:
                    out.write(json.dumps(dict(row, expect=expect), default=str) + "\n")
                g, c, ca = row["gunicorn-gthread"], row["c10k-sync"], row["c10k-async"]
                notes = []
                if kind == "valid" and g != expect:
                    notes.append("gunicorn's .py: %s %s" % (show(expect), env_diff(g, expect)))
                if kind == "invalid" and not refused(g):
                    notes.append("gunicorn's .py: %s" % expect)
                if row["gunicorn-sync"] != g[:1] and row["gunicorn-sync"] != g:
                    notes.append("gunicorn sync: %s" % show(row["gunicorn-sync"]))
                if c != g:
                    d = env_diff(c, g)
                    if d:
                        notes.append("c10k/gunicorn: " + d)
                    if refused(g) and not refused(c):
                        notes.append("C10K TAKES WHAT GUNICORN REFUSES")
                unsupported = sorted(k for k in diff if k not in C10K_FLAGS)
                if unsupported:
                    notes.append("no c10k flag: " + ", ".join(unsupported))
                if notes or c != g or ca != g:
                    print("%-44s %-34s %-10s %-10s %s" % (case, show(g), show(c), show(ca),
                                                          "; ".join(notes)))
    finally:
        servers.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
