#!/usr/bin/env bash
# The test command: installs what it needs into .venv, starts PostgreSQL and Redis when they
# are installed but down, then runs every quality gate: ruff, mypy --strict, pytest, the docs.
# With CI=true a missing service fails the run instead of skipping the tests that need it.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        echo "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
    fi
fi
if command -v redis-server >/dev/null && ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
    echo "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

echo "== ruff"
.venv/bin/ruff check flask_chimeway tests example bench docs
.venv/bin/ruff format --check flask_chimeway tests example bench docs
echo "== mypy --strict flask_chimeway"
.venv/bin/mypy --strict flask_chimeway
echo "== pytest"
.venv/bin/python -m pytest "$@"
echo "== docs"
.venv/bin/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
echo "all checks passed"
