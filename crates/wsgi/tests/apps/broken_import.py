"""An app whose import raises: c10k must stop with the traceback and exit status 3."""
RATIO = 1 / 0


def app(environ, start_response):  # pragma: no cover - never reached
    start_response("200 OK", [])
    return [b""]
