"""Trigger benchmark: Flask-Chimeway's trigger + commit against plain SQLAlchemy inserts.

Run from the repository root::

    .venv/bin/python bench/trigger.py [--backend sqlite|postgresql|both] [--notifications N]
        [--recipients-per-trigger R] [--rounds K] [--sync-transactions S]

Every round runs, in a rotated order, on one database and in one process:

* ``chimeway``: ``Notifier.trigger(recipients, params)`` then ``db.session.commit()``;
* ``orm``: plain SQLAlchemy, ``Session.add_all`` of the same rows, commit;
* ``core``: plain SQLAlchemy Core, three ``INSERT`` statements (executemany), commit;

for two shapes writing the same N notifications: N/R transactions of one trigger with R
recipients each, and one transaction of one trigger with N recipients. A third, smaller
section measures the default ``sync`` dispatcher, which performs the deliveries in-process
after the commit. The figures are medians over the rounds; the ratios are the medians of
the per-round ratios of times (Chimeway time / baseline time: 2.0 means twice as slow).

The timed region of a transaction ends when the database has acknowledged the COMMIT: for
sessions, when SQLAlchemy's ``after_commit`` event fires, before Flask-Chimeway's own
after-commit listener runs. Nothing else is excluded. See ``docs/performance.rst``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import logging
import os
import sys
import time
import typing as t

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm
from _common import (
    PG_ADMIN_URL,
    BackendUnavailable,
    create_database,
    median,
    source_state,
    spread,
)
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Chimeway, Notifier, Recipient, models

NOTIFIER_KEY = "bench.task_assigned"
CHANNELS = ("in_app", "log")
#: Where the "pending" app's RQ dispatcher would enqueue: a socket that does not exist, so
#: deliveries stay pending (the documented Redis-down behaviour) and nothing is sent.
NOWHERE_REDIS_URL = "unix:///nonexistent/chimeway-bench-no-redis.sock"
#: Marks a session whose commits the benchmark times (see :class:`CommitClock`).
TIMED = "chimeway_bench_timed"
FILLER = (
    "Open the task to see its description, its due date and the people working on it."
    " Reply to this message or comment on the task to ask a question. "
)


# the rows ---------------------------------------------------------------------------------


def trigger_params(number: int) -> dict[str, t.Any]:
    """The params of trigger ``number``; stored on the event (nothing here is redacted)."""
    return {
        "task_id": number,
        "title": f"Prepare the quarterly report #{number}",
        "assigned_by": "user-0",
        "url": f"https://example.com/tasks/{number}",
    }


def build_content(
    params: t.Mapping[str, t.Any], recipient_id: str, channel: str
) -> dict[str, t.Any]:
    """The content of one delivery, the same for Chimeway and the baselines (~310 bytes)."""
    return {
        "subject": f"{params['assigned_by']} assigned you {params['title']!r}",
        "text": f"Hello {recipient_id}, you have a new task on {channel}. {FILLER}",
        "url": params["url"],
    }


def recipient_ids(transaction: int, count: int) -> list[str]:
    """Distinct recipient identities for one transaction."""
    return [f"user-{transaction * count + k + 1}" for k in range(count)]


# baselines: the same tables, mapped by plain SQLAlchemy ------------------------------------


#: Copies of the three tables (same names, columns, types and constraints), so the plain
#: mappings below do not overlap Flask-Chimeway's own mapped classes.
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


def write_orm(session: sa_orm.Session, number: int, recipients: list[str]) -> None:
    """Add one event, its notifications and deliveries with ``add_all`` (column defaults
    fill the timestamps, status and counters, as they do for Chimeway's rows)."""
    params = trigger_params(number)
    event = BareEvent(
        tenant="",
        notifier_key=NOTIFIER_KEY,
        notifier_version=1,
        params=dict(params),
        notifications=[
            BareNotification(
                tenant="",
                recipient_id=rid,
                notifier_key=NOTIFIER_KEY,
                deliveries=[
                    BareDelivery(channel=c, content=build_content(params, rid, c)) for c in CHANNELS
                ],
            )
            for rid in recipients
        ],
    )
    session.add_all([event])


def write_core(connection: sa.Connection, number: int, recipients: list[str]) -> None:
    """Insert the same rows with three Core statements: the event (``RETURNING`` its id),
    the notifications (executemany ``RETURNING`` their ids), the deliveries (executemany)."""
    params = trigger_params(number)
    now = models.utcnow()
    event_id = connection.execute(
        sa.insert(EVENTS).returning(EVENTS.c.id),
        {
            "tenant": "",
            "notifier_key": NOTIFIER_KEY,
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
                    "notifier_key": NOTIFIER_KEY,
                    "created_at": now,
                }
                for rid in recipients
            ],
        )
        .scalars()
        .all()
    )
    connection.execute(
        sa.insert(DELIVERIES),
        [
            {
                "notification_id": nid,
                "channel": c,
                "status": "pending",
                "status_reason": "planned",
                "content": build_content(params, rid, c),
                "attempt_count": 0,
                "created_at": now,
                "updated_at": now,
            }
            for nid, rid in zip(notification_ids, recipients, strict=True)
            for c in CHANNELS
        ],
    )


# timing -------------------------------------------------------------------------------------


class CommitClock:
    """Records when a timed session's COMMIT has been acknowledged.

    A plain SQLAlchemy ``after_commit`` listener, inserted ahead of Flask-Chimeway's own
    (which performs or enqueues the deliveries), and limited to sessions whose ``info``
    carries :data:`TIMED`, so the sessions the sync dispatcher opens are not counted.
    """

    def __init__(self) -> None:
        self.last = 0.0

    def install(self) -> None:
        sa.event.listen(sa_orm.Session, "after_commit", self._mark, insert=True)

    def remove(self) -> None:
        sa.event.remove(sa_orm.Session, "after_commit", self._mark)

    def committed_since(self, start: float) -> float:
        """When the COMMIT of the transaction started at ``start`` was acknowledged."""
        if self.last < start:
            raise RuntimeError("the commit clock did not see the timed session commit")
        return self.last

    def _mark(self, session: sa_orm.Session) -> None:
        if session.info.get(TIMED) and session.get_nested_transaction() is None:
            self.last = time.perf_counter()


@dataclasses.dataclass
class Timing:
    """Seconds spent in the timed regions of one variant in one round."""

    write: float = 0.0
    #: After the COMMIT: what Flask-Chimeway's dispatcher did (sync section only).
    after_commit: float = 0.0


@dataclasses.dataclass(frozen=True)
class Shape:
    """``transactions`` transactions of one trigger with ``recipients`` recipients each."""

    name: str
    transactions: int
    recipients: int

    @property
    def rows(self) -> int:
        return self.transactions * (1 + self.recipients * (1 + len(CHANNELS)))

    @property
    def deliveries(self) -> int:
        return self.transactions * self.recipients * len(CHANNELS)

    def describe(self) -> str:
        return (
            f"{self.transactions:,} transaction(s) x 1 trigger x {self.recipients:,}"
            f" recipients x {len(CHANNELS)} channels = {self.rows:,} rows"
        )


@dataclasses.dataclass
class Bench:
    """One backend: its database, the two Chimeway apps on it, the notifier."""

    backend: str
    db: SQLAlchemy
    pending_app: Flask
    sync_app: Flask
    notifier: type[Notifier]
    clock: CommitClock

    @property
    def engine(self) -> sa.Engine:
        with self.pending_app.app_context():
            return self.db.engine

    def clear(self) -> None:
        """Empty every Flask-Chimeway table."""
        tables = [tb for tb in self.db.metadata.sorted_tables if tb.name.startswith("chimeway_")]
        with self.engine.begin() as conn:
            if self.backend == "postgresql":
                names = ", ".join(
                    conn.dialect.identifier_preparer.format_table(tb) for tb in tables
                )
                conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(tables):
                    conn.execute(table.delete())

    def run_chimeway(self, shape: Shape, *, sync: bool = False) -> Timing:
        timing = Timing()
        with (self.sync_app if sync else self.pending_app).app_context():
            self.db.session.info[TIMED] = True
            for number in range(shape.transactions):
                recipients = recipient_ids(number, shape.recipients)
                start = time.perf_counter()
                self.notifier.trigger(recipients, trigger_params(number))
                self.db.session.commit()
                end = time.perf_counter()
                committed = self.clock.committed_since(start)
                timing.write += committed - start
                timing.after_commit += end - committed
            self.db.session.remove()
        return timing

    def run_orm(self, shape: Shape) -> Timing:
        timing = Timing()
        with sa_orm.Session(self.engine, info={TIMED: True}) as session:
            for number in range(shape.transactions):
                recipients = recipient_ids(number, shape.recipients)
                start = time.perf_counter()
                write_orm(session, number, recipients)
                session.commit()
                timing.write += self.clock.committed_since(start) - start
                session.expunge_all()
        return timing

    def run_core(self, shape: Shape) -> Timing:
        timing = Timing()
        engine = self.engine
        for number in range(shape.transactions):
            recipients = recipient_ids(number, shape.recipients)
            start = time.perf_counter()
            with engine.begin() as connection:
                write_core(connection, number, recipients)
            timing.write += time.perf_counter() - start
        return timing

    def check(self, shape: Shape, status: str) -> None:
        """Fail loudly if a variant did not write what it should have, or if the deliveries
        are not in ``status`` (not a timing check)."""
        with self.engine.connect() as conn:
            counts = [
                conn.execute(sa.select(sa.func.count()).select_from(tb)).scalar_one()
                for tb in (EVENTS, NOTIFICATIONS, DELIVERIES)
            ]
            statuses = set(conn.execute(sa.select(DELIVERIES.c.status).distinct()).scalars())
        expected = [shape.transactions, shape.transactions * shape.recipients, shape.deliveries]
        if counts != expected or statuses != {status}:
            raise RuntimeError(
                f"{self.backend} {shape.name}: wrote {counts} rows with deliveries"
                f" {sorted(statuses)}, expected {expected} with deliveries [{status!r}]"
            )


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of writing the rows; ``status`` is where its deliveries must end up."""

    name: str
    run: t.Callable[[Bench, Shape], Timing]
    status: str = "pending"


VARIANTS = [
    Variant("chimeway", lambda bench, shape: bench.run_chimeway(shape)),
    Variant("orm", lambda bench, shape: bench.run_orm(shape)),
    Variant("core", lambda bench, shape: bench.run_core(shape)),
]
SYNC_VARIANTS = [
    Variant(
        "chimeway_sync", lambda bench, shape: bench.run_chimeway(shape, sync=True), "succeeded"
    ),
    Variant("orm", lambda bench, shape: bench.run_orm(shape)),
]


def measure(bench: Bench, shape: Shape, variant: Variant) -> Timing:
    bench.clear()
    gc.collect()
    timing = variant.run(bench, shape)
    bench.check(shape, variant.status)
    return timing


def run_round(
    bench: Bench, shapes: list[Shape], sync_shape: Shape | None, round_number: int
) -> dict[tuple[str, str], Timing]:
    """One round: every shape with every variant, rotating the order from round to round."""
    results: dict[tuple[str, str], Timing] = {}
    offset = round_number % len(VARIANTS)
    order = VARIANTS[offset:] + VARIANTS[:offset]
    for shape in shapes:
        for variant in order:
            results[shape.name, variant.name] = measure(bench, shape, variant)
    if sync_shape is not None:
        sync_order = SYNC_VARIANTS if round_number % 2 else SYNC_VARIANTS[::-1]
        for variant in sync_order:
            results[sync_shape.name, variant.name] = measure(bench, sync_shape, variant)
    bench.clear()
    return results


# setting up and tearing down ------------------------------------------------------------


def make_bench(backend: str, url: str, clock: CommitClock) -> Bench:
    db = SQLAlchemy()
    chimeway = Chimeway(db=db)

    @chimeway.notifier(NOTIFIER_KEY, channels=list(CHANNELS))
    class TaskAssigned(Notifier):
        def build(
            self, params: t.Mapping[str, t.Any], recipient: Recipient, channel: str
        ) -> dict[str, t.Any]:
            return build_content(params, recipient.id, channel)

    def make_app(name: str, dispatcher: str) -> Flask:
        app = Flask(name)
        app.config.update(
            SQLALCHEMY_DATABASE_URI=url,
            CHIMEWAY_DISPATCHER=dispatcher,
            CHIMEWAY_REDIS_URL=NOWHERE_REDIS_URL,
        )
        db.init_app(app)
        chimeway.init_app(app)
        return app

    pending_app = make_app(f"bench_{backend}_pending", "rq")
    sync_app = make_app(f"bench_{backend}_sync", "sync")
    with pending_app.app_context():
        db.create_all()
    return Bench(backend, db, pending_app, sync_app, TaskAssigned, clock)


def dispose(bench: Bench) -> None:
    for app in (bench.pending_app, bench.sync_app):
        with app.app_context():
            bench.db.session.remove()
            bench.db.engine.dispose()


def report_shape(
    shape: Shape, rounds: list[dict[tuple[str, str], Timing]], baselines: list[str]
) -> None:
    chimeway = [r[shape.name, "chimeway"].write for r in rounds]
    print(f"  {shape.name}: {shape.describe()} per round")
    rate = shape.rows / median(chimeway)
    per_txn = median(chimeway) / shape.transactions * 1e3
    print(
        f"    {'chimeway trigger+commit':<30}{rate:>10,.0f} rows/s  {per_txn:8.2f} ms/transaction"
    )
    for name in baselines:
        label = {"orm": "baseline ORM add_all", "core": "baseline Core executemany"}[name]
        times = [r[shape.name, name].write for r in rounds]
        rate = shape.rows / median(times)
        per_txn = median(times) / shape.transactions * 1e3
        ratios = [r[shape.name, "chimeway"].write / r[shape.name, name].write for r in rounds]
        print(
            f"    {label:<30}{rate:>10,.0f} rows/s  {per_txn:8.2f} ms/transaction"
            f"   ratio chimeway/{name} {median(ratios):.2f} (rounds {spread(ratios)})"
        )


def report_sync(shape: Shape, rounds: list[dict[tuple[str, str], Timing]]) -> None:
    timings = [r[shape.name, "chimeway_sync"] for r in rounds]
    orm = [r[shape.name, "orm"].write for r in rounds]
    write = [tm.write for tm in timings]
    after = [tm.after_commit for tm in timings]
    total = [tm.write + tm.after_commit for tm in timings]
    print(f"  {shape.name}: {shape.describe()} per round, CHIMEWAY_DISPATCHER='sync'")
    print(
        f"    {'trigger+commit (rows written)':<34}{shape.rows / median(write):>8,.0f} rows/s"
        f"  {median(write) / shape.transactions * 1e3:8.2f} ms/transaction"
    )
    print(
        f"    {'sync delivery after the commit':<34}"
        f"{shape.deliveries / median(after):>8,.0f} deliveries/s"
        f"  {median(after) / shape.transactions * 1e3:8.2f} ms/transaction"
    )
    print(
        f"    {'trigger+commit incl. delivery':<34}{shape.rows / median(total):>8,.0f} rows/s"
        f"  {median(total) / shape.transactions * 1e3:8.2f} ms/transaction"
    )
    print(
        f"    {'baseline ORM add_all':<34}{shape.rows / median(orm):>8,.0f} rows/s"
        f"  {median(orm) / shape.transactions * 1e3:8.2f} ms/transaction"
    )
    write_ratios = [tm.write / o for tm, o in zip(timings, orm, strict=True)]
    total_ratios = [(tm.write + tm.after_commit) / o for tm, o in zip(timings, orm, strict=True)]
    print(
        f"    ratio rows written/orm {median(write_ratios):.2f} (rounds {spread(write_ratios)}),"
        f" incl. delivery/orm {median(total_ratios):.2f} (rounds {spread(total_ratios)})"
    )


# main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Flask-Chimeway trigger + commit against plain SQLAlchemy inserts."
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--notifications",
        type=int,
        default=1000,
        metavar="N",
        help="notifications per shape and round (default 1000)",
    )
    parser.add_argument(
        "--recipients-per-trigger",
        type=int,
        default=10,
        metavar="R",
        help="recipients of each trigger in the many-transactions shape (default 10)",
    )
    parser.add_argument("--rounds", type=int, default=5, metavar="K", help="measured rounds (5)")
    parser.add_argument(
        "--sync-transactions",
        type=int,
        default=5,
        metavar="S",
        help="transactions of the sync-dispatcher section per round; 0 skips it (default 5)",
    )
    parser.add_argument(
        "--postgresql-url",
        default=PG_ADMIN_URL,
        help="admin URL used to create and drop the throwaway database"
        " (default $CHIMEWAY_BENCH_PG_URL or postgresql+psycopg://postgres@127.0.0.1:5432/postgres)",
    )
    args = parser.parse_args(argv)
    for name in ("notifications", "recipients_per_trigger", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.notifications % args.recipients_per_trigger:
        parser.error("--notifications must be a multiple of --recipients-per-trigger")
    if args.sync_transactions < 0:
        parser.error("--sync-transactions must be 0 or more")
    return args


def run_backend(backend: str, args: argparse.Namespace, clock: CommitClock) -> None:
    many = Shape(
        "many",
        args.notifications // args.recipients_per_trigger,
        args.recipients_per_trigger,
    )
    big = Shape("big", 1, args.notifications)
    sync = (
        Shape("sync", args.sync_transactions, args.recipients_per_trigger)
        if args.sync_transactions
        else None
    )
    database = create_database(backend, args.postgresql_url, "trigger")
    try:
        bench = make_bench(backend, database.url, clock)
        try:
            started = time.perf_counter()
            run_round(bench, [many, big], sync, 0)  # warm-up, not reported
            rounds = [run_round(bench, [many, big], sync, k) for k in range(1, args.rounds + 1)]
            elapsed = time.perf_counter() - started
        finally:
            dispose(bench)
    finally:
        database.drop()
    print(
        f"{backend} ({sa.make_url(database.url).drivername}): medians of {args.rounds}"
        f" round(s) after 1 warm-up round, {elapsed:.0f} s"
    )
    report_shape(many, rounds, ["orm", "core"])
    report_shape(big, rounds, ["orm", "core"])
    if sync is not None:
        report_sync(sync, rounds)
    print()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.disable(logging.CRITICAL)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(
        f"Flask-Chimeway trigger benchmark: python {sys.version.split()[0]},"
        f" SQLAlchemy {sa.__version__}, {os.cpu_count()} CPU(s),"
        f" {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(f"Flask-Chimeway source: {source_state()}")
    print("Rates are rows written per second (events + notifications + deliveries).")
    print("Ratios are Chimeway time / baseline time, median of the per-round ratios.\n")
    clock = CommitClock()
    clock.install()
    failed = False
    try:
        for backend in backends:
            try:
                run_backend(backend, args, clock)
            except BackendUnavailable as exc:
                print(f"{backend}: skipped, {exc}\n")
                failed = True
    finally:
        clock.remove()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
