"""Commit-to-sent latency with the ``rq`` dispatcher and real worker processes.

Run from the repository root (PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379)::

    .venv/bin/python bench/rq_latency.py [--rate PER_SECOND] [--duration SECONDS]
        [--workers W] [--recipients R] [--csv PATH] [--redis-url URL]

W worker processes are started as users start them, from the repository root::

    .venv/bin/flask --app bench.bench_app:create_app chimeway worker --simple --no-scheduler

(with ``CHIMEWAY_BENCH_DATABASE_URL`` and ``CHIMEWAY_BENCH_REDIS_URL`` in their
environment). This process then triggers at a steady rate, each trigger in its own app
context and transaction, to R recipients on the ``in_app`` and ``log`` channels. For every
delivery, the latency is the ``finished_at`` of its attempt (taken by the worker when the
channel call returned) minus the wall-clock time right after ``db.session.commit()``
returned in the triggering process; the pick-up time is the attempt's ``started_at`` (when
the worker began claiming it) minus the same moment. At the end the workers get SIGTERM and
must exit 0. See ``docs/performance.rst``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import math
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import typing as t

import redis
import rq
import sqlalchemy as sa
from _common import (
    PG_ADMIN_URL,
    REDIS_URL,
    BackendUnavailable,
    RedisIndex,
    create_database,
    load_average,
    median,
    percentile,
    print_header,
    silence_logging,
)
from bench_app import TASK_CHANNELS, TaskAssigned, create_app, db, recipient_ids, trigger_params
from flask import Flask

from flask_chimeway.models import Delivery, DeliveryAttempt

REPO = pathlib.Path(__file__).resolve().parent.parent
FLASK = pathlib.Path(sys.executable).parent / "flask"
APP_IMPORT = "bench.bench_app:create_app"
QUEUE = "chimeway_delivery"
TERMINAL = ("succeeded", "cancelled", "suppressed", "digested")
#: A trigger that starts this many seconds after its slot marks a stall of the machine.
STALL_LAG = 0.02


@dataclasses.dataclass
class Planned:
    """One trigger of the measured phase."""

    delivery_ids: list[int]
    #: Wall-clock UTC time right after ``commit()`` returned.
    committed_at: dt.datetime
    #: Seconds spent in trigger + commit (what the triggering request waits for).
    trigger_seconds: float
    #: Seconds the trigger started after its slot in the schedule.
    lag: float


class Workers:
    """``flask chimeway worker`` processes, their output in files of a temporary folder."""

    def __init__(self, count: int, database_url: str, redis_url: str, folder: str) -> None:
        self.folder = pathlib.Path(folder)
        environment = {
            **os.environ,
            "CHIMEWAY_BENCH_DATABASE_URL": database_url,
            "CHIMEWAY_BENCH_REDIS_URL": redis_url,
        }
        self.command = [
            str(FLASK),
            "--app",
            APP_IMPORT,
            "chimeway",
            "worker",
            "--simple",
            "--no-scheduler",
        ]
        self.processes: list[subprocess.Popen[bytes]] = []
        for number in range(count):
            with (self.folder / f"worker-{number}.log").open("wb") as output:
                self.processes.append(
                    subprocess.Popen(
                        self.command,
                        cwd=REPO,
                        env=environment,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )

    def wait_registered(self, connection: redis.Redis, timeout: float) -> float:
        """Wait until every worker has registered with Redis; the seconds it took."""
        start = time.perf_counter()
        while rq.Worker.count(connection=connection) < len(self.processes):
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"a worker exited at start:\n{self.output()}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"the workers did not register in {timeout} s:\n{self.output()}")
            time.sleep(0.05)
        return time.perf_counter() - start

    def terminate(self, timeout: float = 30) -> list[int | None]:
        """SIGTERM (warm shutdown: the current job is finished first); the exit codes,
        ``None`` for a worker that had to be killed."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                codes.append(process.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                codes.append(None)
        return codes

    def output(self, lines: int = 20) -> str:
        tails = []
        for path in sorted(self.folder.glob("worker-*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(tails)


def trigger_once(app: Flask, number: int, recipients: int) -> list[int]:
    """One trigger in its own app context and transaction, like a view; its delivery ids."""
    with app.app_context():
        result = TaskAssigned.trigger(recipient_ids(number, recipients), trigger_params(number))
        ids = [d.id for d in result.deliveries]
        db.session.commit()
    return ids


def wait_finished(app: Flask, ids: list[int], timeout: float) -> int:
    """Wait until every delivery in ``ids`` is terminal; how many are."""
    deadline = time.monotonic() + timeout
    while True:
        with app.app_context():
            done = db.session.scalar(
                sa.select(sa.func.count()).where(
                    Delivery.id.in_(ids), Delivery.status.in_(TERMINAL)
                )
            )
            db.session.remove()
        if done == len(ids) or time.monotonic() > deadline:
            return int(done or 0)
        time.sleep(0.2)


def run_schedule(
    app: Flask, queue: rq.Queue, rate: float, count: int, first: int, recipients: int
) -> tuple[list[Planned], int, float]:
    """Trigger ``count`` times at ``rate`` per second; the triggers, the longest queue
    seen (sampled once a second) and the elapsed seconds."""
    planned: list[Planned] = []
    longest_queue = 0
    every = max(1, round(rate))
    start = time.perf_counter()
    for k in range(count):
        slot = start + k / rate
        pause = slot - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        began = time.perf_counter()
        ids = trigger_once(app, first + k, recipients)
        committed_at = dt.datetime.now(dt.UTC)
        ended = time.perf_counter()
        planned.append(Planned(ids, committed_at, ended - began, began - slot))
        if k % every == 0:
            longest_queue = max(longest_queue, queue.count)
    return planned, longest_queue, time.perf_counter() - start


def write_csv(path: str, planned: list[Planned], attempts: t.Mapping[int, t.Any]) -> None:
    """One line per delivery: when its trigger committed, when the worker claimed it and
    when the send finished, in seconds after the first commit of the measured phase."""
    origin = planned[0].committed_at
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["delivery_id", "committed", "claimed", "sent", "outcome"])
        for p in planned:
            for delivery_id in p.delivery_ids:
                attempt = attempts.get(delivery_id)
                times = (
                    [
                        f"{(attempt.started_at - origin).total_seconds():.4f}",
                        f"{(attempt.finished_at - origin).total_seconds():.4f}",
                        attempt.outcome,
                    ]
                    if attempt is not None
                    else ["", "", ""]
                )
                committed = f"{(p.committed_at - origin).total_seconds():.4f}"
                out.writerow([delivery_id, committed, *times])


def milliseconds(values: list[float]) -> str:
    ordered = sorted(values)
    return "  ".join(
        f"{name} {percentile(ordered, q) * 1e3:7.1f}"
        for name, q in (("min", 0.0), ("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Commit-to-sent latency of Flask-Chimeway's rq dispatcher with worker"
        " processes."
    )
    parser.add_argument(
        "--rate", type=float, default=20, metavar="PER_SECOND", help="triggers per second (20)"
    )
    parser.add_argument(
        "--duration", type=float, default=30, metavar="SECONDS", help="seconds triggering (30)"
    )
    parser.add_argument("--workers", type=int, default=2, metavar="W", help="worker processes (2)")
    parser.add_argument(
        "--recipients",
        type=int,
        default=1,
        metavar="R",
        help=f"recipients per trigger, {len(TASK_CHANNELS)} deliveries each (1)",
    )
    parser.add_argument(
        "--csv",
        metavar="PATH",
        help="also write one line per delivery (times in seconds after the first commit)",
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
        help="a Redis database of the benchmark's own, flushed at the end (default"
        " $CHIMEWAY_BENCH_REDIS_URL or redis://127.0.0.1:6379/11)",
    )
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.workers < 1 or args.recipients < 1:
        parser.error("--rate and --duration must be above 0, --workers and --recipients >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    silence_logging()
    print_header("Flask-Chimeway rq commit-to-sent latency benchmark")
    try:
        redis_index = RedisIndex(args.redis_url)
        database = create_database("postgresql", args.postgresql_url, "rq_latency")
    except BackendUnavailable as exc:
        print(f"cannot run: {exc}")
        return 1
    count = max(1, round(args.rate * args.duration))
    folder = tempfile.mkdtemp(prefix="chimeway_bench_latency_")
    workers: Workers | None = None
    exit_codes: list[int | None] = []
    try:
        app = create_app(database.url, redis_index.url)
        with app.app_context():
            db.create_all()
        queue = rq.Queue(QUEUE, connection=redis_index.client)
        workers = Workers(args.workers, database.url, redis_index.url, folder)
        startup = workers.wait_registered(redis_index.client, timeout=60)
        # warm-up: every worker connects and loads its caches; not reported
        warm_ids = [
            i for k in range(4 * args.workers) for i in trigger_once(app, k, args.recipients)
        ]
        if wait_finished(app, warm_ids, timeout=60) != len(warm_ids):
            raise RuntimeError(f"the warm-up deliveries were not sent:\n{workers.output()}")
        planned, longest_queue, elapsed = run_schedule(
            app, queue, args.rate, count, 4 * args.workers, args.recipients
        )
        ids = [i for p in planned for i in p.delivery_ids]
        drain_started = time.perf_counter()
        finished = wait_finished(app, ids, timeout=120)
        drain = time.perf_counter() - drain_started
        with app.app_context():
            attempts = {
                row.delivery_id: row
                for row in db.session.execute(
                    sa.select(
                        DeliveryAttempt.delivery_id,
                        DeliveryAttempt.started_at,
                        DeliveryAttempt.finished_at,
                        DeliveryAttempt.outcome,
                    ).where(DeliveryAttempt.delivery_id.in_(ids), DeliveryAttempt.number == 1)
                )
            }
            db.session.remove()
        exit_codes = workers.terminate()
        worker_tail = workers.output(5)
        workers = None
        with app.app_context():
            db.engine.dispose()
    finally:
        if workers is not None:
            exit_codes = workers.terminate()
        database.drop()
        redis_index.close()
        for path in pathlib.Path(folder).glob("*"):
            path.unlink()
        os.rmdir(folder)

    latency: list[float] = []
    pickup: list[float] = []
    # A second of the schedule in which this process started a trigger more than
    # STALL_LAG late: the machine was busy elsewhere (the deliveries of that second are
    # reported apart as well).
    stalled = {int(k / args.rate) for k, p in enumerate(planned) if p.lag > STALL_LAG}
    calm: list[float] = []
    succeeded = 0
    for k, p in enumerate(planned):
        for delivery_id in p.delivery_ids:
            attempt = attempts.get(delivery_id)
            if attempt is None:
                continue
            succeeded += attempt.outcome == "succeeded"
            latency.append((attempt.finished_at - p.committed_at).total_seconds())
            pickup.append((attempt.started_at - p.committed_at).total_seconds())
            if int(k / args.rate) not in stalled:
                calm.append(latency[-1])
    if args.csv:
        write_csv(args.csv, planned, attempts)
    trigger_times = [p.trigger_seconds for p in planned]
    lags = [p.lag for p in planned]
    print(
        f"postgresql, {args.workers} worker process(es) (flask --app {APP_IMPORT} chimeway"
        f" worker --simple --no-scheduler), registered {startup:.1f} s after start"
    )
    print(
        f"  {count:,} triggers x {args.recipients} recipient(s) x {len(TASK_CHANNELS)} channels"
        f" = {len(ids):,} deliveries in {elapsed:.1f} s: {count / elapsed:.1f} triggers/s"
        f" (asked {args.rate:g}), {len(ids) / elapsed:.1f} deliveries/s"
    )
    print(
        f"  trigger+commit in the triggering process, ms: {milliseconds(trigger_times)};"
        f" start behind schedule: max {max(lags) * 1e3:.1f} ms"
    )
    print(
        f"  attempts recorded {len(latency):,} of {len(ids):,}, succeeded {succeeded:,};"
        f" terminal {finished:,}; longest queue seen {longest_queue}; last delivery"
        f" finished {drain:.1f} s after the last trigger"
    )
    if latency:
        print(f"  commit -> sent (attempt finished_at), ms: {milliseconds(latency)}")
        print(f"  commit -> claimed (attempt started_at), ms: {milliseconds(pickup)}")
        print(f"  median sent - claimed, ms: {median(latency) * 1e3 - median(pickup) * 1e3:.1f}")
        seconds = math.ceil(count / args.rate)
        print(
            f"  {len(stalled)} of {seconds} second(s) had a trigger start more than"
            f" {STALL_LAG * 1e3:.0f} ms late (a busy machine); commit -> sent in the other"
            f" seconds, ms: {milliseconds(calm) if calm else 'none'}"
        )
    print(f"  workers after SIGTERM: exit codes {exit_codes}")
    print(f"Load average at the end: {load_average()}")
    if any(code != 0 for code in exit_codes) or finished != len(ids):
        print(worker_tail)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
