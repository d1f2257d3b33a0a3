#!/usr/bin/env python3
"""Send the same raw requests to gunicorn 27 and `c10k serve` hosting one probe WSGI app, and
list where the answers differ.

The request parser was compared with gunicorn's own request corpus (gunicorn-corpus.py); this
compares the application side: what each server makes of what an app does (status forms, the
headers it sets, its body iterable, `write()`, `start_response` twice, exceptions before and
after the head) and what the app sees of the request (`wsgi.input` reads, unread bodies,
chunked bodies, `Expect: 100-continue`). gunicorn runs `-k sync` and `-k gthread`; c10k runs
every class. c10k's `sync` is compared with gunicorn's `sync` (one request per connection),
the other classes with gunicorn's `gthread`.

Compared for each case: the status line, the headers (without Date and Server, and without the
framing headers Connection, Transfer-Encoding and Content-Length, unless the case asks for
Content-Length), the body (de-chunked), whether it came whole, and whether the connection stays
open (a second request on it is answered). A difference listed in EXPLAINED (with the reason, most
of them in README.md's "Where c10k differs on purpose") is printed but does not fail; any other
makes the exit status 1, and so does a difference between c10k's classes.

  python3 scripts/wsgi-diff.py [--c10k target/debug/c10k] [--venv /tmp/c10k-ci/venv]
                               [--only CASE,...] [-v]

It starts local servers on free ports and sends a few hundred requests: no load.
"""
import argparse
import fnmatch
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

APP = r'''
import sys


def ok(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def status(s):
    def app(environ, start_response):
        start_response(s, [("Content-Type", "text/plain")])
        return [b"body"]
    return app


def headers(*hs, body=(b"body",), status="200 OK"):
    def app(environ, start_response):
        start_response(status, list(hs))
        return list(body)
    return app


def gen_raise_before(environ, start_response):
    def gen():
        raise RuntimeError("before the first chunk")
        yield b"never"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return gen()


def gen_raise_after(environ, start_response):
    def gen():
        yield b"first"
        raise RuntimeError("after the first chunk")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return gen()


def gen_str(environ, start_response):
    def gen():
        yield "text"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return gen()


def gen_empty(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter(())


def gen_late_start(environ, start_response):
    def gen():
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"late"
    return gen()


def write_then_list(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written,")
    return [b"returned"]


def write_then_gen(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written,")
    def gen():
        yield b"one,"
        write(b"written-in-gen,")
        yield b"two"
    return gen()


def write_then_raise(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written")
    raise RuntimeError("after write()")


def write_str(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write("text")
    return []


def sr_twice(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"twice"]


def sr_twice_exc_info(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
    try:
        raise ValueError("replaced")
    except ValueError:
        start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"replaced"]


def exc_info_after_head(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    def gen():
        yield b"first"
        try:
            raise ValueError("too late")
        except ValueError:
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        yield b"never"
    return gen()


def return_none(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return None


def no_start_response(environ, start_response):
    return [b"no head"]


def raise_before(environ, start_response):
    raise RuntimeError("before start_response")


def raise_after_sr(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise RuntimeError("after start_response")


def echo(reader):
    def app(environ, start_response):
        inp = environ["wsgi.input"]
        out = reader(inp)
        body = ("CONTENT_LENGTH=%r %r" % (environ.get("CONTENT_LENGTH"), out)).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    return app


def gen_body(*chunks, status="200 OK", hs=()):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain")] + list(hs))
        return (c for c in chunks)
    return app


def file_body(length=None):
    def app(environ, start_response):
        hs = [("Content-Type", "text/plain")]
        if length is not None:
            hs.append(("Content-Length", str(length)))
        start_response("200 OK", hs)
        f = open(__file__, "rb")
        f.seek(7)
        return environ["wsgi.file_wrapper"](f)
    return app


class ClosingBody:
    def __init__(self, fail):
        self.fail = fail

    def __iter__(self):
        yield b"closing"

    def close(self):
        if self.fail:
            raise RuntimeError("close() failed")


def closing(fail):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingBody(fail)
    return app


def no_read(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"did not read"]


def read_some(environ, start_response):
    got = environ["wsgi.input"].read(10)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"read " + got]


def read_then_raise(environ, start_response):
    environ["wsgi.input"].read(10)
    raise RuntimeError("after reading part of the body")


CASES = {
    "ok": ok,
    "status-ok": status("200 OK"),
    "status-no-reason": status("200"),
    "status-lowercase": status("404 not found"),
    "status-custom-reason": status("200 Fine Thanks"),
    "status-abc": status("abc"),
    "status-99": status("99 x"),
    "status-1000": status("1000 x"),
    "status-empty": status(""),
    "status-bytes": status(b"200 OK"),
    "status-int": status(200),
    "status-crlf": status("200 OK\r\nX-Injected: 1"),
    "hdr-latin1": headers(("X-Value", "caf\u00e9")),
    "hdr-non-latin1": headers(("X-Value", "\u20ac")),
    "hdr-crlf": headers(("X-Value", "a\r\nX-Injected: 1")),
    "hdr-lf": headers(("X-Value", "a\nX-Injected: 1")),
    "hdr-name-space": headers(("X Value", "1")),
    "hdr-name-colon": headers(("X:Value", "1")),
    "hdr-bytes-value": headers(("X-Value", b"1")),
    "hdr-int-value": headers(("X-Value", 1)),
    "hdr-outer-spaces": headers(("X-Value", "  padded  ")),
    "hop-connection-close": headers(("Connection", "close")),
    "hop-connection-keep-alive": headers(("Connection", "keep-alive")),
    "hop-transfer-encoding": headers(("Transfer-Encoding", "chunked")),
    "hop-keep-alive": headers(("Keep-Alive", "timeout=99")),
    "hop-upgrade": headers(("Upgrade", "websocket")),
    "set-cookie-twice": headers(("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")),
    "cl-head": headers(("Content-Length", "5"), body=(b"hello",)),
    "cl-head-no-body": headers(("Content-Length", "5"), body=()),
    "head-no-cl": headers(("Content-Type", "text/plain"), body=(b"hello",)),
    "204-body": headers(("Content-Type", "text/plain"), status="204 No Content"),
    "204-cl": headers(("Content-Length", "4"), status="204 No Content"),
    "304-body": headers(("Content-Length", "4"), status="304 Not Modified"),
    "cl0-body": headers(("Content-Length", "0")),
    "cl-longer-body": headers(("Content-Length", "2")),
    "cl-shorter-body": headers(("Content-Length", "10")),
    "cl-abc": headers(("Content-Length", "abc")),
    "cl-twice-same": headers(("Content-Length", "4"), ("Content-Length", "4")),
    "cl-twice-differ": headers(("Content-Length", "4"), ("Content-Length", "5")),
    "body-str": headers(("Content-Type", "text/plain"), body=("text",)),
    "body-str-gen": gen_str,
    "body-empty-list": headers(("Content-Type", "text/plain"), body=()),
    "body-empty-bytes": headers(("Content-Type", "text/plain"), body=(b"",)),
    "body-empty-gen": gen_empty,
    "body-late-start-response": gen_late_start,
    "gen-raise-before": gen_raise_before,
    "gen-raise-after": gen_raise_after,
    "write-then-list": write_then_list,
    "write-then-gen": write_then_gen,
    "write-then-raise": write_then_raise,
    "write-str": write_str,
    "sr-twice": sr_twice,
    "sr-twice-exc-info": sr_twice_exc_info,
    "exc-info-after-head": exc_info_after_head,
    "return-none": return_none,
    "no-start-response": no_start_response,
    "raise-before": raise_before,
    "raise-after-sr": raise_after_sr,
    "status-100": status("100 Continue"),
    "status-599": status("599 Whatever"),
    "status-leading-space": status(" 200 OK"),
    "status-two-spaces": status("200  OK"),
    "status-trailing-space": status("200 OK "),
    "status-tab-reason": status("200 O\tK"),
    "hdr-name-non-ascii": headers(("X-\u00c9", "1")),
    "hdr-empty-value": headers(("X-Value", "")),
    "hdr-tuple-list": headers(["X-Value", "1"]),
    "gen": gen_body(b"a", b"", b"b"),
    "gen-cl": gen_body(b"ab", b"cd", hs=[("Content-Length", "4")]),
    "gen-cl-longer": gen_body(b"ab", b"cd", hs=[("Content-Length", "3")]),
    "gen-cl-shorter": gen_body(b"ab", b"cd", hs=[("Content-Length", "9")]),
    "gen-204": gen_body(b"ab", status="204 No Content"),
    "gen-big": gen_body(*[b"x" * 1000] * 300),
    "file": file_body(),
    "file-cl": file_body(10),
    "close-ok": closing(False),
    "close-raises": closing(True),
    "read-all": echo(lambda i: i.read()),
    "read-sizes": echo(lambda i: [i.read(3), i.read(100), i.read()]),
    "read-minus-one": echo(lambda i: i.read(-1)),
    "readline-size": echo(lambda i: [i.readline(3), i.readline(), i.readline(), i.readline()]),
    "readlines": echo(lambda i: i.readlines()),
    "input-iter": echo(lambda i: list(i)),
    "no-read": no_read,
    "read-some": read_some,
    "read-then-raise": read_then_raise,
    "read-zero": echo(lambda i: [i.read(0), i.readline(0), i.read()]),
}


def app(environ, start_response):
    return CASES.get(environ["PATH_INFO"].strip("/"), ok)(environ, start_response)
'''

GET = b"GET /%s HTTP/1.1\r\nHost: h\r\n\r\n"
HEAD = b"HEAD /%s HTTP/1.1\r\nHost: h\r\n\r\n"
POST = b"POST /%s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s"
LINES = b"one\ntwo\nthree"
BIG = b"x" * 200_000


def post(case, body=LINES):
    return POST % (case.encode(), len(body), body)


def chunked(case, body=LINES, size=5):
    out = b"POST /%s HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" % case.encode()
    for i in range(0, len(body), size):
        c = body[i:i + size]
        out += b"%x\r\n%s\r\n" % (len(c), c)
    return out + b"0\r\n\r\n"


# case -> (request bytes, options). Options: "cl" compares Content-Length too; "pipelined"
# appends a `GET /ok` to the same send (two answers expected); "expect" sends the head with
# `Expect: 100-continue`, waits for an interim answer, then the body.
def cases():
    out = {}
    simple = [
        "ok", "status-ok", "status-no-reason", "status-lowercase", "status-custom-reason",
        "status-abc", "status-99", "status-1000", "status-empty", "status-bytes", "status-int",
        "status-crlf", "hdr-latin1", "hdr-non-latin1", "hdr-crlf", "hdr-lf", "hdr-name-space",
        "hdr-name-colon", "hdr-bytes-value", "hdr-int-value", "hdr-outer-spaces",
        "hop-connection-close", "hop-connection-keep-alive", "hop-transfer-encoding",
        "hop-keep-alive", "hop-upgrade", "set-cookie-twice", "body-str", "body-str-gen",
        "body-empty-list", "body-empty-bytes", "body-empty-gen", "body-late-start-response",
        "gen-raise-before", "gen-raise-after", "write-then-list", "write-then-gen",
        "write-then-raise", "write-str", "sr-twice", "sr-twice-exc-info", "exc-info-after-head",
        "return-none", "no-start-response", "raise-before", "raise-after-sr",
    ]
    for c in simple:
        out[c] = (GET % c.encode(), {})
    for c in ["status-100", "status-599", "status-leading-space", "status-two-spaces",
              "status-trailing-space", "status-tab-reason", "hdr-name-non-ascii",
              "hdr-empty-value", "hdr-tuple-list", "gen", "gen-204",
              "gen-big", "file", "close-ok", "close-raises"]:
        out[c] = (GET % c.encode(), {})
    for c in ["gen", "gen-big", "file", "gen-raise-after", "write-then-gen"]:
        out["HTTP/1.0 " + c] = (b"GET /%s HTTP/1.0\r\n\r\n" % c.encode(), {})
        out["HTTP/1.0 keep-alive " + c] = (
            b"GET /%s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % c.encode(), {})
    for c in ["gen", "gen-cl", "gen-raise-after", "gen-raise-before", "file", "file-cl",
              "close-raises", "204-body"]:
        out["HEAD " + c] = (HEAD % c.encode(), {"cl": True})
    for c in ["cl-head", "cl-head-no-body", "head-no-cl", "204-body", "204-cl", "304-body",
              "cl0-body", "cl-longer-body", "cl-shorter-body", "cl-abc", "cl-twice-same",
              "cl-twice-differ", "gen-cl", "gen-cl-longer", "gen-cl-shorter", "file-cl"]:
        out[c] = (GET % c.encode(), {"cl": True})
    for c in ["cl-head", "cl-head-no-body", "head-no-cl"]:
        out["HEAD " + c] = (HEAD % c.encode(), {"cl": True})
    for c in ["read-all", "read-sizes", "read-minus-one", "readline-size", "readlines",
              "input-iter", "read-zero"]:
        out["POST " + c] = (post(c), {})
        out["chunked " + c] = (chunked(c), {})
    out["GET read-all"] = (GET % b"read-all", {})
    out["POST read-all big"] = (post("read-all", BIG), {})
    out["client Connection: close"] = (
        b"GET /ok HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", {})
    out["no-read keep-alive"] = (post("no-read"), {})
    out["no-read pipelined"] = (post("no-read"), {"pipelined": True})
    out["no-read chunked pipelined"] = (chunked("no-read"), {"pipelined": True})
    out["read-some big keep-alive"] = (post("read-some", BIG), {})
    out["read-some big pipelined"] = (post("read-some", BIG), {"pipelined": True})
    out["expect-100 read-all"] = (post("read-all"), {"expect": True})
    out["expect-100 no-read"] = (post("no-read"), {"expect": True})
    out["raise-before unread body"] = (post("raise-before"), {})
    out["raise-before unread body pipelined"] = (post("raise-before"), {"pipelined": True})
    out["read-then-raise big"] = (post("read-then-raise", BIG), {})
    out["raise-before pipelined"] = (GET % b"raise-before", {"pipelined": True})
    return out


# Where the servers differ on purpose: (case globs, fields, why). README.md's "Where c10k differs
# on purpose" has one line for each reason. A difference is explained when its case matches a glob
# and its field is listed.
APP_FAILS = [
    "status-abc", "status-99", "status-1000", "status-empty", "status-bytes", "status-int",
    "status-crlf", "status-100", "status-leading-space", "hdr-non-latin1", "hdr-crlf", "hdr-lf",
    "hdr-name-*", "hdr-bytes-value", "hdr-int-value", "body-str*", "gen-raise-before",
    "write-str", "sr-twice", "return-none", "no-start-response", "raise-*",
    "close-raises",
    "HEAD gen-raise-*", "HEAD close-raises", "cl-abc", "cl-twice-differ", "read-then-raise*",
]
EXPLAINED = [
    (APP_FAILS + ["read-some big *"], ["open", "second"],
     "c10k has the whole request body before the app runs, so a failed app (or one that read "
     "part of the body) leaves nothing unread: its complete 500 keeps the connection; gunicorn "
     "closes it"),
    (["HTTP/1.0 keep-alive file"], ["open"],
     "c10k sends a file_wrapper body with its length, so an HTTP/1.0 keep-alive client keeps "
     "the connection; gunicorn delimits it by closing"),
    (["status-100"], ["status", "body", "headers", "whole"],
     "a 1xx status from the app is a 500 (README); gunicorn sends it as the final answer, which "
     "a client takes for an interim one"),
    (["status-no-reason"], ["status"],
     "a status without a phrase goes out with the standard one (gunicorn: `HTTP/1.1 200`, "
     "without the space RFC 9112 requires)"),
    (["HTTP/1.0 *"], ["status"], "the status line always says HTTP/1.1"),
    (["chunked *"], ["body"], "CONTENT_LENGTH is set for a chunked body (gunicorn-corpus.py)"),
    (["hop-upgrade"], ["headers"],
     "the app's Upgrade is dropped: c10k cannot hand the socket over to it (gunicorn sends "
     "`Upgrade: websocket` on for websocket apps of its async workers)"),
    (["body-str", "body-str-gen", "write-str"],
     ["status", "body", "headers", "whole"],
     "the head goes out with the first non-empty chunk or write() data, so a str chunk (or a str "
     "given to write() before any data) is a clean 500; gunicorn has sent the head: a cut 200"),
    (["sr-twice-exc-info"], ["headers"],
     "start_response with exc_info replaces the head (PEP 3333); gunicorn 27 keeps the first "
     "call's headers too"),
    (["no-start-response"], ["status", "body", "headers"],
     "an app that never calls start_response is a 500; gunicorn's sync sends `HTTP/1.1 None`"),
    (["HEAD head-no-cl", "HEAD file"], ["headers"],
     "a HEAD answer has the Content-Length GET would get when the server knows it (RFC 9110 "
     "9.3.2); gunicorn sends none"),
    (["304-body"], ["headers"], "a 304 carries no Content-Length (README)"),
    (["cl-twice-same"], ["headers"], "the same Content-Length twice is sent once"),
    (["cl-twice-differ"], ["status", "body", "headers", "whole"],
     "two different Content-Lengths are the app's error, a 500; gunicorn sends both"),
]

GUNICORN = ("gunicorn-sync", "gunicorn-gthread")
C10K = ("c10k-sync", "c10k-thread", "c10k-gthread", "c10k-async", "c10k-gevent")
IGNORED = {"date", "server", "connection", "transfer-encoding", "keep-alive"}
TIMEOUT = 2.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind, c10k, venv, workdir):
    port = free_port()
    name, worker = kind.split("-")
    log = open(os.path.join(workdir, "%s.log" % kind), "w")
    if name == "gunicorn":
        threads = "4" if worker == "gthread" else "1"
        cmd = [os.path.join(venv, "bin", "gunicorn"), "-k", worker, "--threads", threads,
               "--no-control-socket", "-b", "127.0.0.1:%d" % port, "--chdir", workdir,
               "probe:app"]
    else:
        cmd = [c10k, "serve", "-k", worker, "-b", "127.0.0.1:%d" % port, "--venv", venv,
               "--chdir", workdir, "probe:app"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    end = time.time() + 60
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


class Conn:
    """A client connection that reads answers off a buffer, with a deadline on every read."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        self.s.settimeout(TIMEOUT)
        self.buf = b""
        self.eof = False

    def fill(self):
        """More bytes; False at the end of the stream (closed, reset or silent)."""
        if self.eof:
            return False
        try:
            b = self.s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            b = b""
        if not b:
            self.eof = True
            return False
        self.buf += b
        return True

    def line(self):
        while b"\r\n" not in self.buf:
            if not self.fill():
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def take(self, n):
        while len(self.buf) < n:
            if not self.fill():
                out, self.buf = self.buf, b""
                return out, False
        out, self.buf = self.buf[:n], self.buf[n:]
        return out, True

    def answer(self, head_only=False):
        """(status line, [(name, value)], body, whole) or None when nothing came."""
        status = self.line()
        if status is None:
            return None
        hs = []
        while True:
            line = self.line()
            if line is None:
                return status, hs, b"", False
            if not line:
                break
            name, _, value = line.partition(b":")
            hs.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
        code = status.split(b" ")[1:2]
        get = {n: v for n, v in hs}
        if head_only or code in ([b"204"], [b"304"]) or code[:1] and code[0].startswith(b"1"):
            return status, hs, b"", True
        if "chunked" in get.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = self.line()
                if size is None:
                    return status, hs, body, False
                try:
                    n = int(size.split(b";")[0], 16)
                except ValueError:
                    return status, hs, body + b"<bad chunk size %r>" % size, False
                if n == 0:
                    while True:  # trailers
                        t = self.line()
                        if not t:
                            return status, hs, body, t is not None
                chunk, whole = self.take(n + 2)
                body += chunk[:n]
                if not whole:
                    return status, hs, body, False
        if "content-length" in get:
            try:
                n = int(get["content-length"])
            except ValueError:
                return status, hs, b"<bad length>", False
            body, whole = self.take(n)
            return status, hs, body, whole
        while self.fill():
            pass
        out, self.buf = self.buf, b""
        return status, hs, out, True

    def close(self):
        self.s.close()


def run_case(port, raw, opts, head_only):
    """The outcome of one case on one server, as a dict of compared fields."""
    c = Conn(port)
    out = {}
    try:
        if opts.get("expect"):
            head, _, body = raw.partition(b"\r\n\r\n")
            c.s.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
            line = c.line()
            out["interim"] = line.decode("latin-1") if line else "(none)"
            if line:
                c.line()
                if not line.startswith(b"HTTP/1.1 100"):
                    c.buf = line + b"\r\n\r\n" + c.buf  # a final answer instead
            c.s.sendall(body)
        elif opts.get("pipelined"):
            c.s.sendall(raw + GET % b"ok")
        else:
            c.s.sendall(raw)
        a = c.answer(head_only)
        if a is None:
            out["status"] = "(no answer)"
            return out
        status, hs, body, whole = a
        out["status"] = status.decode("latin-1")
        skip = IGNORED | (set() if opts.get("cl") else {"content-length"})
        # A Content-Length that only frames the body received is framing (gunicorn chunks
        # where c10k counts); one that says something else (a HEAD, a 304, a short body) is
        # compared.
        framing = (None if head_only else ("content-length", str(len(body))))
        out["headers"] = sorted((n, v) for n, v in hs if n not in skip and (n, v) != framing)
        out["body"] = body
        out["whole"] = whole
        if opts.get("pipelined"):
            b = c.answer()
            out["second"] = b[0].decode("latin-1") + " " + repr(b[2]) if b else "(none)"
        if whole and not c.eof:
            try:
                c.s.sendall(GET % b"ok")
                b = c.answer()
            except OSError:
                b = None
            out["open"] = bool(b and b[0].startswith(b"HTTP/1.1 200") and b[2] == b"ok")
        else:
            out["open"] = False
    finally:
        c.close()
    return out


def error_pages(a, b):
    """Both are a server's own 500 (its page and Content-Type are not compared)."""
    return all(r.get("status", "").startswith("HTTP/1.1 500 Internal Server Error")
               for r in (a, b))


def explained(case, field):
    for globs, fields, why in EXPLAINED:
        if field in fields and any(fnmatch.fnmatchcase(case, g) for g in globs):
            return why
    return None


def show(v):
    if isinstance(v, bytes):
        v = v.decode("latin-1")
    s = repr(v) if not isinstance(v, str) else v
    s = s.replace("\n", "\\n")
    return s if len(s) <= 110 else s[:107] + "..."


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--c10k", default="target/debug/c10k")
    p.add_argument("--venv", default=os.environ.get("C10K_TEST_VENV", "/tmp/c10k-ci/venv"))
    p.add_argument("--only", help="comma-separated case names")
    p.add_argument("-v", "--verbose", action="store_true", help="print every outcome")
    args = p.parse_args()
    c10k = os.path.abspath(args.c10k)
    all_cases = cases()
    names = args.only.split(",") if args.only else list(all_cases)
    workdir = tempfile.mkdtemp(prefix="wsgi-diff-")
    with open(os.path.join(workdir, "probe.py"), "w") as f:
        f.write(APP)
    version = subprocess.run([os.path.join(args.venv, "bin", "gunicorn"), "--version"],
                             capture_output=True, text=True).stdout.strip()
    print("reference: %s (%s)" % (version, args.venv))
    running = {}
    unexplained = 0
    try:
        for kind in GUNICORN + C10K:
            running[kind] = start(kind, c10k, args.venv, workdir)
        for case in names:
            raw, opts = all_cases[case]
            head_only = raw.startswith(b"HEAD")
            res = {kind: run_case(port, raw, opts, head_only)
                   for kind, (port, _) in running.items()}
            if args.verbose:
                for kind, r in res.items():
                    print("%-40s %-17s %s" % (case, kind, {k: show(v) for k, v in r.items()}))
            # One line per (field, gunicorn's value, c10k's value), naming the classes.
            diffs = {}
            for kind in C10K:
                ref = "gunicorn-sync" if kind == "c10k-sync" else "gunicorn-gthread"
                g_res, c_res = res[ref], res[kind]
                for field in sorted(set(c_res) | set(g_res)):
                    g, c = g_res.get(field), c_res.get(field)
                    if g == c or (field in ("headers", "body") and error_pages(g_res, c_res)):
                        continue
                    diffs.setdefault((field, show(g), show(c)), []).append(kind)
            for (field, g, c), kinds in diffs.items():
                why = explained(case, field)
                unexplained += why is None
                refs = sorted({"gunicorn-sync" if k == "c10k-sync" else "gunicorn-gthread"
                               for k in kinds})
                print("%s %s [%s]\n    %s: %s\n    %s: %s%s" % (
                    "explained" if why else "DIFFERS", case, field, "/".join(refs), g,
                    ",".join(k[5:] for k in kinds), c,
                    "\n    why: %s" % why if why and args.verbose else ""))
            # c10k's classes among themselves (sync's one request per connection aside).
            conn = ("open", "second")
            base = {k: v for k, v in res["c10k-thread"].items() if k not in conn}
            for kind in C10K:
                mine = {k: v for k, v in res[kind].items() if k not in conn}
                if mine != base:
                    unexplained += 1
                    print("DIFFERS   %-36s c10k-thread %s | %s %s" % (
                        case, {k: show(v) for k, v in base.items()}, kind,
                        {k: show(v) for k, v in mine.items()}))
    finally:
        for _, proc in running.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for _, proc in running.values():
            proc.wait()
    if unexplained or args.verbose:
        print("%d cases, %d unexplained difference(s); server logs in %s"
              % (len(names), unexplained, workdir))
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        print("%d cases, no unexplained difference" % len(names))
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
