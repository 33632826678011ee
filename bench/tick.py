"""Tick benchmark: what one ``flask chimeway progress`` tick costs, against the number of
due workflow runs and against the size of the runs table.

Run from the repository root::

    .venv/bin/python bench/tick.py [--backend postgresql|sqlite|both] [--rounds K]
        [--waiting-small N] [--waiting-large N] [--due-small N] [--due-large N]
        [--in-flight N] [--empty-ticks E]

The design says the tick "works in bounded batches through indexes, so its cost follows
the number of due rows, not the table size". Three measurements check it, each as a ratio
of ticks timed in the same round:

1. **Empty tick**: one tick with no due run over 1,000 waiting runs, and one over 100,000
   waiting runs (two databases with the same schema). Goal: the ratio is at most 2.
2. **Due ticks**: one tick that finds ``--due-small`` due runs and one that finds ten
   times as many (200 and 2,000 by default, so that a run takes about three minutes; the
   issue's 1,000 and 10,000 with ``--due-small 1000 --due-large 10000``), over the
   100,000 waiting runs. Goal: about linear, the same cost per due run.
3. **In-flight runs**: an empty tick over 1,000 and over 100,000 waiting runs again, with
   5,000 runs in flight in each database (``active``: their step delivery is queued, not
   finished). Same goal as 1: nothing is due, so the table size must not matter.

Rows are seeded with Core executemany, as a workflow leaves them after its first step:
an event, a notification, a ``succeeded`` step-0 delivery, a ``held`` step-2 delivery,
and a run ``waiting`` at step 1 (``due_at`` in the future, or in the past for a due run),
for a notifier whose workflow is ``deliver("log"), wait(hours=1), deliver("log")``. An
in-flight run is ``active`` at step 2 with its delivery ``pending``.

A due run costs the tick two things: advancing it (the wait is over, the held step-2
delivery becomes ``pending``, the run ``active``) and, with the default ``sync``
dispatcher, performing that delivery in-process right after the commit of each batch
(claim, call the ``log`` channel, record, then move the run to ``completed``). Each due
size is therefore timed twice: with ``sync``, and with ``CHIMEWAY_DISPATCHER = "rq"``
and a Redis URL that cannot be reached, where the push after the commit fails at once
(the documented Redis-down behaviour) and the activated deliveries stay ``pending``:
advancing only. See ``docs/performance.rst``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import logging
import os
import statistics
import sys
import time
import typing as t

import sqlalchemy as sa
from _common import (
    PG_ADMIN_URL,
    BackendUnavailable,
    Database,
    create_database,
    source_state,
    spread,
)
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Chimeway, Notifier, Recipient, models
from flask_chimeway.progress import TickReport, progress
from flask_chimeway.recipients import recipient_snapshot
from flask_chimeway.workflows import Workflow, deliver, wait

NOTIFIER_KEY = "bench.reminder"
WORKFLOW = Workflow(deliver("log"), wait(hours=1), deliver("log"))
#: The step the seeded runs wait at, and the step whose delivery is held behind it.
WAIT_STEP, HELD_STEP = 1, 2
#: Where the ``rq`` app would enqueue: a socket that does not exist, so the push after
#: each commit fails at once and the activated deliveries stay ``pending``.
NOWHERE_REDIS_URL = "unix:///nonexistent/chimeway-bench-no-redis.sock"
#: Rows per executemany call when seeding.
CHUNK = 5000
TEXT = (
    "Your task is still open. Open it to see its description, its due date and the people"
    " working on it, or reply to this message to ask a question."
)

EVENTS = t.cast(sa.Table, models.Event.__table__)
NOTIFICATIONS = t.cast(sa.Table, models.Notification.__table__)
DELIVERIES = t.cast(sa.Table, models.Delivery.__table__)
ATTEMPTS = t.cast(sa.Table, models.DeliveryAttempt.__table__)
DELIVERY_TRANSITIONS = t.cast(sa.Table, models.DeliveryTransition.__table__)
RUNS = t.cast(sa.Table, models.WorkflowRun.__table__)
RUN_TRANSITIONS = t.cast(sa.Table, models.WorkflowTransition.__table__)


# seeding --------------------------------------------------------------------------------

#: How a seeded run stands: ``waiting`` (its wait ends in a day or two), ``due`` (its wait
#: ended minutes ago) or ``in_flight`` (``active`` at step 2, its delivery ``pending``).
Kind: t.TypeAlias = t.Literal["waiting", "due", "in_flight"]


def seed_runs(engine: sa.Engine, first: int, count: int, kind: Kind) -> None:
    """Insert ``count`` runs of ``kind`` with ids ``first`` onwards, with Core executemany.

    Run ``k`` has event, notification and run id ``k`` and deliveries ``2k - 1`` (step 0,
    ``succeeded``) and ``2k`` (step 2: ``held``, or ``pending`` for a run in flight).
    """
    now = models.utcnow()
    definition = WORKFLOW.to_json()
    for start in range(first, first + count, CHUNK):
        ks = range(start, min(start + CHUNK, first + count))
        with engine.begin() as conn:
            conn.execute(
                sa.insert(EVENTS),
                [
                    {
                        "id": k,
                        "tenant": "",
                        "notifier_key": NOTIFIER_KEY,
                        "notifier_version": 1,
                        "params": {"task_id": k},
                        "created_at": now,
                    }
                    for k in ks
                ],
            )
            conn.execute(
                sa.insert(NOTIFICATIONS),
                [
                    {
                        "id": k,
                        "event_id": k,
                        "tenant": "",
                        "recipient_id": f"user-{k}",
                        "recipient_data": recipient_snapshot(Recipient(f"user-{k}")),
                        "notifier_key": NOTIFIER_KEY,
                        "created_at": now,
                    }
                    for k in ks
                ],
            )
            conn.execute(
                sa.insert(DELIVERIES), [row for k in ks for row in delivery_rows(k, now, kind)]
            )
            conn.execute(sa.insert(RUNS), [run_row(k, now, kind, definition) for k in ks])


def run_row(k: int, now: dt.datetime, kind: Kind, definition: dict[str, t.Any]) -> dict[str, t.Any]:
    """Run ``k``: waiting at step 1 (due 1 to 11 minutes ago, or in 1 to 2 days, after any
    tick of the benchmark), or active at step 2."""
    if kind == "due":
        due_at: dt.datetime | None = now - dt.timedelta(seconds=60 + k % 600)
    elif kind == "waiting":
        due_at = now + dt.timedelta(days=1, seconds=k % 86400)
    else:
        due_at = None
    return {
        "id": k,
        "notification_id": k,
        "tenant": "",
        "recipient_id": f"user-{k}",
        "notifier_key": NOTIFIER_KEY,
        "notifier_version": 1,
        "state": "active" if kind == "in_flight" else "waiting",
        "current_step": HELD_STEP if kind == "in_flight" else WAIT_STEP,
        "due_at": due_at,
        "definition": definition,
        "match_values": {},
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }


def delivery_rows(k: int, now: dt.datetime, kind: Kind) -> list[dict[str, t.Any]]:
    """The two deliveries of run ``k``: step 0 sent, step 2 held behind the wait (or
    activated, for a run in flight)."""
    common = {
        "notification_id": k,
        "channel": "log",
        "content": {"subject": f"Task {k} is waiting for you", "text": TEXT},
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    in_flight = kind == "in_flight"
    return [
        {
            **common,
            "id": 2 * k - 1,
            "step": 0,
            "status": "succeeded",
            "status_reason": "sent",
            "attempt_count": 1,
            "next_attempt_at": None,
            "completed_at": now,
        },
        {
            **common,
            "id": 2 * k,
            "step": HELD_STEP,
            "status": "pending" if in_flight else "held",
            "status_reason": "step_activated" if in_flight else "held",
            "attempt_count": 0,
            "next_attempt_at": now if in_flight else None,
            "completed_at": None,
        },
    ]


def remove_runs(engine: sa.Engine, first: int) -> None:
    """Delete the runs from id ``first`` on, with every row the tick wrote for them."""
    with engine.begin() as conn:
        conn.execute(sa.delete(RUN_TRANSITIONS).where(RUN_TRANSITIONS.c.run_id >= first))
        for table in (DELIVERY_TRANSITIONS, ATTEMPTS):
            conn.execute(sa.delete(table).where(table.c.delivery_id >= 2 * first - 1))
        conn.execute(sa.delete(RUNS).where(RUNS.c.id >= first))
        conn.execute(sa.delete(DELIVERIES).where(DELIVERIES.c.id >= 2 * first - 1))
        conn.execute(sa.delete(NOTIFICATIONS).where(NOTIFICATIONS.c.id >= first))
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.id >= first))


def tidy(engine: sa.Engine) -> None:
    """On PostgreSQL, ``VACUUM ANALYZE`` the tables, as autovacuum would in time: dead
    rows are gone and the planner's statistics are current. Nothing on SQLite."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in models.Base.metadata.sorted_tables:
            conn.exec_driver_sql(f"VACUUM ANALYZE {table.name}")


def count_states(engine: sa.Engine, first: int) -> dict[tuple[str, str], int]:
    """``(run state, step-2 delivery status)`` of the runs from id ``first`` on."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(RUNS.c.state, DELIVERIES.c.status, sa.func.count())
            .join(DELIVERIES, DELIVERIES.c.id == RUNS.c.id * 2)
            .where(RUNS.c.id >= first)
            .group_by(RUNS.c.state, DELIVERIES.c.status)
        ).all()
    return {(state, status): n for state, status, n in rows}


# watching the SQL -----------------------------------------------------------------------


class SQLWatch:
    """Counts the statements and commits of the engines it is attached to, and records
    the statements while :attr:`recording` is set (for ``EXPLAIN``)."""

    def __init__(self) -> None:
        self.statements = 0
        self.commits = 0
        self.recording = False
        self.recorded: list[tuple[str, t.Any]] = []

    def attach(self, engine: sa.Engine) -> None:
        sa.event.listen(engine, "before_cursor_execute", self._statement)
        sa.event.listen(engine, "commit", self._commit)

    def detach(self, engine: sa.Engine) -> None:
        sa.event.remove(engine, "before_cursor_execute", self._statement)
        sa.event.remove(engine, "commit", self._commit)

    def reset(self) -> None:
        self.statements = self.commits = 0
        self.recorded = []

    def _statement(
        self,
        conn: sa.Connection,
        cursor: t.Any,
        statement: str,
        parameters: t.Any,
        context: t.Any,
        executemany: bool,
    ) -> None:
        self.statements += 1
        if self.recording:
            self.recorded.append((statement, parameters))

    def _commit(self, conn: sa.Connection) -> None:
        self.commits += 1


# the apps and the ticks -------------------------------------------------------------------


@dataclasses.dataclass
class Tick:
    """One timed tick."""

    seconds: float
    statements: int
    commits: int
    report: TickReport


@dataclasses.dataclass
class Side:
    """One database: its ``sync`` and ``rq`` apps, and how many waiting runs it holds."""

    name: str
    sync: Flask
    rq: Flask
    waiting: int

    @property
    def first_extra(self) -> int:
        """The id of the first run seeded for a measurement, after the waiting ones."""
        return self.waiting + 1


@dataclasses.dataclass
class Bench:
    """One backend: the small and the large database, the apps on them, the SQL watch."""

    backend: str
    db: SQLAlchemy
    small: Side
    large: Side
    watch: SQLWatch

    def engine(self, app: Flask) -> sa.Engine:
        with app.app_context():
            return self.db.engine

    def tick(self, app: Flask) -> Tick:
        """Time one tick of ``app`` as of now."""
        with app.app_context():
            gc.collect()
            self.watch.reset()
            start = time.perf_counter()
            report = progress(now=models.utcnow())
            seconds = time.perf_counter() - start
        return Tick(seconds, self.watch.statements, self.watch.commits, report)

    def empty_tick(self, app: Flask) -> Tick:
        tick = self.tick(app)
        if any(dataclasses.astuple(tick.report)):
            raise RuntimeError(f"{self.backend}: the empty tick did something: {tick.report}")
        return tick

    def empty_ticks(self, ticks: int, number: int, *, dispatcher: str) -> tuple[Tick, Tick]:
        """The median of ``ticks`` empty ticks on each database, alternating which goes
        first."""
        small: list[Tick] = []
        large: list[Tick] = []
        for rep in range(ticks):
            pair = [(self.small, small), (self.large, large)]
            for side, ticked in pair if (rep + number) % 2 else pair[::-1]:
                ticked.append(self.empty_tick(side.sync if dispatcher == "sync" else side.rq))
        return median_tick(small), median_tick(large)

    def in_flight_ticks(self, count: int, ticks: int, number: int) -> tuple[Tick, Tick]:
        """Empty ticks of the ``rq`` apps with ``count`` runs in flight in each database."""
        sides = (self.small, self.large)
        for side in sides:
            seed_runs(self.engine(side.sync), side.first_extra, count, "in_flight")
            tidy(self.engine(side.sync))
        try:
            return self.empty_ticks(ticks, number, dispatcher="rq")
        finally:
            for side in sides:
                remove_runs(self.engine(side.sync), side.first_extra)
                tidy(self.engine(side.sync))

    def due_tick(self, dispatcher: str, due: int) -> Tick:
        """Seed ``due`` due runs in the large database, tick, check what the tick did,
        remove them."""
        side = self.large
        engine = self.engine(side.sync)
        seed_runs(engine, side.first_extra, due, "due")
        tidy(engine)
        try:
            tick = self.tick(side.sync if dispatcher == "sync" else side.rq)
            expected = {"sync": ("completed", "succeeded"), "rq": ("active", "pending")}
            states = count_states(engine, side.first_extra)
            if tick.report.runs_advanced != due or states != {expected[dispatcher]: due}:
                raise RuntimeError(
                    f"{self.backend} {dispatcher}: the tick advanced"
                    f" {tick.report.runs_advanced} of {due} due runs, leaving {states}"
                )
        finally:
            remove_runs(engine, side.first_extra)
            tidy(engine)
        return tick


def make_bench(backend: str, small_url: str, large_url: str, args: argparse.Namespace) -> Bench:
    db = SQLAlchemy()
    chimeway = Chimeway(db=db)

    @chimeway.notifier(NOTIFIER_KEY, channels=["log"], workflow=WORKFLOW)
    class Reminder(Notifier):
        def build(
            self, params: t.Mapping[str, t.Any], recipient: Recipient, channel: str
        ) -> dict[str, t.Any]:
            return {"subject": f"Task {params['task_id']} is waiting for you", "text": TEXT}

    def make_app(name: str, url: str, dispatcher: str) -> Flask:
        app = Flask(f"tick_{backend}_{name}_{dispatcher}")
        app.config.update(
            SQLALCHEMY_DATABASE_URI=url,
            CHIMEWAY_DISPATCHER=dispatcher,
            CHIMEWAY_REDIS_URL=NOWHERE_REDIS_URL,
            # the in-flight deliveries are never old enough for the tick to look for
            # their jobs in (unreachable) Redis
            CHIMEWAY_REQUEUE_AFTER=3600,
        )
        db.init_app(app)
        chimeway.init_app(app)
        return app

    def make_side(name: str, url: str, waiting: int) -> Side:
        side = Side(name, make_app(name, url, "sync"), make_app(name, url, "rq"), waiting)
        with side.sync.app_context():
            db.create_all()
        seed_runs(bench_engine(side.sync), 1, waiting, "waiting")
        tidy(bench_engine(side.sync))
        return side

    def bench_engine(app: Flask) -> sa.Engine:
        with app.app_context():
            return db.engine

    bench = Bench(
        backend,
        db,
        make_side("small", small_url, args.waiting_small),
        make_side("large", large_url, args.waiting_large),
        SQLWatch(),
    )
    for app in bench_apps(bench):
        bench.watch.attach(bench.engine(app))
    return bench


def bench_apps(bench: Bench) -> list[Flask]:
    return [bench.small.sync, bench.small.rq, bench.large.sync, bench.large.rq]


def dispose(bench: Bench) -> None:
    for app in bench_apps(bench):
        with app.app_context():
            bench.watch.detach(bench.db.engine)
            bench.db.session.remove()
            bench.db.engine.dispose()


# the rounds ---------------------------------------------------------------------------------

#: What one round measures: name -> tick.
Round: t.TypeAlias = dict[str, Tick]


def run_round(bench: Bench, args: argparse.Namespace, number: int, *, warm_up: bool) -> Round:
    """Empty ticks on both databases, then the same with runs in flight, then the four due
    ticks in an order rotated from round to round."""
    results: Round = {}
    results["empty_small"], results["empty_large"] = bench.empty_ticks(
        args.empty_ticks, number, dispatcher="sync"
    )
    in_flight = 100 if warm_up else args.in_flight
    results["flight_small"], results["flight_large"] = bench.in_flight_ticks(
        in_flight, args.empty_ticks, number
    )
    sizes = [100, 100] if warm_up else [args.due_small, args.due_large]
    cases = [(d, n) for d in ("sync", "rq") for n in sizes]
    offset = number % len(cases)
    for dispatcher, due in cases[offset:] + cases[:offset]:
        results[f"{dispatcher}_{due}"] = bench.due_tick(dispatcher, due)
    return results


def median_tick(ticks: list[Tick]) -> Tick:
    return sorted(ticks, key=lambda tick: tick.seconds)[len(ticks) // 2]


# EXPLAIN ------------------------------------------------------------------------------------

DUE_RUNS = "due runs (advance_due)"
STALLED_RUNS = "stalled runs (advance_stalled)"


def label(statement: str) -> str | None:
    """Which of the tick's queries ``statement`` is; ``None`` for what is not a query."""
    text = " ".join(statement.split())
    if not text.startswith("SELECT"):
        return None
    if "FROM chimeway_signals" in text:
        return "unrouted signals (route_unrouted)"
    if "FROM chimeway_workflow_runs" in text and "updated_at <=" in text:
        return STALLED_RUNS
    if "FROM chimeway_workflow_runs" in text and "due_at <=" in text:
        return DUE_RUNS
    if "FROM chimeway_deliveries" in text and "lease_expires_at <=" in text:
        return "stale leases (_expire_leases)"
    if "FROM chimeway_deliveries" in text and "next_attempt_at <=" in text:
        return "due deliveries (_perform_due)"
    if "FROM chimeway_deliveries" in text and "step IS NOT NULL" in text:
        return "step deliveries of a batch of runs"
    return text[:60]


def recorded_queries(bench: Bench, app: Flask) -> dict[str, tuple[str, t.Any]]:
    """The SELECTs of one empty tick of ``app``, by :func:`label`."""
    bench.watch.recording = True
    try:
        bench.empty_tick(app)
    finally:
        bench.watch.recording = False
    return {
        name: (statement, parameters)
        for statement, parameters in bench.watch.recorded
        if (name := label(statement)) is not None
    }


def explain(engine: sa.Engine, statement: str, parameters: t.Any) -> list[str]:
    """The plan of ``statement`` run now (its time parameters moved to now), rolled back:
    ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL, ``EXPLAIN QUERY PLAN`` on SQLite."""
    now: t.Any = models.utcnow()
    if engine.dialect.name == "sqlite":
        now = now.replace(tzinfo=None).isoformat(sep=" ")
    if isinstance(parameters, dict):
        parameters = {k: now if is_time(v) else v for k, v in parameters.items()}
    else:
        parameters = tuple(now if is_time(v) else v for v in parameters)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            lines = [str(row[-1]) for row in rows]
        else:
            lines = list(
                conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                .scalars()
                .all()
            )
        conn.rollback()
    return lines


def is_time(value: object) -> bool:
    """Whether a bound value is a time (a datetime, or its text form on SQLite)."""
    if isinstance(value, dt.datetime):
        return True
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def key_lines(lines: list[str]) -> list[str]:
    """The scan, join and timing lines of a plan."""
    words = ("Scan", "SCAN", "SEARCH", "Index Cond", "Nested Loop", "Join", "Execution Time")
    return [line.rstrip() for line in lines if any(w in line for w in words)]


def print_plan(engine: sa.Engine, title: str, query: tuple[str, t.Any]) -> None:
    print(f"    {title}")
    for line in key_lines(explain(engine, *query)):
        print(f"      {line}")


def print_plans(bench: Bench, args: argparse.Namespace) -> None:
    """Explain the tick's queries: each one over the waiting runs alone, the due-runs
    query with due runs among them, the stalled-runs query with runs in flight."""
    large = bench.large
    engine = bench.engine(large.sync)
    queries = recorded_queries(bench, large.sync)
    print(f"  query plans over {large.waiting:,} waiting runs, 0 due:")
    for name, query in queries.items():
        print_plan(engine, name, query)
    print(f"  query plans with runs due or in flight among the {large.waiting:,} waiting runs:")
    seed_runs(engine, large.first_extra, args.due_large, "due")
    tidy(engine)
    try:
        print_plan(engine, f"{DUE_RUNS}, {args.due_large:,} due", queries[DUE_RUNS])
    finally:
        remove_runs(engine, large.first_extra)
        tidy(engine)
    for side in (bench.small, large):
        side_engine = bench.engine(side.sync)
        seed_runs(side_engine, side.first_extra, args.in_flight, "in_flight")
        tidy(side_engine)
        try:
            print_plan(
                side_engine,
                f"{STALLED_RUNS}, {args.in_flight:,} in flight, {side.waiting:,} waiting",
                queries[STALLED_RUNS],
            )
        finally:
            remove_runs(side_engine, side.first_extra)
            tidy(side_engine)


# databases ----------------------------------------------------------------------------------


def seconds(rounds: list[Round], key: str) -> list[float]:
    return [r[key].seconds for r in rounds]


def per_tick(rounds: list[Round], key: str, what: str) -> float:
    """The median over the rounds of a count of a tick (``statements``, ``commits``)."""
    return float(statistics.median(int(getattr(r[key], what)) for r in rounds))


def ratios(rounds: list[Round], numerator: str, denominator: str) -> list[float]:
    """The per-round ratios of two ticks' times."""
    return [r[numerator].seconds / r[denominator].seconds for r in rounds]


def report_sizes(bench: Bench, rounds: list[Round], prefix: str) -> None:
    """Empty ticks on the small and the large database, and their ratio."""
    for side in (bench.small, bench.large):
        key = f"{prefix}_{side.name}"
        times = [s * 1e3 for s in seconds(rounds, key)]
        print(
            f"     {side.waiting:>9,} waiting runs {statistics.median(times):9.2f} ms"
            f"   (rounds {spread(times)} ms; {per_tick(rounds, key, 'statements'):.0f}"
            f" statements, {per_tick(rounds, key, 'commits'):.0f} commits)"
        )
    found = ratios(rounds, f"{prefix}_large", f"{prefix}_small")
    print(
        f"     ratio {bench.large.waiting:,} / {bench.small.waiting:,} waiting:"
        f" {statistics.median(found):.2f} (rounds {spread(found)}); goal: at most 2"
    )


def report(bench: Bench, rounds: list[Round], args: argparse.Namespace) -> None:
    print(f"  1. empty tick (0 due runs), median of {args.empty_ticks} ticks per round:")
    report_sizes(bench, rounds, "empty")
    due_small, due_large = args.due_small, args.due_large
    print(f"  2. ticks with due runs, over {bench.large.waiting:,} waiting runs:")
    for dispatcher, title in (
        ("sync", "sync (advance the runs + perform their deliveries in-process)"),
        ("rq", "rq, Redis unreachable (advance the runs only, deliveries left pending)"),
    ):
        print(f"     {title}")
        for due in (due_small, due_large):
            key = f"{dispatcher}_{due}"
            times = seconds(rounds, key)
            mid = statistics.median(times)
            print(
                f"       {due:>7,} due {mid:9.3f} s  {mid / due * 1e3:7.3f} ms/run"
                f"   (rounds {spread(times, 3)} s;"
                f" {per_tick(rounds, key, 'statements') / due:.1f} statements,"
                f" {per_tick(rounds, key, 'commits') / due:.2f} commits per run)"
            )
        found = ratios(rounds, f"{dispatcher}_{due_large}", f"{dispatcher}_{due_small}")
        print(
            f"       ratio {due_large:,} / {due_small:,} due: {statistics.median(found):.2f}"
            f" (rounds {spread(found)}); linear: {due_large / due_small:g}"
        )
    shares = [1 - r for r in ratios(rounds, f"rq_{due_large}", f"sync_{due_large}")]
    print(
        f"     performing the deliveries: {statistics.median(shares):.0%} of the sync tick"
        f" with {due_large:,} due runs (rounds {spread([s * 100 for s in shares], 0)} %)"
    )
    print(
        f"  3. empty tick (0 due runs) with {args.in_flight:,} runs in flight (active, delivery"
        f" pending; rq app), median of {args.empty_ticks} ticks per round:"
    )
    report_sizes(bench, rounds, "flight")


# main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The cost of one Flask-Chimeway tick against due runs and table size."
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="postgresql")
    parser.add_argument("--rounds", type=int, default=3, metavar="K", help="measured rounds (3)")
    parser.add_argument(
        "--waiting-small", type=int, default=1000, metavar="N", help="small table (1000)"
    )
    parser.add_argument(
        "--waiting-large", type=int, default=100_000, metavar="N", help="large table (100000)"
    )
    parser.add_argument(
        "--due-small", type=int, default=200, metavar="N", help="fewer due runs (200)"
    )
    parser.add_argument(
        "--due-large", type=int, default=2000, metavar="N", help="more due runs (2000)"
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=5000,
        metavar="N",
        help="runs in flight in each database for measurement 3 (5000)",
    )
    parser.add_argument(
        "--empty-ticks",
        type=int,
        default=5,
        metavar="E",
        help="empty ticks per database and round; the round keeps their median (5)",
    )
    parser.add_argument(
        "--postgresql-url",
        default=PG_ADMIN_URL,
        help="admin URL used to create and drop the throwaway databases"
        " (default $CHIMEWAY_BENCH_PG_URL or postgresql+psycopg://postgres@127.0.0.1:5432/postgres)",
    )
    args = parser.parse_args(argv)
    for name in (
        "rounds",
        "waiting_small",
        "waiting_large",
        "due_small",
        "in_flight",
        "empty_ticks",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.due_large <= args.due_small:
        parser.error("--due-large must be more than --due-small")
    if args.waiting_large <= args.waiting_small:
        parser.error("--waiting-large must be more than --waiting-small")
    return args


def run_backend(backend: str, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    databases: list[Database] = []
    try:
        databases.append(create_database(backend, args.postgresql_url, "tick_small"))
        databases.append(create_database(backend, args.postgresql_url, "tick_large"))
        bench = make_bench(backend, databases[0].url, databases[1].url, args)
        try:
            seeded = time.perf_counter() - started
            run_round(bench, args, 0, warm_up=True)
            rounds = [run_round(bench, args, k, warm_up=False) for k in range(1, args.rounds + 1)]
            measured = time.perf_counter() - started - seeded
            print(
                f"{backend} ({sa.make_url(databases[1].url).drivername}): medians of"
                f" {args.rounds} round(s) after 1 warm-up round; seeding {seeded:.0f} s,"
                f" rounds {measured:.0f} s"
            )
            report(bench, rounds, args)
            print_plans(bench, args)
        finally:
            dispose(bench)
    finally:
        for database in databases:
            database.drop()
    print()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.disable(logging.CRITICAL)
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    print(
        f"Flask-Chimeway tick benchmark: python {sys.version.split()[0]},"
        f" SQLAlchemy {sa.__version__}, {os.cpu_count()} CPU(s),"
        f" {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(f"Flask-Chimeway source: {source_state()}")
    print(f"Load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("Times are medians over the rounds; ratios are medians of the per-round ratios.\n")
    failed = False
    for backend in backends:
        try:
            run_backend(backend, args)
        except BackendUnavailable as exc:
            print(f"{backend}: skipped, {exc}\n")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
