"""Soak: 1,000 triggers through the rq dispatcher into worker processes, with a worker
killed mid-send and Redis flushed while jobs are queued; ticks recover every delivery."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import os
import pathlib
import signal
import subprocess
import sys
import time
import typing as t

import pytest
import rq
import sqlalchemy as sa
from flask import Flask

from flask_chimeway.dispatch import staged_ids
from flask_chimeway.lifecycle import TERMINAL
from flask_chimeway.models import Delivery, DeliveryAttempt
from flask_chimeway.progress import TickReport, progress
from flask_chimeway.queues import DELIVERY_QUEUE, PERFORM_DELIVERY, delivery_job_id

from . import rq_app
from .conftest import REDIS_OWNER_KEY
from .rq_app import Note, db
from .test_rq import ROOT, wait_for

#: One trigger per transaction, as one web request per sign-up would make them.
TRIGGERS = 1_000
#: The trigger whose delivery a worker is killed in the middle of sending.
KILL_AT = 300
#: The trigger after whose commit Redis is flushed.
FLUSH_AT = 600
#: Triggers between two ticks while triggering: the cron, compressed.
TICK_EVERY = 100
#: Short, so the send interrupted by the kill is retried within seconds.
LEASE_SECONDS = 2
#: How long the ticks may take to bring every delivery to a terminal status.
RECOVERY_DEADLINE = 90.0
#: A queue only the victim listens on, ahead of the shared one, so it takes the job
#: there as soon as it is free.
VICTIM_QUEUE = "soak_victim"
TERMINAL_STATUSES = {s.value for s in TERMINAL}


@dataclasses.dataclass
class Worker:
    """A ``flask chimeway worker`` subprocess. Its output goes to a file: RQ logs a few
    lines per job, and a pipe nobody reads until the end would fill up and block it."""

    name: str
    process: subprocess.Popen[bytes]
    log: pathlib.Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM (finish the job in hand), SIGTERM again (kill the work horse), then
        SIGKILL; always waited for, so no process outlives the test."""
        for sig, timeout in ((signal.SIGTERM, 30), (signal.SIGTERM, 10)):
            if self.process.poll() is not None:
                return
            self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_worker(
    name: str, tmp: pathlib.Path, database_url: str, redis_url: str, *args: str
) -> Worker:
    env = {
        **os.environ,
        "CHIMEWAY_TEST_DATABASE_URL": database_url,
        "CHIMEWAY_TEST_REDIS_URL": redis_url,
        "CHIMEWAY_TEST_SINK": str(tmp / "sink.log"),
        "CHIMEWAY_TEST_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    log = tmp / f"worker-{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "tests.rq_app:create_app",
                "chimeway",
                "worker",
                "--no-scheduler",
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(name, process, log)


@pytest.fixture
def soak_app(database_url: str, redis_url: str, redis_client: t.Any) -> t.Iterator[Flask]:
    """The app the test triggers and ticks in (default ``CHIMEWAY_REQUEUE_AFTER``), inside
    an app context; its tables are dropped afterwards."""
    app = rq_app.create_app(database_url, redis_url)
    with app.app_context():
        db.create_all()
    try:
        with app.app_context():
            yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.drop_all()
            db.engine.dispose()
        state = app.extensions["chimeway"]
        if state.redis is not None:
            state.redis.close()


@dataclasses.dataclass
class Ticks:
    """The ticks the test ran, and what they did."""

    on_time: int = 0
    ahead: int = 0
    abandoned: int = 0
    enqueued: int = 0

    def run(self, now: dt.datetime | None = None) -> TickReport:
        report = progress(now=now)
        if now is None:
            self.on_time += 1
        else:
            self.ahead += 1
        self.abandoned += report.abandoned
        self.enqueued += report.enqueued
        return report


def kill_mid_send(index: int, victim: Worker, redis_client: t.Any, started: pathlib.Path) -> int:
    """Trigger a delivery whose first send blocks, have ``victim`` take it, and SIGKILL
    the victim in the middle of that send. The delivery's id."""
    [delivery] = Note.trigger(f"user-{index}", {"behaviour": "block"}).deliveries
    assert staged_ids(db.session) == [delivery.id]
    db.session.info.clear()  # its job must not reach the shared queue (nor another worker)
    assert staged_ids(db.session) == []
    db.session.commit()
    rq.Queue(VICTIM_QUEUE, connection=redis_client).enqueue(
        PERFORM_DELIVERY, delivery.id, 1, job_id=delivery_job_id(delivery.id, 1)
    )
    mark = f"{delivery.id} {victim.pid}\n"  # the victim is a simple worker: no work horse
    wait_for(lambda: started.exists() and mark in started.read_text(), timeout=30)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.process.wait(10)
    return delivery.id


def flush_redis(redis_client: t.Any) -> int:
    """FLUSHDB; the number of delivery jobs that were queued, read atomically with it.

    The key marking the db index as this test run's is put back in the same transaction,
    so no other test run can take the index (and flush it, or feed our workers its jobs).
    """
    owner = redis_client.get(REDIS_OWNER_KEY)
    with redis_client.pipeline(transaction=True) as pipe:
        pipe.llen(f"rq:queue:{DELIVERY_QUEUE}")
        pipe.flushdb()
        pipe.set(REDIS_OWNER_KEY, owner or b"?", ex=6 * 3600)
        queued, _, _ = pipe.execute()
    return int(queued)


def status_counts() -> dict[str, int]:
    db.session.rollback()
    rows = db.session.execute(
        sa.select(Delivery.status, sa.func.count()).group_by(Delivery.status)
    ).all()
    return {status: count for status, count in rows}


def in_flight(redis_client: t.Any) -> bool:
    """Whether a worker may be about to claim or be sending a delivery: a delivery job is
    queued, or a delivery is ``sending`` under a lease that has not run out."""
    if redis_client.llen(f"rq:queue:{DELIVERY_QUEUE}"):
        return True
    db.session.rollback()
    leased = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Delivery)
        .where(Delivery.status == "sending", Delivery.lease_expires_at > sa.func.now())
    )
    return bool(leased)


def recover(
    redis_client: t.Any, ticks: Ticks, requeue_after: int, diagnosis: t.Callable[[], str]
) -> None:
    """Tick until every delivery is terminal.

    On-time ticks expire the killed worker's lease (it is short) and enqueue the retry.
    Deliveries whose jobs Redis lost are re-enqueued only once they have been due for
    ``CHIMEWAY_REQUEUE_AFTER``, so a tick evaluated that far ahead does it, but only when
    nothing is in flight: such a tick also expires every lease it sees, and a live
    worker's send would be recorded as abandoned and made again. Nothing new can become
    in flight meanwhile: after the triggers, only these ticks enqueue jobs.
    """
    deadline = time.monotonic() + RECOVERY_DEADLINE
    while True:
        counts = status_counts()
        if set(counts) <= TERMINAL_STATUSES:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries still not terminal: {counts}; {ticks}\n{diagnosis()}")
        if in_flight(redis_client):
            ticks.run()
            time.sleep(0.2)
            continue
        time.sleep(0.3)  # a job popped but not yet claimed has claimed by now
        if not in_flight(redis_client):
            later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=requeue_after + 1)
            ticks.run(now=later)


def sink_lines(sink: pathlib.Path) -> list[tuple[int, int, int]]:
    """``(delivery_id, attempt, pid)`` per send the sink saw."""
    if not sink.exists():
        return []
    return [
        (int(d), int(a), int(p))
        for d, a, p in (line.split() for line in sink.read_text().splitlines() if line)
    ]


@pytest.mark.soak
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_killed_worker_and_a_flushed_redis_lose_no_delivery(
    soak_app: Flask,
    database_url: str,
    redis_url: str,
    redis_client: t.Any,
    tmp_path: pathlib.Path,
) -> None:
    workers: list[Worker] = []
    ticks = Ticks()

    def start(name: str, *args: str) -> Worker:
        worker = start_worker(name, tmp_path, database_url, redis_url, *args)
        workers.append(worker)
        return worker

    def diagnosis() -> str:
        return "\n".join(
            f"--- {w.name} (pid {w.pid}, exit {w.process.poll()}):\n"
            + "\n".join(w.output().splitlines()[-20:])
            for w in workers
        )

    begin = time.monotonic()
    try:
        victim = start("victim", "--simple", "--queues", f"{VICTIM_QUEUE},{DELIVERY_QUEUE}")
        start("forking")  # a work horse per job
        for i in range(TRIGGERS):
            if i == KILL_AT:
                blocked_id = kill_mid_send(i, victim, redis_client, tmp_path / "started")
                killed_at = dt.datetime.now(dt.UTC)
                replacement = start("replacement", "--simple")
            else:
                Note.trigger(f"user-{i}", {"text": f"soak {i}"})
                db.session.commit()
            if i == FLUSH_AT:
                lost = flush_redis(redis_client)
            if i % TICK_EVERY == 0:
                ticks.run()
        triggered = time.monotonic()
        requeue_after = soak_app.extensions["chimeway"].settings.requeue_after
        recover(redis_client, ticks, requeue_after, diagnosis)
        recovered = time.monotonic()
        for worker in workers:
            if worker is not victim:
                assert worker.process.poll() is None, f"a worker died\n{diagnosis()}"
        last = ticks.run(now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    finally:
        for worker in workers:
            worker.stop()

    db.session.rollback()
    rows = list(db.session.scalars(sa.select(Delivery).order_by(Delivery.id)))
    history: dict[int, list[DeliveryAttempt]] = collections.defaultdict(list)
    for attempt in db.session.scalars(
        sa.select(DeliveryAttempt).order_by(DeliveryAttempt.delivery_id, DeliveryAttempt.number)
    ):
        history[attempt.delivery_id].append(attempt)
    sent = sink_lines(tmp_path / "sink.log")
    sends_per_delivery = collections.Counter(d for d, _, _ in sent)
    duplicates = {d: n for d, n in sends_per_delivery.items() if n > 1}
    abandoned = [a for rows_ in history.values() for a in rows_ if a.outcome == "abandoned"]
    by_worker = collections.Counter(
        {victim.pid: "victim", replacement.pid: "replacement"}.get(p, "forking") for _, _, p in sent
    )
    retried = [a for a in history[blocked_id] if a.outcome == "succeeded"]
    retry_delay = (retried[0].finished_at - killed_at).total_seconds() if retried else -1.0
    figures = (
        f"{TRIGGERS} triggers, one per transaction; {len(rows)} deliveries;"
        f" wall {recovered - begin:.1f}s (triggering {triggered - begin:.1f}s, then"
        f" {recovered - triggered:.1f}s to recover); {len(sent)} sends seen by the sink"
        f" ({', '.join(f'{n} {w}' for w, n in sorted(by_worker.items()))});"
        f" {len(duplicates)} delivery(ies) sent more than once; {len(abandoned)} abandoned"
        f" attempt(s); the killed send made again {retry_delay:.1f}s after the kill;"
        f" {lost} queued job(s) lost to FLUSHDB; {ticks.on_time} ticks on time and"
        f" {ticks.ahead} ahead re-enqueued {ticks.enqueued} job(s) and expired"
        f" {ticks.abandoned} lease(s)"
    )
    print(f"\nsoak: {figures}")

    assert len(rows) == TRIGGERS, figures
    not_succeeded = [(d.id, d.status, d.status_reason) for d in rows if d.status != "succeeded"]
    assert not_succeeded == [], figures
    never_sent = sorted({d.id for d in rows} - set(sends_per_delivery))
    assert never_sent == [], f"never sent: {never_sent[:20]}; {figures}"
    unexplained = set(duplicates) - {a.delivery_id for a in abandoned}
    assert unexplained == set(), (
        f"sent more than once without an abandoned attempt: {unexplained}; {figures}"
    )
    for d in rows:
        numbers = [a.number for a in history[d.id]]
        assert numbers == list(range(1, d.attempt_count + 1)), (d.id, numbers, figures)
        outcomes = [a.outcome for a in history[d.id]]
        assert outcomes == ["abandoned"] * (len(outcomes) - 1) + ["succeeded"], (
            d.id,
            outcomes,
            figures,
        )
    recorded = {(a.delivery_id, a.number) for rows_ in history.values() for a in rows_}
    seen = {(d, a) for d, a, _ in sent}
    assert seen <= recorded, f"a send of no recorded attempt; {figures}"
    assert {(d.id, d.attempt_count) for d in rows} <= seen, f"a success not sent; {figures}"

    # the send the victim died in: abandoned, then made once by another worker
    assert [(a.number, a.outcome) for a in history[blocked_id]] == [
        (1, "abandoned"),
        (2, "succeeded"),
    ], figures
    assert [(d, a) for d, a, _ in sent if d == blocked_id] == [(blocked_id, 2)], figures
    assert victim.process.returncode == -signal.SIGKILL
    assert lost > 0, f"Redis was flushed with no job queued: nothing was lost; {figures}"
    assert ticks.enqueued >= lost + 1, figures
    assert (last.abandoned, last.enqueued) == (0, 0), "a tick after the end finds nothing to do"
    assert redis_client.llen(f"rq:queue:{DELIVERY_QUEUE}") == 0
    for worker in workers:
        assert worker is victim or worker.process.returncode == 0, diagnosis()
        assert "Traceback" not in worker.output(), diagnosis()
