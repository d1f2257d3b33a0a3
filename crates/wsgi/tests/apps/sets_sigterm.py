"""An app that installs its own SIGTERM handler at import, as some libraries do."""

import signal

signal.signal(signal.SIGTERM, lambda signum, frame: None)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
