"""The soak's load and its watcher: mixed HTTP/1.1 traffic on loopback against a c10k serving
soak_flask.py or soak_django.py, and samples of each worker (RSS, fds, threads; through
/soak-probe, Python objects, threads and iterables not closed).

    client.py PORT MASTER_PID --seconds 90 --clients 12 [--slow-ok] [--idle-ok]

Prints a line per worker per sample and, at the end, the first sample after warm-up beside the
last (taken once the traffic has stopped and slow views have finished), with a verdict; exit
status 1 when something grew.
"""

import argparse
import itertools
import json
import os
import random
import socket
import sys
import threading
import time

ARGS = None
COUNT = {}
COUNT_LOCK = threading.Lock()
# HTTP requests written (next() on a count is atomic in CPython)
SENT = itertools.count()


def sent_so_far():
    """Requests written so far, without counting one more (itertools.count's repr is count(N))."""
    return int(repr(SENT)[len("count(") : -1])


def tally(kind, ok=True):
    with COUNT_LOCK:
        COUNT[kind] = COUNT.get(kind, 0) + 1
        if not ok:
            COUNT["!" + kind] = COUNT.get("!" + kind, 0) + 1


def conn(timeout=10):
    s = socket.create_connection(("127.0.0.1", ARGS.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def req(method, path, headers=(), body=b"", close=False):
    next(SENT)
    h = "%s %s HTTP/1.1\r\nHost: soak\r\n" % (method, path)
    for k, v in headers:
        h += "%s: %s\r\n" % (k, v)
    if body and not any(k.lower() in ("transfer-encoding", "content-length") for k, _ in headers):
        h += "Content-Length: %d\r\n" % len(body)
    if close:
        h += "Connection: close\r\n"
    return h.encode() + b"\r\n" + body


class Reader:
    """Reads responses off one socket (Content-Length, chunked or until close)."""

    def __init__(self, s):
        self.s = s
        self.buf = b""

    def fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        h, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = h.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hd = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hd[k.strip().lower()] = v.strip()
        return status, hd

    def response(self, head_only=False, limit=None):
        """Reads one whole response; returns (status, body length, headers)."""
        status, hd = self.head()
        if status == 100:
            return self.response(head_only, limit)
        if head_only or status in (204, 304):
            return status, 0, hd
        if "content-length" in hd:
            n = int(hd["content-length"])
            while len(self.buf) < n:
                self.fill()
            self.buf = self.buf[n:]
            return status, n, hd
        if hd.get("transfer-encoding", "").lower() == "chunked":
            total = 0
            while True:
                while b"\r\n" not in self.buf:
                    self.fill()
                line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self.fill()
                self.buf = self.buf[size + 2 :]
                total += size
                if size == 0:
                    return status, total, hd
                if limit is not None and total >= limit:
                    return status, total, hd
        total = len(self.buf)
        try:
            while True:
                self.fill()
        except EOFError:
            pass
        return status, total + len(self.buf), hd


def one(method, path, expect, **kw):
    s = conn()
    try:
        s.sendall(req(method, path, close=True, **kw))
        st, _, _ = Reader(s).response(head_only=(method == "HEAD"))
        return st == expect
    finally:
        s.close()


def sc_get_close():
    return one("GET", "/", 200)


def sc_head():
    return one("HEAD", "/", 200)


def sc_keepalive():
    s = conn()
    try:
        r = Reader(s)
        ok = True
        for _ in range(5):
            s.sendall(req("GET", "/"))
            st, _, hd = r.response()
            ok &= st == 200
            if hd.get("connection", "").lower() == "close":
                break  # sync closes after each response
        return ok
    finally:
        s.close()


def sc_pipelined():
    s = conn()
    try:
        s.sendall(req("GET", "/") * 4 + req("HEAD", "/") + req("GET", "/", close=True))
        r = Reader(s)
        ok = True
        for i in range(6):
            try:
                st, _, hd = r.response(head_only=(i == 4))
            except EOFError:
                break  # a class that closes after the first answers only that one
            ok &= st == 200
            if hd.get("connection", "").lower() == "close":
                break
        return ok
    finally:
        s.close()


def sc_post():
    how = random.choice(["all", "part", "none"])
    size = random.choice([100, 5000, 200000])  # the last is spooled to a temporary file
    body = os.urandom(size // 2).hex().encode()[:size]
    if random.random() < 0.5:
        return one("POST", "/post?read=" + how, 200, body=body)
    # chunked, in a few pieces
    parts = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    return one("POST", "/post?read=" + how, 200, headers=[("Transfer-Encoding", "chunked")], body=chunked)


def sc_continue():
    body = b"y" * 3000
    s = conn()
    try:
        s.sendall(
            req("POST", "/post?read=all", headers=[("Expect", "100-continue"), ("Content-Length", str(len(body)))], close=True)
        )
        r = Reader(s)
        st, hd = r.head()
        if st != 100:
            return False
        s.sendall(body)
        st, _, _ = r.response()
        return st == 200
    finally:
        s.close()


def sc_stream_full():
    return one("GET", "/stream?n=50&size=1000", 200)


def sc_stream_cut():
    s = conn()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(req("GET", "/stream?n=20000&size=1000"))
        r = Reader(s)
        r.head()
        want = random.randint(1, 50000)
        got = len(r.buf)
        while got < want:
            d = s.recv(4096)
            if not d:  # closed early (a 504, a server stopping): without this the loop spins
                break
            got += len(d)
        if random.random() < 0.5:  # an RST instead of a FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return True
    finally:
        s.close()


def sc_fail():
    return one("GET", "/fail", 500)


def sc_large_header():
    return one("GET", "/", 431, headers=[("X-Big", "z" * 20000)])


def sc_gone_before_answer():
    s = conn()
    s.sendall(req("GET", "/stream?n=200&size=1000"))
    s.close()
    return True


def sc_slow_504():
    return one("GET", "/slow?s=1.5", 504)


def sc_idle():
    s = conn(timeout=30)
    try:
        if random.random() < 0.5:
            s.sendall(b"GET / HTTP/1.1\r\nHost: soak\r\nX-Half: ")
        d = s.recv(4096)  # 408 or a close at the header timeout
        return d == b"" or d.startswith(b"HTTP/1.1 408")
    finally:
        s.close()


SCENARIOS = [
    (sc_get_close, 10),
    (sc_head, 3),
    (sc_keepalive, 6),
    (sc_pipelined, 4),
    (sc_post, 10),
    (sc_continue, 2),
    (sc_stream_full, 4),
    (sc_stream_cut, 4),
    (sc_fail, 3),
    (sc_large_header, 2),
    (sc_gone_before_answer, 2),
]


def run_mix(stop):
    fns = [f for f, w in SCENARIOS for _ in range(w)]
    while not stop.is_set():
        f = random.choice(fns)
        try:
            ok = f()
        except Exception:
            ok = False
        tally(f.__name__, ok)


def run_rare(stop, fn, pause):
    while not stop.is_set():
        try:
            ok = fn()
        except Exception:
            ok = False
        tally(fn.__name__, ok)
        stop.wait(pause)


def workers():
    kids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/stat" % pid) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ARGS.master:
                        kids.append(int(pid))
            except (OSError, ValueError, IndexError):
                pass
    return sorted(kids)


def proc_stats(pid):
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
    return {
        "rss_kb": rss,
        "fds": len(os.listdir("/proc/%d/fd" % pid)),
        "tasks": len(os.listdir("/proc/%d/task" % pid)),
    }


def probe_one():
    s = conn()
    try:
        s.sendall(req("GET", "/soak-probe", close=True))
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        return json.loads(data.split(b"\r\n\r\n", 1)[1])
    finally:
        s.close()


def probe_all(pids):
    """Asks /soak-probe until every worker has answered: from several connections at once, as
    an idle server tends to hand every new connection to the same worker."""
    got = {}
    deadline = time.time() + 10

    def loop():
        while time.time() < deadline and not set(pids) <= set(got):
            try:
                j = probe_one()
                got[j["pid"]] = j
            except Exception:
                time.sleep(0.01)

    ts = [threading.Thread(target=loop) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return got


def sample(label):
    pids = workers()
    # /proc first: the probes' own connections would start threads (-k thread).
    stats = {}
    for pid in pids:
        try:
            stats[pid] = proc_stats(pid)
        except OSError:
            pass
    py = probe_all(list(stats))
    out = {}
    for pid, st in stats.items():
        st.update({("py_" + k): v for k, v in py.get(pid, {}).items() if k != "pid"})
        out[pid] = st
        print("%-6s sent %d pid %d %s" % (label, sent_so_far(), pid, json.dumps(st, sort_keys=True)), flush=True)
    return out


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("master", type=int)
    p.add_argument("--seconds", type=float, default=90)
    p.add_argument("--warmup", type=float, default=15)
    p.add_argument("--clients", type=int, default=12)
    p.add_argument("--every", type=float, default=15)
    p.add_argument("--slow", type=float, default=3.0, help="seconds between 504 requests (0: none)")
    p.add_argument("--idle", type=float, default=2.0, help="seconds between idle clients (0: none)")
    p.add_argument("--settle", type=float, default=4.0)
    ARGS = p.parse_args()

    stop = threading.Event()
    threads = [threading.Thread(target=run_mix, args=(stop,), daemon=True) for _ in range(ARGS.clients)]
    if ARGS.slow:
        threads.append(threading.Thread(target=run_rare, args=(stop, sc_slow_504, ARGS.slow), daemon=True))
    if ARGS.idle:
        for _ in range(2):
            threads.append(threading.Thread(target=run_rare, args=(stop, sc_idle, ARGS.idle), daemon=True))
    for t in threads:
        t.start()
    t0 = time.time()
    time.sleep(ARGS.warmup)
    first = sample("warm")
    while time.time() - t0 < ARGS.seconds:
        time.sleep(min(ARGS.every, max(0.1, ARGS.seconds - (time.time() - t0))))
        sample("t+%d" % (time.time() - t0))
    stop.set()
    for t in threads:
        t.join(timeout=40)
    time.sleep(ARGS.settle)
    last = sample("end")

    total = sum(v for k, v in COUNT.items() if not k.startswith("!"))
    # The probes' requests are counted too; the idle clients send none.
    print(
        "HTTP requests sent: %d, in %d scenarios: %s"
        % (next(SENT), total, json.dumps(dict(sorted(COUNT.items()))))
    )
    grew = []
    unfinished = 0
    for pid in sorted(set(first) & set(last)):
        a, b = first[pid], last[pid]
        line = []
        for k in sorted(b):
            if k in a:
                line.append("%s %s->%s" % (k, a[k], b[k]))
        print("worker %d: %s" % (pid, ", ".join(line)))
        if b["fds"] > a["fds"] + 2:
            grew.append("%d fds" % pid)
        if b["tasks"] > a["tasks"] + 2:
            grew.append("%d threads" % pid)
        if b.get("py_threads", 0) > a.get("py_threads", 0) + 1:
            grew.append("%d python threads" % pid)
        if "py_returned" in b and b["py_returned"] != b["py_closed"]:
            grew.append("%d iterables not closed: %d" % (pid, b["py_returned"] - b["py_closed"]))
        unfinished += b.get("py_django_started", 0) - b.get("py_django_finished", 0)
        if b.get("py_objects", 0) > a.get("py_objects", 0) * 1.05 + 500:
            grew.append("%d python objects" % pid)
        if b["rss_kb"] > a["rss_kb"] * 1.25 + 4096:
            grew.append("%d rss" % pid)
    # Under gevent a view past --request-timeout is interrupted by gevent.Timeout, a BaseException
    # that Django's handler does not catch: no response, so no close() and no request_finished.
    # One per 504 is that; more is a leak.
    cut = COUNT.get("sc_slow_504", 0) - COUNT.get("!sc_slow_504", 0)
    if unfinished > cut:
        grew.append("django requests without request_finished: %d (504s: %d)" % (unfinished, cut))
    elif unfinished:
        print("note: %d django requests without request_finished, as many as or fewer than the %d "
              "views cut off by --request-timeout (gevent interrupts them)" % (unfinished, cut))
    if set(first) != set(last):
        grew.append("workers changed: %s -> %s" % (sorted(first), sorted(last)))
    print("verdict: " + ("GREW: " + "; ".join(grew) if grew else "flat"))
    sys.exit(1 if grew else 0)


if __name__ == "__main__":
    main()
