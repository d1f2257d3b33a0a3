"""An app that imports a module that does not exist: an exception at import, not a missing app."""
import c10k_no_such_dependency  # noqa: F401


def app(environ, start_response):  # pragma: no cover - never reached
    start_response("200 OK", [])
    return [b""]
