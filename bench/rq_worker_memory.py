"""Worker memory benchmark: how much a Flask-Chimeway simple worker grows over many jobs.

Run from the repository root (PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379)::

    .venv/bin/python bench/rq_worker_memory.py [--deliveries N] [--warm-up W]
        [--checkpoints C] [--tracemalloc] [--redis-url URL]

One process, one worker object (``make_worker(app, simple=True)``):

1. W deliveries on the ``log`` channel are triggered and drained (warm-up: imports,
   connection pools, caches and RQ's first registrations are paid here);
2. N deliveries are triggered (Flask-Chimeway enqueues their jobs). Both trigger phases
   run in a forked child process, so the worker's heap never holds their objects: the
   trigger phase's memory is not counted, and its freed memory cannot hide the drain's
   growth either. The garbage is collected; this is the baseline;
3. the N jobs are drained by C successive ``work(burst=True, max_jobs=N/C)`` calls of the
   same worker; the resident set size (``VmRSS``) is read right before the first call and
   after each call, and the peak (``VmHWM``, reset before the first call) at the end.

With ``--tracemalloc``, Python allocations are traced during step 3 too (the drain then
runs about twice as slowly) and the lines that grew most are printed. See
``docs/performance.rst``.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import sys
import time
import tracemalloc

import sqlalchemy as sa
from _common import (
    PG_ADMIN_URL,
    REDIS_URL,
    BackendUnavailable,
    RedisIndex,
    create_database,
    load_average,
    peak_rss_kib,
    print_header,
    reset_peak_rss,
    rss_kib,
    silence_logging,
)
from bench_app import LogOnly, create_app, db, recipient_ids, trigger_params
from flask import Flask

from flask_chimeway.models import Delivery
from flask_chimeway.worker import make_worker

BATCH = 500
#: The limit the issue sets on a worker's growth over 10,000 deliveries, in MB (10**6 bytes).
GOAL_MB = 10.0


def trigger(app: Flask, count: int, first_number: int) -> None:
    """Trigger ``count`` deliveries on the ``log`` channel, 500 recipients per commit."""
    with app.app_context():
        db.engine.dispose(close=False)  # in a forked child: the parent's connections stay
        for offset, start in enumerate(range(0, count, BATCH)):
            number = first_number + offset
            size = min(BATCH, count - start)
            LogOnly.trigger(recipient_ids(number, BATCH)[:size], trigger_params(number))
            db.session.commit()
        db.session.remove()


def trigger_in_child(app: Flask, count: int, first_number: int) -> None:
    """:func:`trigger` in a forked child process, so that this process's heap never
    holds the trigger phase's objects (its freed memory would hide the drain's growth)."""
    child = multiprocessing.get_context("fork").Process(
        target=trigger, args=(app, count, first_number)
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the trigger process failed with exit code {child.exitcode}")


def sent(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(sa.select(sa.func.count()).where(Delivery.status == "succeeded"))
        db.session.remove()
    return int(count or 0)


def mb(kib: int) -> float:
    """KiB (what ``/proc`` reports) in MB (10**6 bytes, the unit of the goal)."""
    return kib * 1024 / 1e6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Memory growth of a Flask-Chimeway simple worker over many deliveries."
    )
    parser.add_argument(
        "--deliveries", type=int, default=10_000, metavar="N", help="measured jobs (10000)"
    )
    parser.add_argument(
        "--warm-up", type=int, default=500, metavar="W", help="jobs drained first (500)"
    )
    parser.add_argument(
        "--checkpoints",
        type=int,
        default=5,
        metavar="C",
        help="work() calls the measured jobs are split into, RSS read after each (5)",
    )
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also trace Python allocations (slower)"
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
    if args.deliveries < 1 or args.warm_up < 1 or args.checkpoints < 1:
        parser.error("--deliveries, --warm-up and --checkpoints must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    silence_logging()
    print_header("Flask-Chimeway rq worker memory benchmark")
    try:
        redis_index = RedisIndex(args.redis_url)
        database = create_database("postgresql", args.postgresql_url, "rq_memory")
    except BackendUnavailable as exc:
        print(f"cannot run: {exc}")
        return 1
    per_call = -(-args.deliveries // args.checkpoints)
    samples: list[tuple[int, int]] = []
    try:
        app = create_app(database.url, redis_index.url)
        with app.app_context():
            db.create_all()
        try:
            worker = make_worker(app, simple=True)
            trigger_in_child(app, args.warm_up, 0)
            worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
            trigger_in_child(app, args.deliveries, args.warm_up // BATCH + 1)
            gc.collect()
            if args.tracemalloc:
                tracemalloc.start()
                before_trace = tracemalloc.take_snapshot()
            peak_reset = reset_peak_rss()
            before = rss_kib()
            samples.append((0, before))
            started = time.perf_counter()
            done = 0
            while done < args.deliveries:
                worker.work(
                    burst=True,
                    with_scheduler=False,
                    max_jobs=per_call,
                    logging_level="WARNING",
                )
                done = min(args.deliveries, done + per_call)
                samples.append((done, rss_kib()))
            elapsed = time.perf_counter() - started
            peak = peak_rss_kib()
            after = samples[-1][1]
            gc.collect()
            after_gc = rss_kib()
            if args.tracemalloc:
                growth = tracemalloc.take_snapshot().compare_to(before_trace, "lineno")
                traced_now, traced_peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            drained = sent(app) - args.warm_up
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
    finally:
        database.drop()
        redis_index.close()
    if drained != args.deliveries:
        print(f"error: the worker sent {drained} of the {args.deliveries} measured deliveries")
        return 1
    print(
        f"postgresql: {args.deliveries:,} deliveries on the log channel drained by one"
        f" SimpleWorker in {args.checkpoints} work() call(s), after a warm-up of"
        f" {args.warm_up:,}; {elapsed:.0f} s ({args.deliveries / elapsed:.1f} jobs/s"
        f"{', under tracemalloc' if args.tracemalloc else ''})"
    )
    print(f"  {'jobs drained':>14}{'VmRSS MB':>12}{'growth MB':>12}")
    for done, rss in samples:
        print(f"  {done:>14,}{mb(rss):>12.1f}{mb(rss - before):>+12.2f}")
    print(f"  after gc.collect(): VmRSS {mb(after_gc):.1f} MB ({mb(after_gc - before):+.2f})")
    if peak_reset:
        print(f"  peak VmHWM during the drain: {mb(peak):.1f} MB ({mb(peak - before):+.2f})")
    if args.tracemalloc:
        print(
            f"  tracemalloc: {traced_now / 1e6:.2f} MB traced at the end,"
            f" peak {traced_peak / 1e6:.2f} MB (VmRSS above includes tracemalloc's own"
            " records); lines that grew most:"
        )
        for stat in growth[:10]:
            frame = stat.traceback[0]
            print(
                f"    {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7,} blocks"
                f"  {frame.filename}:{frame.lineno}"
            )
    print(f"Load average at the end: {load_average()}")
    growth_mb = mb(after - before)
    per_10k = growth_mb * 10_000 / args.deliveries
    met = "met" if per_10k <= GOAL_MB else "NOT met"
    if args.tracemalloc:
        met = "not judged: under --tracemalloc, VmRSS includes tracemalloc's own records"
    print(
        f"\nGoal: <= {GOAL_MB:.0f} MB of growth over 10,000 deliveries. Growth"
        f" {growth_mb:+.2f} MB over {args.deliveries:,} ({per_10k:+.2f} MB per 10,000)"
        f" -> {met}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
