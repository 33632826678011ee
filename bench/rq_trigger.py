"""RQ dispatcher benchmark: trigger + commit + enqueue, against plain SQLAlchemy + RQ.

Run from the repository root (PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379)::

    .venv/bin/python bench/rq_trigger.py [--backend sqlite|postgresql|both] [--rounds K]
        [--transactions T] [--recipients R] [--blocks N] [--big-recipients B]
        [--redis-url URL]

Three variants write the same rows and push the same jobs, in one process, on one
database and one Redis database:

* ``chimeway``: an app with ``CHIMEWAY_DISPATCHER = "rq"``: ``Notifier.trigger`` then
  ``db.session.commit()``, which pushes one RQ job per delivery in one Redis pipeline;
* ``orm``: plain SQLAlchemy ``Session.add_all`` of the same rows, flush, commit, then the
  same jobs pushed by hand in one pipeline (``Queue.prepare_data`` +
  ``enqueue_many(pipeline=...)`` + ``execute()``);
* ``core``: plain SQLAlchemy Core executemany of the same rows (``RETURNING`` the ids the
  jobs need), commit, then the same pipeline.

Two shapes, two channels each: ``many`` (T transactions of one trigger to R recipients)
and ``big`` (one transaction of one trigger to B recipients). In every round the variants
take turns: the T transactions are split into N blocks and each block is run by every
variant, in an order rotated from block to block and round to round, so that a burst of
load on the machine hits all of them alike.

A transaction is timed from before the trigger (or before the baseline builds its rows)
until ``commit()`` returned (Chimeway) or the pipeline was executed (baselines); the time
is also split at the moment the database acknowledged the COMMIT. Nothing executes the
jobs: they are counted, then the Redis database is flushed, after each shape of each
round. See ``docs/performance.rst``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
import typing as t

import redis
import rq
import sqlalchemy as sa
import sqlalchemy.orm as sa_orm
from _common import (
    PG_ADMIN_URL,
    REDIS_URL,
    BackendUnavailable,
    RedisIndex,
    create_database,
    load_average,
    median,
    print_header,
    silence_logging,
    spread,
    truncate_chimeway_tables,
)
from bench_app import (
    TASK_ASSIGNED,
    TASK_CHANNELS,
    TaskAssigned,
    build_content,
    create_app,
    db,
    recipient_ids,
    trigger_params,
)
from flask import Flask

from flask_chimeway import models

#: What Flask-Chimeway enqueues, spelled out here so the baselines do not call its code.
JOB_FUNCTION = "flask_chimeway.jobs.perform_delivery_job"
JOB_QUEUE = "chimeway_delivery"
JOB_RESULT_TTL = 600
#: Marks a session whose commits are timed (see :class:`CommitClock`).
TIMED = "chimeway_bench_timed"
#: The ratio the issue asks for: Chimeway's time at most 1.3 x the baseline's.
GOAL = 1.3


# the baselines: the same tables, mapped by plain SQLAlchemy ---------------------------------

BARE_METADATA = sa.MetaData()
EVENTS, NOTIFICATIONS, DELIVERIES = (
    t.cast(sa.Table, model.__table__).to_metadata(BARE_METADATA)
    for model in (models.Event, models.Notification, models.Delivery)
)


class BareBase(sa_orm.DeclarativeBase):
    """Plain mappings of Flask-Chimeway's tables, independent of its model classes."""

    metadata = BARE_METADATA


class BareEvent(BareBase):
    __table__ = EVENTS
    notifications: sa_orm.Mapped[list[BareNotification]] = sa_orm.relationship()


class BareNotification(BareBase):
    __table__ = NOTIFICATIONS
    deliveries: sa_orm.Mapped[list[BareDelivery]] = sa_orm.relationship()


class BareDelivery(BareBase):
    __table__ = DELIVERIES
    if t.TYPE_CHECKING:
        id: int


def write_orm(session: sa_orm.Session, number: int, recipients: list[str]) -> list[int]:
    """Add one event with its notifications and deliveries, flush; the delivery ids."""
    params = trigger_params(number)
    deliveries: list[BareDelivery] = []
    notifications = []
    for rid in recipients:
        mine = [
            BareDelivery(channel=c, content=build_content(params, rid, c)) for c in TASK_CHANNELS
        ]
        deliveries.extend(mine)
        notifications.append(
            BareNotification(
                tenant="", recipient_id=rid, notifier_key=TASK_ASSIGNED, deliveries=mine
            )
        )
    event = BareEvent(
        tenant="",
        notifier_key=TASK_ASSIGNED,
        notifier_version=1,
        params=dict(params),
        notifications=notifications,
    )
    session.add_all([event])
    session.flush()
    return [d.id for d in deliveries]


def write_core(connection: sa.Connection, number: int, recipients: list[str]) -> list[int]:
    """Insert the same rows with three Core statements; the delivery ids."""
    params = trigger_params(number)
    now = models.utcnow()
    event_id = connection.execute(
        sa.insert(EVENTS).returning(EVENTS.c.id),
        {
            "tenant": "",
            "notifier_key": TASK_ASSIGNED,
            "notifier_version": 1,
            "params": dict(params),
            "created_at": now,
        },
    ).scalar_one()
    notification_ids = (
        connection.execute(
            sa.insert(NOTIFICATIONS).returning(NOTIFICATIONS.c.id, sort_by_parameter_order=True),
            [
                {
                    "event_id": event_id,
                    "tenant": "",
                    "recipient_id": rid,
                    "notifier_key": TASK_ASSIGNED,
                    "created_at": now,
                }
                for rid in recipients
            ],
        )
        .scalars()
        .all()
    )
    return list(
        connection.execute(
            sa.insert(DELIVERIES).returning(DELIVERIES.c.id),
            [
                {
                    "notification_id": nid,
                    "channel": c,
                    "status": "pending",
                    "status_reason": "planned",
                    "content": build_content(params, rid, c),
                    "attempt_count": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                }
                for nid, rid in zip(notification_ids, recipients, strict=True)
                for c in TASK_CHANNELS
            ],
        ).scalars()
    )


def enqueue(queue: rq.Queue, delivery_ids: list[int]) -> None:
    """One job per delivery in one Redis pipeline: the same function, arguments, job id,
    description and result TTL as Flask-Chimeway's jobs."""
    jobs = [
        rq.Queue.prepare_data(
            JOB_FUNCTION,
            args=(delivery_id, 1),
            job_id=f"chimeway-delivery-{delivery_id}-1",
            result_ttl=JOB_RESULT_TTL,
            description=f"chimeway delivery {delivery_id} attempt 1",
        )
        for delivery_id in delivery_ids
    ]
    with queue.connection.pipeline() as pipe:
        queue.enqueue_many(jobs, pipeline=pipe)
        pipe.execute()


# timing -------------------------------------------------------------------------------------


class CommitClock:
    """Records when a timed session's COMMIT was acknowledged: a plain ``after_commit``
    listener inserted ahead of Flask-Chimeway's own (which pushes the jobs)."""

    def __init__(self) -> None:
        self.last = 0.0

    def install(self) -> None:
        sa.event.listen(sa_orm.Session, "after_commit", self._mark, insert=True)

    def remove(self) -> None:
        sa.event.remove(sa_orm.Session, "after_commit", self._mark)

    def committed_since(self, start: float) -> float:
        if self.last < start:
            raise RuntimeError("the commit clock did not see the timed session commit")
        return self.last

    def _mark(self, session: sa_orm.Session) -> None:
        if session.info.get(TIMED) and session.get_nested_transaction() is None:
            self.last = time.perf_counter()


@dataclasses.dataclass
class Timing:
    """Seconds of one variant in one round, split at the COMMIT acknowledgement."""

    write: float = 0.0
    enqueue: float = 0.0

    @property
    def total(self) -> float:
        return self.write + self.enqueue


@dataclasses.dataclass(frozen=True)
class Shape:
    """``transactions`` transactions of one trigger to ``recipients`` recipients each, run
    in ``blocks`` consecutive blocks (the variants take turns block by block)."""

    name: str
    transactions: int
    recipients: int
    blocks: int = 1

    @property
    def deliveries(self) -> int:
        return self.transactions * self.recipients * len(TASK_CHANNELS)

    @property
    def rows(self) -> int:
        return self.transactions * (1 + self.recipients) + self.deliveries

    def block(self, index: int) -> range:
        """The transaction numbers of block ``index``."""
        return range(
            index * self.transactions // self.blocks,
            (index + 1) * self.transactions // self.blocks,
        )

    def describe(self) -> str:
        return (
            f"{self.transactions:,} transaction(s) x 1 trigger x {self.recipients:,} recipients"
            f" x {len(TASK_CHANNELS)} channels = {self.rows:,} rows, {self.deliveries:,} jobs"
        )


@dataclasses.dataclass
class Bench:
    """One backend: its database, the Chimeway app on it, the Redis database."""

    backend: str
    app: Flask
    redis_index: RedisIndex
    queue: rq.Queue
    clock: CommitClock

    @property
    def engine(self) -> sa.Engine:
        with self.app.app_context():
            return db.engine

    def run_chimeway(self, numbers: range, recipients: int, timing: Timing) -> None:
        with self.app.app_context():
            db.session.info[TIMED] = True
            for number in numbers:
                start = time.perf_counter()
                TaskAssigned.trigger(recipient_ids(number, recipients), trigger_params(number))
                db.session.commit()
                end = time.perf_counter()
                committed = self.clock.committed_since(start)
                timing.write += committed - start
                timing.enqueue += end - committed
            db.session.remove()

    def run_orm(self, numbers: range, recipients: int, timing: Timing) -> None:
        with sa_orm.Session(self.engine, info={TIMED: True}) as session:
            for number in numbers:
                start = time.perf_counter()
                ids = write_orm(session, number, recipient_ids(number, recipients))
                session.commit()
                committed = self.clock.committed_since(start)
                enqueue(self.queue, ids)
                end = time.perf_counter()
                timing.write += committed - start
                timing.enqueue += end - committed
                session.expunge_all()

    def run_core(self, numbers: range, recipients: int, timing: Timing) -> None:
        engine = self.engine
        for number in numbers:
            start = time.perf_counter()
            with engine.begin() as connection:
                ids = write_core(connection, number, recipient_ids(number, recipients))
            committed = time.perf_counter()
            enqueue(self.queue, ids)
            end = time.perf_counter()
            timing.write += committed - start
            timing.enqueue += end - committed

    def clear(self) -> None:
        with self.app.app_context():
            truncate_chimeway_tables(db.engine, db.metadata)
        self.redis_index.flush()

    def check(self, shape: Shape, variants: int) -> None:
        """Fail loudly if the variants did not write or enqueue what they should have
        (not a timing check)."""
        with self.engine.connect() as conn:
            counts = [
                conn.execute(sa.select(sa.func.count()).select_from(tb)).scalar_one()
                for tb in (EVENTS, NOTIFICATIONS, DELIVERIES)
            ]
            statuses = set(conn.execute(sa.select(DELIVERIES.c.status).distinct()).scalars())
        expected = [
            variants * shape.transactions,
            variants * shape.transactions * shape.recipients,
            variants * shape.deliveries,
        ]
        jobs = self.queue.count
        if counts != expected or statuses != {"pending"} or jobs != expected[2]:
            raise RuntimeError(
                f"{self.backend} {shape.name}: wrote {counts} rows with deliveries"
                f" {sorted(statuses)} and {jobs} queued job(s); expected {expected} with"
                f" deliveries ['pending'] and {expected[2]} job(s)"
            )


VARIANTS: dict[str, t.Callable[[Bench, range, int, Timing], None]] = {
    "chimeway": Bench.run_chimeway,
    "orm": Bench.run_orm,
    "core": Bench.run_core,
}
LABELS = {
    "chimeway": "chimeway trigger+commit",
    "orm": "baseline ORM add_all + RQ",
    "core": "baseline Core executemany + RQ",
}

Round: t.TypeAlias = dict[tuple[str, str], Timing]


def run_round(bench: Bench, shapes: list[Shape], round_number: int) -> Round:
    """Every shape with every variant. The variants take turns block by block, in an order
    rotated from block to block and round to round, on the same tables (emptied before
    each shape); the jobs pile up in Redis until the shape is checked, then are flushed."""
    names = list(VARIANTS)
    results: Round = {}
    for shape in shapes:
        bench.clear()
        timings = {name: Timing() for name in names}
        for index in range(shape.blocks):
            offset = (round_number + index) % len(names)
            for name in names[offset:] + names[:offset]:
                gc.collect()
                VARIANTS[name](bench, shape.block(index), shape.recipients, timings[name])
        bench.check(shape, len(names))
        for name, timing in timings.items():
            results[shape.name, name] = timing
    bench.clear()
    return results


# reporting ----------------------------------------------------------------------------------


def report_shape(shape: Shape, rounds: list[Round]) -> list[str]:
    """Print one shape's table; the verdicts against the goal, one line per baseline."""
    print(f"  {shape.name}: {shape.describe()} per round")
    print(
        f"    {'':<32}{'ms/txn':>9}{'to COMMIT':>11}{'enqueue':>9}{'jobs/s':>9}"
        f"   ratio chimeway/baseline (range over rounds)"
    )
    verdicts = []
    for name in VARIANTS:
        timings = [r[shape.name, name] for r in rounds]
        total = median([tm.total for tm in timings])
        line = (
            f"    {LABELS[name]:<32}{total / shape.transactions * 1e3:>9.2f}"
            f"{median([tm.write for tm in timings]) / shape.transactions * 1e3:>11.2f}"
            f"{median([tm.enqueue for tm in timings]) / shape.transactions * 1e3:>9.2f}"
            f"{shape.deliveries / total:>9,.0f}"
        )
        if name != "chimeway":
            ratios = [r[shape.name, "chimeway"].total / r[shape.name, name].total for r in rounds]
            ratio = median(ratios)
            line += f"   {ratio:.2f} ({spread(ratios)})"
            met = "met" if ratio <= GOAL else "NOT met"
            verdicts.append(f"{shape.name} vs {name}: {ratio:.2f} -> goal <= {GOAL} {met}")
        print(line)
    return verdicts


# main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Flask-Chimeway trigger + commit with the rq dispatcher, against plain"
        " SQLAlchemy inserts + one RQ pipeline."
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=5, metavar="K", help="measured rounds (5)")
    parser.add_argument(
        "--transactions",
        type=int,
        default=200,
        metavar="T",
        help="transactions of the 'many' shape (200)",
    )
    parser.add_argument(
        "--recipients",
        type=int,
        default=5,
        metavar="R",
        help="recipients per trigger in the 'many' shape (5)",
    )
    parser.add_argument(
        "--blocks",
        type=int,
        default=10,
        metavar="N",
        help="blocks the 'many' shape is split into; the variants take turns by block (10)",
    )
    parser.add_argument(
        "--big-recipients",
        type=int,
        default=1000,
        metavar="B",
        help="recipients of the one trigger of the 'big' shape (1000)",
    )
    parser.add_argument(
        "--postgresql-url",
        default=PG_ADMIN_URL,
        help="admin URL used to create and drop the throwaway database (default"
        " $CHIMEWAY_BENCH_PG_URL or postgresql+psycopg://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument(
        "--redis-url",
        default=REDIS_URL,
        help="a Redis database of the benchmark's own, flushed between runs (default"
        " $CHIMEWAY_BENCH_REDIS_URL or redis://127.0.0.1:6379/11)",
    )
    args = parser.parse_args(argv)
    for name in ("rounds", "transactions", "recipients", "blocks", "big_recipients"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run_backend(
    backend: str, args: argparse.Namespace, redis_index: RedisIndex, clock: CommitClock
) -> list[str]:
    shapes = [
        Shape("many", args.transactions, args.recipients, min(args.blocks, args.transactions)),
        Shape("big", 1, args.big_recipients),
    ]
    database = create_database(backend, args.postgresql_url, "rq_trigger")
    try:
        app = create_app(database.url, redis_index.url)
        with app.app_context():
            db.create_all()
        queue = rq.Queue(JOB_QUEUE, connection=redis.Redis.from_url(redis_index.url))
        bench = Bench(backend, app, redis_index, queue, clock)
        try:
            started = time.perf_counter()
            run_round(bench, shapes, 0)  # warm-up, not reported
            rounds = [run_round(bench, shapes, k) for k in range(1, args.rounds + 1)]
            elapsed = time.perf_counter() - started
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
            queue.connection.close()
    finally:
        database.drop()
        redis_index.flush()
    print(
        f"{backend}: medians of {args.rounds} round(s) after 1 warm-up round, {elapsed:.0f} s;"
        " ms per transaction"
    )
    verdicts = [f"{backend} {v}" for shape in shapes for v in report_shape(shape, rounds)]
    print()
    return verdicts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    silence_logging()
    print_header("Flask-Chimeway rq dispatcher trigger benchmark")
    print(
        "Time per transaction = trigger (or building the rows) + flush + COMMIT + pushing one"
        " RQ job per\ndelivery in one pipeline. Ratios: Chimeway time / baseline time, median"
        " of the per-round ratios.\n"
    )
    try:
        redis_index = RedisIndex(args.redis_url)
    except BackendUnavailable as exc:
        print(f"cannot run: {exc}")
        return 1
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    clock = CommitClock()
    clock.install()
    verdicts: list[str] = []
    failed = False
    try:
        for backend in backends:
            try:
                verdicts += run_backend(backend, args, redis_index, clock)
            except BackendUnavailable as exc:
                print(f"{backend}: skipped, {exc}\n")
                failed = True
    finally:
        clock.remove()
        redis_index.close()
    print(f"Load average at the end: {load_average()}")
    print(f"Goal: Chimeway <= {GOAL} x the baseline's time.")
    for verdict in verdicts:
        print(f"  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
