"""Worker drain benchmark: Flask-Chimeway's RQ worker against a bare RQ worker.

Run from the repository root (PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379)::

    .venv/bin/python bench/rq_worker.py [--jobs N] [--fork-jobs F] [--rounds K]
        [--blocks B] [--redis-url URL]

Every round drains, in one process, taking turns in B blocks per variant (prepare a block,
drain it with a new worker; the first variant alternates from block to block):

* ``simple``: N delivery jobs on the built-in ``log`` channel with
  ``flask_chimeway.worker.make_worker(app, simple=True).work(burst=True,
  with_scheduler=False)``, against N no-op jobs drained by a bare ``rq.SimpleWorker``;
* ``fork``: F delivery jobs with ``make_worker(app)`` (RQ's forking ``Worker``: one work
  horse per job) against F no-op jobs drained by a bare ``rq.Worker``.

Only the ``work()`` call is timed: the deliveries are triggered (and their jobs enqueued by
Flask-Chimeway's ``rq`` dispatcher), or the no-op jobs enqueued, before it. Logging is
disabled, so the ``log`` channel formats and writes nothing. See ``docs/performance.rst``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import resource
import sys
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
    print_header,
    silence_logging,
    spread,
    truncate_chimeway_tables,
)
from bench_app import LogOnly, create_app, db, recipient_ids, trigger_params
from flask import Flask

from flask_chimeway.models import Delivery
from flask_chimeway.worker import make_worker

BARE_QUEUE = "bench_bare"
#: Recipients per trigger (and jobs per Redis pipeline) while preparing a drain.
BATCH = 500
#: The ratio the issue asks for: Chimeway's drain rate at least 0.6 x the bare rate.
GOAL = 0.6


def noop_job(delivery_id: int, attempt: int) -> None:
    """The bare workers' job: takes the same arguments as a delivery job, does nothing."""


def cpu_seconds() -> float:
    """User + system CPU of this process and of its waited-for children (work horses)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclasses.dataclass(frozen=True)
class Drain:
    """One timed ``work()`` call: wall-clock and CPU seconds."""

    elapsed: float
    cpu: float

    @classmethod
    def measure(cls, work: t.Callable[[], object]) -> Drain:
        gc.collect()
        cpu = cpu_seconds()
        start = time.perf_counter()
        work()
        return cls(time.perf_counter() - start, cpu_seconds() - cpu)

    def __add__(self, other: Drain) -> Drain:
        return Drain(self.elapsed + other.elapsed, self.cpu + other.cpu)


@dataclasses.dataclass
class Bench:
    app: Flask
    redis_index: RedisIndex
    connection: redis.Redis

    def prepare_chimeway(self, jobs: int) -> None:
        """Trigger ``jobs`` deliveries on the ``log`` channel; Chimeway enqueues them."""
        with self.app.app_context():
            truncate_chimeway_tables(db.engine, db.metadata)
            self.redis_index.flush()
            for number, start in enumerate(range(0, jobs, BATCH)):
                count = min(BATCH, jobs - start)
                LogOnly.trigger(recipient_ids(number, BATCH)[:count], trigger_params(number))
                db.session.commit()
            db.session.remove()

    def prepare_bare(self, jobs: int) -> rq.Queue:
        """Enqueue ``jobs`` no-op jobs with the same arguments, ids, descriptions and
        result TTL as Chimeway's delivery jobs."""
        self.redis_index.flush()
        queue = rq.Queue(BARE_QUEUE, connection=self.connection)
        for start in range(0, jobs, BATCH):
            data = [
                rq.Queue.prepare_data(
                    noop_job,
                    args=(i, 1),
                    job_id=f"chimeway-delivery-{i}-1",
                    result_ttl=600,
                    description=f"chimeway delivery {i} attempt 1",
                )
                for i in range(start + 1, min(start + BATCH, jobs) + 1)
            ]
            with self.connection.pipeline() as pipe:
                queue.enqueue_many(data, pipeline=pipe)
                pipe.execute()
        return queue

    def run_chimeway(self, jobs: int, simple: bool) -> Drain:
        self.prepare_chimeway(jobs)
        worker = make_worker(self.app, simple=simple)
        drain = Drain.measure(
            lambda: worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
        )
        with self.app.app_context():
            sent = db.session.scalar(
                sa.select(sa.func.count()).where(Delivery.status == "succeeded")
            )
            db.session.remove()
        if sent != jobs:
            raise RuntimeError(f"the Chimeway worker sent {sent} of {jobs} deliveries")
        return drain

    def run_bare(self, jobs: int, simple: bool) -> Drain:
        queue = self.prepare_bare(jobs)
        worker_class = rq.SimpleWorker if simple else rq.Worker
        worker = worker_class([queue], connection=self.connection)
        drain = Drain.measure(
            lambda: worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
        )
        finished = rq.registry.FinishedJobRegistry(queue=queue).count
        if finished != jobs or queue.count:
            raise RuntimeError(f"the bare worker finished {finished} of {jobs} jobs")
        return drain


@dataclasses.dataclass(frozen=True)
class Mode:
    """A kind of worker, drained ``jobs`` jobs per variant and round in ``blocks`` turns."""

    name: str
    simple: bool
    jobs: int
    blocks: int
    chimeway_label: str
    bare_label: str

    def block_jobs(self, index: int) -> int:
        return (index + 1) * self.jobs // self.blocks - index * self.jobs // self.blocks


Round: t.TypeAlias = dict[tuple[str, str], Drain]


def run_round(bench: Bench, modes: list[Mode], round_number: int) -> Round:
    """Every mode with both variants. The variants take turns block by block (a block is
    prepared, then drained by one new worker), the first one alternating from block to
    block and round to round; each variant's times are summed over its blocks."""
    results: Round = {}
    for mode in modes:
        for name in ("chimeway", "bare"):
            results[mode.name, name] = Drain(0.0, 0.0)
        for index in range(mode.blocks):
            jobs = mode.block_jobs(index)
            first = (round_number + index) % 2
            for name in ("chimeway", "bare")[first:] + ("chimeway", "bare")[:first]:
                run = bench.run_chimeway if name == "chimeway" else bench.run_bare
                results[mode.name, name] += run(jobs, mode.simple)
    bench.redis_index.flush()
    return results


def report(mode: Mode, rounds: list[Round]) -> str:
    chimeway = [mode.jobs / r[mode.name, "chimeway"].elapsed for r in rounds]
    bare = [mode.jobs / r[mode.name, "bare"].elapsed for r in rounds]
    ratios = [c / b for c, b in zip(chimeway, bare, strict=True)]
    print(
        f"  {mode.name}: {mode.jobs:,} jobs per variant and round, drained in {mode.blocks} turn(s)"
    )
    print(f"    {'':<40}{'jobs/s':>8}{'ms/job':>9}{'CPU ms/job':>12}   jobs/s over the rounds")
    for name, label, rates in (
        ("chimeway", mode.chimeway_label, chimeway),
        ("bare", mode.bare_label, bare),
    ):
        cpu = median([r[mode.name, name].cpu for r in rounds]) / mode.jobs * 1e3
        print(
            f"    {label:<40}{median(rates):>8.1f}{1e3 / median(rates):>9.2f}{cpu:>12.2f}"
            f"   {spread(rates, 1)}"
        )
    ratio = median(ratios)
    print(f"    ratio chimeway/bare rate {ratio:.2f} (rounds {spread(ratios)})")
    met = "met" if ratio >= GOAL else "NOT met"
    return f"{mode.name}: {ratio:.2f} x the bare rate -> goal >= {GOAL} {met}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Flask-Chimeway's RQ worker drain rate against bare RQ workers."
    )
    parser.add_argument(
        "--jobs", type=int, default=2000, metavar="N", help="jobs per simple-worker drain (2000)"
    )
    parser.add_argument(
        "--fork-jobs",
        type=int,
        default=150,
        metavar="F",
        help="jobs per forking-worker drain; 0 skips them (150)",
    )
    parser.add_argument("--rounds", type=int, default=3, metavar="K", help="measured rounds (3)")
    parser.add_argument(
        "--blocks",
        type=int,
        default=4,
        metavar="B",
        help="turns each variant's jobs are split into, per mode and round (4)",
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
    if args.jobs < 1 or args.rounds < 1 or args.blocks < 1 or args.fork_jobs < 0:
        parser.error("--jobs, --rounds and --blocks must be at least 1, --fork-jobs at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    silence_logging()
    print_header("Flask-Chimeway rq worker drain benchmark")
    print(
        "Rates are jobs drained per second by one in-process worker.work(burst=True); ratios"
        " are\nChimeway rate / bare rate, median of the per-round ratios. CPU is user + system"
        " time of this\nprocess and its work horses (PostgreSQL's and Redis's are not"
        " included).\n"
    )
    modes = [
        Mode(
            "simple",
            True,
            args.jobs,
            min(args.blocks, args.jobs),
            "chimeway make_worker(app, simple=True)",
            "bare rq.SimpleWorker, no-op jobs",
        )
    ]
    if args.fork_jobs:
        modes.append(
            Mode(
                "fork",
                False,
                args.fork_jobs,
                min(args.blocks, args.fork_jobs),
                "chimeway make_worker(app) (forking)",
                "bare rq.Worker (forking), no-op jobs",
            )
        )
    try:
        redis_index = RedisIndex(args.redis_url)
        database = create_database("postgresql", args.postgresql_url, "rq_worker")
    except BackendUnavailable as exc:
        print(f"cannot run: {exc}")
        return 1
    try:
        app = create_app(database.url, redis_index.url)
        with app.app_context():
            db.create_all()
        connection = redis.Redis.from_url(redis_index.url)
        bench = Bench(app, redis_index, connection)
        try:
            started = time.perf_counter()
            warm_up = [dataclasses.replace(m, jobs=min(m.jobs, 50), blocks=1) for m in modes]
            run_round(bench, warm_up, 0)
            rounds = [run_round(bench, modes, k) for k in range(1, args.rounds + 1)]
            elapsed = time.perf_counter() - started
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
            connection.close()
    finally:
        database.drop()
        redis_index.close()
    print(
        f"postgresql: medians of {args.rounds} round(s) after a warm-up round of 50 jobs,"
        f" {elapsed:.0f} s"
    )
    verdicts = [report(mode, rounds) for mode in modes]
    print(f"Load average at the end: {load_average()}")
    print(f"\nGoal: Chimeway's drain rate >= {GOAL} x the bare worker's.")
    for verdict in verdicts:
        print(f"  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
