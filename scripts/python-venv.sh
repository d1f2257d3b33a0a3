#!/usr/bin/env bash
# Creates (or reuses) the Python venv that the WSGI tests and the peer benchmarks use, from PyPI,
# with the python3 that c10k embeds, and prints its location as an `export` line:
#
#   eval "$(bash scripts/python-venv.sh)"     # -> export C10K_TEST_VENV=/tmp/c10k-ci/venv
#
# Packages: the apps (flask, django, gevent, pymysql, requests) and the peers c10k is measured
# against (gunicorn, uwsgi, granian; packaging, which gunicorn's gevent worker imports without
# depending on it). Everything but the export line goes to stderr.
set -euo pipefail

DIR=${C10K_VENV_DIR:-${C10K_SERVICES_DIR:-/tmp/c10k-ci}/venv}
PACKAGES=(flask django gevent pymysql requests packaging gunicorn uwsgi granian)
log() { echo "python-venv: $*" >&2; }

# The interpreter pyo3 builds against (PYO3_PYTHON, else python3 on PATH): the venv must match it.
PY=${PYO3_PYTHON:-python3}
command -v "$PY" >/dev/null || { log "no $PY on PATH (c10k embeds CPython 3.8+)"; exit 1; }

if ! "$DIR/bin/python" -c 'import flask, django, gevent, pymysql, requests, packaging, gunicorn, granian' 2>/dev/null ||
  ! [[ -x $DIR/bin/uwsgi ]]; then
  log "creating $DIR with $("$PY" -V 2>&1) and ${PACKAGES[*]} from PyPI"
  rm -rf "$DIR"
  mkdir -p "$(dirname "$DIR")"
  "$PY" -m venv "$DIR" >&2
  "$DIR/bin/pip" install -q --disable-pip-version-check "${PACKAGES[@]}" >&2
fi
log "ready: $DIR ($("$DIR/bin/python" -V 2>&1))"
echo "export C10K_TEST_VENV=$DIR"
