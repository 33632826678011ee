"""What the ``rq_*`` benchmarks share: throwaway databases, a Redis index of their own,
the commit of the checkout, and the statistics they print.

Not a benchmark; imported by ``rq_trigger.py``, ``rq_worker.py``, ``rq_worker_memory.py``
and ``rq_latency.py``, which are run from the repository root as scripts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import typing as t

import redis
import rq
import sqlalchemy as sa

import flask_chimeway

PG_ADMIN_URL = os.environ.get(
    "CHIMEWAY_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
#: The benchmarks' own Redis database; never the test suite's (13).
REDIS_URL = os.environ.get("CHIMEWAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
#: Redis database indexes the benchmarks refuse to flush.
FORBIDDEN_REDIS_DBS = frozenset({0, 13})


class BackendUnavailable(Exception):
    """A database server or Redis cannot be reached, or is not ours to use."""


# the checkout and the machine -------------------------------------------------------------


def source_state() -> str:
    """The commit of the checkout, and whether the package has uncommitted changes."""
    package = os.path.dirname(os.path.abspath(flask_chimeway.__file__))
    try:
        head = subprocess.run(
            ["git", "-C", package, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", package, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{flask_chimeway.__version__} (not a git checkout)"
    changes = " + uncommitted changes in flask_chimeway/" if dirty else " (flask_chimeway/ clean)"
    return f"{flask_chimeway.__version__} at {head}{changes}"


def print_header(title: str) -> None:
    """The first lines every benchmark prints: what, on which stack, at which commit."""
    print(
        f"{title}: python {sys.version.split()[0]}, SQLAlchemy {sa.__version__},"
        f" rq {rq.__version__}, redis-py {redis.__version__}, {os.cpu_count()} CPU(s),"
        f" {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(f"Flask-Chimeway source: {source_state()}")
    print(f"Load average at start: {load_average()} (other work on the machine skews figures)")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages of the machine."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def silence_logging() -> None:
    """No log record is formatted or written (the ``log`` channel becomes a no-op call)."""
    logging.disable(logging.CRITICAL)


# throwaway databases ------------------------------------------------------------------------


@dataclasses.dataclass
class SQLiteDatabase:
    """A SQLite file in a temporary directory."""

    directory: str
    backend: str = "sqlite"

    @property
    def url(self) -> str:
        return f"sqlite:///{os.path.join(self.directory, 'bench.db')}"

    def drop(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclasses.dataclass
class PostgreSQLDatabase:
    """A database created for one run through the admin URL, dropped at the end."""

    admin: sa.Engine
    name: str
    backend: str = "postgresql"

    @property
    def url(self) -> str:
        return self.admin.url.set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


Database: t.TypeAlias = SQLiteDatabase | PostgreSQLDatabase


def create_database(backend: str, admin_url: str, label: str) -> Database:
    """A throwaway database: ``chimeway_bench_<label>_<pid>`` on PostgreSQL."""
    if backend == "sqlite":
        return SQLiteDatabase(tempfile.mkdtemp(prefix=f"chimeway_bench_{label}_"))
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"chimeway_bench_{label}_{os.getpid()}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        raise BackendUnavailable(f"{admin_url} is not reachable: {exc.orig}") from exc
    except Exception:
        admin.dispose()
        raise
    return PostgreSQLDatabase(admin, name)


def truncate_chimeway_tables(engine: sa.Engine, metadata: sa.MetaData) -> None:
    """Empty every Flask-Chimeway table (ids restart on PostgreSQL)."""
    tables = [tb for tb in metadata.sorted_tables if tb.name.startswith("chimeway_")]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(conn.dialect.identifier_preparer.format_table(tb) for tb in tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                conn.execute(table.delete())


# the Redis index ----------------------------------------------------------------------------


class RedisIndex:
    """The one Redis database a benchmark may flush.

    It must be empty when the benchmark starts (so nobody else's keys are flushed), must not
    be 0 or the test suite's 13, and is flushed between runs and at the end.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)
        db = int(self.client.connection_pool.connection_kwargs.get("db", 0))
        if db in FORBIDDEN_REDIS_DBS:
            raise BackendUnavailable(
                f"{url} uses Redis database {db}, which the benchmarks never flush; pass a"
                " URL with another index, such as redis://127.0.0.1:6379/11."
            )
        self.db = db
        try:
            size = self.client.dbsize()
        except redis.RedisError as exc:
            raise BackendUnavailable(f"Redis at {url} is not reachable: {exc}") from exc
        if size:
            raise BackendUnavailable(
                f"Redis database {db} at {url} holds {size} key(s); the benchmark flushes its"
                " database, so it only starts on an empty one. Empty it yourself if these"
                f" keys are leftovers of an interrupted run (redis-cli -n {db} flushdb), or"
                " pass another index."
            )

    def flush(self) -> None:
        self.client.flushdb()

    def close(self) -> None:
        self.flush()
        self.client.close()


# statistics ---------------------------------------------------------------------------------


def median(values: t.Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: t.Sequence[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def percentile(sorted_values: t.Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def rss_kib() -> int:
    """This process's resident set size (``VmRSS``), in KiB."""
    return _proc_status_kib("VmRSS")


def peak_rss_kib() -> int:
    """This process's peak resident set size since the last :func:`reset_peak_rss`."""
    return _proc_status_kib("VmHWM")


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs``); ``False`` if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")
