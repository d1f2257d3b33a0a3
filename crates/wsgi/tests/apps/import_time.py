"""An app that, at import, starts a thread (as a scheduler or a metrics pusher does), opens a
socket (as a client connecting at import does) and installs a signal handler, checking what
`signal` answers meanwhile. `/` tells how often the thread has ticked, what a read on that socket
gave (a thread sends on its other end 10 ms later, so under gevent the read waits on the hub),
the worker's pid and what the import saw, as JSON. Its `atexit` handler writes what the same read
gives then to the file named by IMPORT_TIME_ATEXIT."""

import atexit
import json
import os
import signal
import socket
import threading
import time

ticks = [0]


def tick():
    while True:
        ticks[0] += 1
        time.sleep(0.02)


threading.Thread(target=tick, daemon=True).start()

ours, theirs = socket.socketpair()


def read_socket():
    def send():
        time.sleep(0.01)
        theirs.send(b"x")

    threading.Thread(target=send).start()
    try:
        return ours.recv(1).decode()
    except Exception as e:  # noqa: BLE001 - the test shows what failed
        return f"{type(e).__name__}: {e}"


def at_exit():
    path = os.environ.get("IMPORT_TIME_ATEXIT")
    if path:
        with open(path, "w") as f:
            f.write(read_socket())


atexit.register(at_exit)


def on_usr2(signum, frame):
    pass


seen = {}
seen["previous"] = repr(signal.signal(signal.SIGUSR2, on_usr2))
seen["getsignal_is_handler"] = signal.getsignal(signal.SIGUSR2) is on_usr2
seen["second_previous_is_handler"] = signal.signal(signal.SIGUSR2, on_usr2) is on_usr2
for name, call in [
    ("kill", lambda: signal.signal(signal.SIGKILL, on_usr2)),
    ("not_callable", lambda: signal.signal(signal.SIGUSR1, 42)),
    ("out_of_range", lambda: signal.signal(100000, on_usr2)),
]:
    try:
        call()
        seen[name] = "no error"
    except Exception as e:  # noqa: BLE001 - the test compares the exception's type
        seen[name] = type(e).__name__


def app(environ, start_response):
    body = json.dumps({"ticks": ticks[0], "socket": read_socket(), "pid": os.getpid(), "seen": seen}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
