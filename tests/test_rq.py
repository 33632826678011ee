"""The rq dispatcher against real Redis, RQ workers and databases."""

from __future__ import annotations

import datetime as dt
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as t

import pytest
import redis as redis_lib
import rq
import sqlalchemy as sa
from flask import Flask

from flask_chimeway.models import Delivery
from flask_chimeway.progress import progress
from flask_chimeway.queues import DELIVERY_QUEUE, delivery_job_id
from flask_chimeway.scheduler import TICK_JOB_ID, make_scheduler
from flask_chimeway.worker import make_worker

from . import rq_app
from .rq_app import Note, db, sends

ROOT = pathlib.Path(__file__).parent.parent


@pytest.fixture
def sink(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    path = tmp_path / "sink.log"
    monkeypatch.setenv("CHIMEWAY_TEST_SINK", str(path))
    return path


@pytest.fixture
def app_factory(
    database_url: str, redis_url: str, redis_client: t.Any, sink: pathlib.Path
) -> t.Iterator[t.Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(redis_url: str = redis_url, **config: t.Any) -> Flask:
        app = rq_app.create_app(database_url, redis_url)
        if config:  # init_app again to read the settings the test changed
            app.config.update(config)
            del app.extensions["chimeway"]
            rq_app.chimeway.init_app(app)
        with app.app_context():
            db.create_all()
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


@pytest.fixture
def app(app_factory: t.Callable[..., Flask]) -> t.Iterator[Flask]:
    app = app_factory()
    with app.app_context():
        yield app


def queued(redis_client: t.Any, name: str = DELIVERY_QUEUE) -> list[str]:
    return [j.decode() for j in redis_client.lrange(f"rq:queue:{name}", 0, -1)]


def lose_everything(redis_client: t.Any) -> None:
    """What FLUSHDB does to RQ, keeping the key that reserves the db index for this run."""
    keys = [k for k in redis_client.scan_iter("*") if not k.startswith(b"chimeway-test-run")]
    if keys:
        redis_client.delete(*keys)


def deliveries() -> list[Delivery]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Delivery).order_by(Delivery.id)))


def drain(app: Flask) -> None:
    make_worker(app, simple=True).work(burst=True, with_scheduler=False, logging_level="WARNING")


def test_commit_enqueues_one_job_per_delivery_in_one_pipeline(
    app: Flask, redis_client: t.Any
) -> None:
    state = app.extensions["chimeway"]
    from flask_chimeway.queues import connection

    conn = connection(state)
    pipelines: list[object] = []
    real_pipeline = conn.pipeline
    conn.pipeline = lambda *a, **k: pipelines.append(1) or real_pipeline(*a, **k)  # type: ignore[method-assign]

    Note.trigger([1, 2, 3], {"text": "hi"})
    Note.trigger([4], {"text": "hi"})
    assert queued(redis_client) == []
    db.session.commit()

    ids = [d.id for d in deliveries()]
    assert queued(redis_client) == [delivery_job_id(i, 1) for i in ids]
    assert len(pipelines) == 1
    job = rq.job.Job.fetch(delivery_job_id(ids[0], 1), connection=redis_client)
    assert job.func_name == "flask_chimeway.jobs.perform_delivery_job"
    assert job.args == (ids[0], 1)  # the delivery id and the attempt: ids only
    assert job.kwargs == {}


def test_rollback_enqueues_nothing(app: Flask, redis_client: t.Any) -> None:
    Note.trigger([1, 2])
    db.session.rollback()
    db.session.commit()
    assert queued(redis_client) == []


def test_savepoints_enqueue_exactly_what_survives(app: Flask, redis_client: t.Any) -> None:
    # nested commit inside an outer rollback: nothing
    with db.session.begin_nested():
        Note.trigger(1)
    db.session.rollback()
    assert queued(redis_client) == []

    # nested rollback inside an outer commit: only the outer's deliveries
    kept = Note.trigger(2).deliveries[0].id
    nested = db.session.begin_nested()
    Note.trigger(3)
    nested.rollback()
    with db.session.begin_nested():
        inner_kept = Note.trigger(4).deliveries[0].id
        innermost = db.session.begin_nested()
        Note.trigger(5)
        innermost.rollback()
    assert queued(redis_client) == []  # nothing before the outermost commit
    db.session.commit()
    assert queued(redis_client) == [delivery_job_id(kept, 1), delivery_job_id(inner_kept, 1)]


def test_worker_delivers_each_once(app: Flask, redis_client: t.Any, sink: pathlib.Path) -> None:
    Note.trigger([1, 2, 3], {"text": "hi"})
    db.session.commit()
    drain(app)

    rows = deliveries()
    assert [d.status for d in rows] == ["succeeded"] * 3
    assert sorted(sends(sink)) == [(d.id, 1) for d in rows]
    assert queued(redis_client) == []


def test_the_same_job_twice_sends_once(app: Flask, redis_client: t.Any, sink: pathlib.Path) -> None:
    from flask_chimeway.queues import enqueue_deliveries

    [delivery] = Note.trigger(1).deliveries
    db.session.commit()
    enqueue_deliveries(app.extensions["chimeway"], [(delivery.id, 1)])
    assert len(queued(redis_client)) == 2
    drain(app)
    assert sends(sink) == [(delivery.id, 1)]


class SpareRedis:
    """A Redis server of the test's own, to stop and start."""

    def __init__(self, tmp: pathlib.Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis_lib.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis_lib.ConnectionError:
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def spare_redis(tmp_path: pathlib.Path) -> t.Iterator[SpareRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = SpareRedis(tmp_path)
    yield server
    server.stop()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_redis_down_at_commit_then_back_and_a_tick(
    app_factory: t.Callable[..., Flask],
    spare_redis: SpareRedis,
    sink: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_factory(redis_url=spare_redis.url)  # the server is not running
    with app.app_context(), caplog.at_level(logging.WARNING, logger="flask_chimeway"):
        started = time.monotonic()
        Note.trigger(1)
        db.session.commit()  # succeeds
        Note.trigger(2)
        db.session.commit()
        assert time.monotonic() - started < 5
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "warned once, not per commit"
        assert "unreachable" in warnings[0].getMessage()
        assert [d.status for d in deliveries()] == ["pending", "pending"]

        spare_redis.start()
        assert progress().enqueued == 0, "not before CHIMEWAY_REQUEUE_AFTER has passed"
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
        assert progress(now=later).enqueued == 2
        assert progress(now=later).enqueued == 0, "live jobs are not enqueued again"
        drain(app)
        assert [d.status for d in deliveries()] == ["succeeded", "succeeded"]
        assert sorted(sends(sink)) == [(d.id, 1) for d in deliveries()]


def test_redis_flushed_after_enqueue_tick_reenqueues_once(
    app: Flask, redis_client: t.Any, sink: pathlib.Path
) -> None:
    Note.trigger([1, 2])
    db.session.commit()
    lose_everything(redis_client)  # the jobs are lost

    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert progress(now=later).enqueued == 2
    drain(app)
    assert progress(now=later).enqueued == 0
    drain(app)
    assert sorted(d for d, _ in sends(sink)) == [d.id for d in deliveries()]
    assert [d.status for d in deliveries()] == ["succeeded", "succeeded"]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_concurrent_ticks_enqueue_each_lost_delivery_once(app: Flask, redis_client: t.Any) -> None:
    Note.trigger(list(range(300)))
    db.session.commit()
    lose_everything(redis_client)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    counts: list[int] = []

    def tick() -> None:
        with app.app_context():
            counts.append(progress(now=later, batch_size=50).enqueued)

    threads = [threading.Thread(target=tick) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    jobs = queued(redis_client)
    assert sum(counts) == 300
    assert len(jobs) == len(set(jobs)) == 300


def test_transient_errors_retry_punctually_then_succeed(
    app_factory: t.Callable[..., Flask], redis_client: t.Any, sink: pathlib.Path
) -> None:
    from flask_chimeway import TransientDeliveryError

    app = app_factory(CHIMEWAY_BACKOFF_BASE=0.4, CHIMEWAY_BACKOFF_MAX=1)
    failures = [TransientDeliveryError("429 slow down")]
    channel = rq_app.chimeway._channels["sink"]
    real_send = channel.send

    def flaky_send(message: t.Any) -> t.Any:
        if failures:
            raise failures.pop()
        return real_send(message)

    channel.send = flaky_send  # type: ignore[method-assign]
    try:
        with app.app_context():
            [delivery] = Note.trigger(1).deliveries
            db.session.commit()
            drain(app)
            [row] = deliveries()
            assert row.status == "failed"
            registry = rq.registry.ScheduledJobRegistry(DELIVERY_QUEUE, connection=redis_client)
            assert registry.get_job_ids() == [delivery_job_id(delivery.id, 2)]
            # RQ's scheduler (in a worker started with it) moves the retry when it is due
            time.sleep(max(0.0, (row.next_attempt_at - dt.datetime.now(dt.UTC)).total_seconds()))
            worker = make_worker(app, simple=True)
            worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
            scheduler = rq.scheduler.RQScheduler([DELIVERY_QUEUE], connection=redis_client)
            scheduler.enqueue_scheduled_jobs()
            drain(app)
            [row] = deliveries()
            assert row.status == "succeeded"
            assert [(a.number, a.outcome) for a in row.attempts] == [
                (1, "transient_failure"),
                (2, "succeeded"),
            ]
            assert sends(sink) == [(delivery.id, 2)]
    finally:
        channel.send = real_send  # type: ignore[method-assign]


def test_exhaustion_and_permanent_errors(
    app_factory: t.Callable[..., Flask], redis_client: t.Any
) -> None:
    from flask_chimeway import PermanentDeliveryError, TransientDeliveryError

    app = app_factory(CHIMEWAY_MAX_ATTEMPTS=2, CHIMEWAY_BACKOFF_BASE=0.2, CHIMEWAY_BACKOFF_MAX=0.2)
    channel = rq_app.chimeway._channels["sink"]
    real_send = channel.send

    def failing(message: t.Any) -> t.Any:
        if message.content.get("fail") == "permanent":
            raise PermanentDeliveryError("no such mailbox")
        raise TransientDeliveryError("timeout")

    channel.send = failing  # type: ignore[method-assign]
    try:
        with app.app_context():
            Note.trigger(1, {"fail": "permanent"})
            Note.trigger(2, {"fail": "transient"})
            db.session.commit()
            drain(app)
            permanent, transient = deliveries()
            assert (permanent.status, permanent.status_reason) == ("cancelled", "permanent_failure")
            assert transient.status == "failed"
            time.sleep(0.25)  # the retry is due; the tick stands in for the scheduler
            later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
            assert progress(now=later).enqueued == 1
            drain(app)
            permanent, transient = deliveries()
            assert (transient.status, transient.status_reason) == ("cancelled", "retries_exhausted")
            assert [a.error_class for a in transient.attempts] == [
                "flask_chimeway.errors.TransientDeliveryError"
            ] * 2
            assert progress(now=later + dt.timedelta(hours=2)).enqueued == 0
    finally:
        channel.send = real_send  # type: ignore[method-assign]


def worker_process(
    database_url: str, redis_url: str, sink: pathlib.Path, *args: str, **env: str
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "CHIMEWAY_TEST_DATABASE_URL": database_url,
        "CHIMEWAY_TEST_REDIS_URL": redis_url,
        "CHIMEWAY_TEST_SINK": str(sink),
        **env,
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "tests.rq_app:create_app",
            "chimeway",
            "worker",
            *args,
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_for(predicate: t.Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_workers_on_the_same_delivery_send_once(
    app: Flask, database_url: str, redis_url: str, redis_client: t.Any, sink: pathlib.Path
) -> None:
    from flask_chimeway.queues import enqueue_deliveries

    rows = Note.trigger(list(range(20))).deliveries
    db.session.commit()
    state = app.extensions["chimeway"]
    enqueue_deliveries(state, [(d.id, 1) for d in rows])  # every job twice
    enqueue_deliveries(state, [(d.id, 1) for d in rows])
    workers = [
        worker_process(database_url, redis_url, sink, "--burst", "--simple", "--no-scheduler")
        for _ in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err.decode()
    assert sorted(d for d, _ in sends(sink)) == sorted(d.id for d in rows)
    assert all(d.status == "succeeded" for d in deliveries())


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("mode", ["--simple", "--fork"])
def test_worker_killed_mid_send_is_retried_after_the_lease(
    app: Flask, database_url: str, redis_url: str, sink: pathlib.Path, mode: str
) -> None:
    [delivery] = Note.trigger(1, {"behaviour": "block"}).deliveries
    db.session.commit()
    args = ["--no-scheduler"] + ([mode] if mode == "--simple" else [])
    worker = worker_process(database_url, redis_url, sink, *args, CHIMEWAY_TEST_LEASE_SECONDS="1")
    started = sink.parent / "started"
    try:
        wait_for(lambda: started.exists() and started.read_text().endswith("\n"))
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        if started.exists():  # a forked work horse runs in a session of its own
            horse = int(started.read_text().split()[1])
            if horse != worker.pid:
                os.kill(horse, signal.SIGKILL)
        worker.communicate(timeout=10)
    [row] = deliveries()
    assert row.status == "sending"
    assert row.lease_expires_at is not None

    assert progress().abandoned == 0, "the lease is still live"
    wait_for(lambda: dt.datetime.now(dt.UTC) > row.lease_expires_at)
    report = progress()
    assert (report.abandoned, report.enqueued) == (1, 1)
    drain(app)
    [row] = deliveries()
    assert row.status == "succeeded"
    assert [(a.number, a.outcome) for a in row.attempts] == [(1, "abandoned"), (2, "succeeded")]
    assert ("failed", "lease_expired") in [(t.to_status, t.reason) for t in row.transitions]
    assert sends(sink) == [(delivery.id, 2)]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_sigterm_finishes_the_current_job(
    app: Flask, database_url: str, redis_url: str, sink: pathlib.Path
) -> None:
    [delivery] = Note.trigger(1, {"behaviour": "slow", "seconds": 1.5}).deliveries
    Note.trigger(2)
    db.session.commit()
    worker = worker_process(database_url, redis_url, sink, "--simple", "--no-scheduler")
    wait_for((sink.parent / "started").exists)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err.decode()
    first, second = deliveries()
    assert first.status == "succeeded", "the job in hand was finished"
    assert second.status == "pending", "no new job was started after SIGTERM"
    assert sends(sink) == [(delivery.id, 1)]


def test_worker_command_drains_in_burst_mode(
    app: Flask, redis_client: t.Any, sink: pathlib.Path
) -> None:
    Note.trigger([1, 2])
    db.session.commit()
    result = app.test_cli_runner().invoke(
        args=[
            "chimeway",
            "worker",
            "--burst",
            "--simple",
            "--no-scheduler",
            "--queues",
            "chimeway_delivery",
        ]
    )
    assert result.exit_code == 0, result.output
    assert [d.status for d in deliveries()] == ["succeeded", "succeeded"]


def test_scheduler_registers_the_tick_once_and_the_tick_runs(
    app: Flask, redis_client: t.Any, sink: pathlib.Path
) -> None:
    first = make_scheduler(app)
    make_scheduler(app)  # a restart, or a second instance
    assert TICK_JOB_ID in first
    entries = redis_client.zrange(first.scheduled_jobs_key, 0, -1)
    assert entries == [TICK_JOB_ID.encode()]

    # the cron job the scheduler enqueues runs the tick inside the app context
    Note.trigger(1)
    db.session.info.clear()  # as if the process died before enqueueing
    db.session.commit()
    redis_client.zadd(first.scheduled_jobs_key, {TICK_JOB_ID: 0})  # make it due now
    first.enqueue_jobs()
    assert queued(redis_client, "chimeway_workflows") == [TICK_JOB_ID]
    drain(app)
    job = rq.job.Job.fetch(TICK_JOB_ID, connection=redis_client)
    assert job.get_status() == "finished"
    assert "stale lease" in job.return_value()
