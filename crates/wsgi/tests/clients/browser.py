"""What a browser does with a real Flask or Django site, through `requests` (and a raw socket
for `Expect: 100-continue`): c10k's WSGI tests run it against `c10k serve` under each class.

usage: browser.py django-admin|flask-upload BASE_URL
Prints "ok" and exits 0, or names each failed check on stderr and exits 1.
"""

import hashlib
import json
import os
import re
import socket
import sys
from urllib.parse import urlsplit

import requests

TIMEOUT = 20
failures = []


def check(name, ok, detail=""):
    if not ok:
        failures.append(f"{name}: {detail}")


def csrf_token(html):
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    return m.group(1) if m else None


def django_admin(base):
    s = requests.Session()
    # Not logged in: the admin redirects to its login form, which sets the CSRF cookie.
    r = s.get(base + "/admin/", timeout=TIMEOUT)
    check("redirected to login", r.history and r.history[0].status_code == 302
          and "/admin/login/" in r.url, f"{r.status_code} {r.url}")
    check("X-Frame-Options", r.headers.get("X-Frame-Options") == "DENY", dict(r.headers))
    token = csrf_token(r.text)
    check("login form", r.status_code == 200 and token and "csrftoken" in s.cookies,
          f"{r.status_code} cookies={list(s.cookies.keys())}")
    if not token:
        return
    form = {"csrfmiddlewaretoken": token, "username": "admin", "next": "/admin/"}
    # A wrong password: the form again, with Django's message.
    r = s.post(base + "/admin/login/?next=/admin/", data={**form, "password": "wrong"},
               timeout=TIMEOUT)
    check("wrong password refused", r.status_code == 200
          and "correct username and password" in r.text, r.status_code)
    # The right one: a redirect that sets the session cookie and rotates the CSRF cookie, two
    # Set-Cookie fields in one answer that must stay two.
    r = s.post(base + "/admin/login/?next=/admin/", data={**form, "password": "pw"},
               timeout=TIMEOUT)
    first = r.history[0] if r.history else r
    set_cookies = first.raw.headers.getlist("Set-Cookie")
    names = sorted(c.split("=", 1)[0] for c in set_cookies)
    check("login redirect", first.status_code == 302, first.status_code)
    check("two Set-Cookie fields", names == ["csrftoken", "sessionid"], set_cookies)
    check("logged in", r.status_code == 200 and "Site administration" in r.text,
          f"{r.status_code} {r.text[:200]!r}")
    r = s.get(base + "/admin/auth/user/", timeout=TIMEOUT)
    check("user list", r.status_code == 200 and "admin@example.com" in r.text, r.status_code)
    # Log out (a POST with the token, as Django 5 wants), then the admin asks to log in again.
    token = csrf_token(r.text) or s.cookies.get("csrftoken")
    r = s.post(base + "/admin/logout/", data={"csrfmiddlewaretoken": token}, timeout=TIMEOUT)
    check("logged out", r.status_code == 200 and "Logged out" in r.text, r.status_code)
    r = s.get(base + "/admin/", timeout=TIMEOUT)
    check("login again", "/admin/login/" in r.url, r.url)
    # A POST without the CSRF token is refused.
    r = requests.post(base + "/admin/login/", data={"username": "admin", "password": "pw"},
                      timeout=TIMEOUT)
    check("CSRF refused", r.status_code == 403 and "CSRF" in r.text, r.status_code)


def flask_upload(base):
    blob = os.urandom(3 * 1024 * 1024)
    sha = hashlib.sha256(blob).hexdigest()
    r = requests.post(base + "/upload", files={"file": ("café data.bin", blob)},
                      data={"note": "zoë"}, timeout=TIMEOUT)
    got = r.json() if r.status_code == 200 else {}
    check("multipart upload", got == {"name": "café data.bin", "size": len(blob),
                                      "sha256": sha, "note": "zoë"}, f"{r.status_code} {got}")

    # A body of unknown length: requests sends a generator chunked.
    def pieces():
        for i in range(0, len(blob), 100_000):
            yield blob[i:i + 100_000]
    r = requests.post(base + "/digest", data=pieces(), timeout=TIMEOUT)
    got = r.json() if r.status_code == 200 else {}
    check("chunked upload", got == {"size": len(blob), "sha256": sha}, f"{r.status_code} {got}")

    # curl's way with a large body: Expect: 100-continue, the body only after the interim 100.
    u = urlsplit(base)
    with socket.create_connection((u.hostname, u.port), timeout=TIMEOUT) as c:
        c.sendall(f"PUT /digest HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: {len(blob)}\r\n"
                  "Expect: 100-continue\r\nConnection: close\r\n\r\n".encode())
        interim = c.recv(100)
        check("100 Continue", interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim)
        c.sendall(blob)
        answer = b""
        while chunk := c.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    got = json.loads(body) if head.startswith(b"HTTP/1.1 200") else {}
    check("after 100 Continue", got == {"size": len(blob), "sha256": sha}, answer[:300])


def main():
    kind, base = sys.argv[1], sys.argv[2].rstrip("/")
    {"django-admin": django_admin, "flask-upload": flask_upload}[kind](base)
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
