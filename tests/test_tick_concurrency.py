"""Two ``flask chimeway progress`` processes at once on the same due workflow runs: each run
moves past its wait once and each next delivery is sent once (DESIGN.md section 7: the tick
is safe to run in several processes at once)."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import os
import pathlib
import subprocess
import sys
import time
import typing as t

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Chimeway
from flask_chimeway.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryTransition,
    WorkflowRun,
    WorkflowTransition,
)

from . import journey_app
from .conftest import AppFactory

ROOT = pathlib.Path(__file__).parent.parent
RUNS = 1000
TICKS = 2

#: The log of a run that sent step 0, waited, and sent step 2: each reason once.
RUN_LOG = [
    "started",
    "step_activated",
    "step_finished",
    "waiting",
    "wait_elapsed",
    "step_activated",
    "step_finished",
    "completed",
]
#: The log of a step-2 delivery activated by the tick and sent on its first attempt.
STEP_TWO_LOG = [
    ("held", "pending", "step_activated"),
    ("pending", "sending", "claimed"),
    ("sending", "succeeded", "sent"),
]


def tick_process(
    database_url: str, sink: pathlib.Path, gate: pathlib.Path, now: dt.datetime, out: t.IO[bytes]
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "CHIMEWAY_TEST_DATABASE_URL": database_url,
        "CHIMEWAY_TEST_SINK": str(sink),
        "CHIMEWAY_TEST_GATE": str(gate),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "tests.journey_app:create_app",
            "chimeway",
            "progress",
            "--now",
            now.isoformat(),
        ],
        cwd=ROOT,
        env=environment,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def wait_for(predicate: t.Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def logs(db: SQLAlchemy, column: t.Any, *values: t.Any) -> dict[int, list[t.Any]]:
    """The rows of a log table grouped by ``column`` (a run or a delivery id), in order."""
    grouped: dict[int, list[t.Any]] = collections.defaultdict(list)
    table = column.class_
    rows = db.session.execute(sa.select(column, *values).order_by(table.id))
    for key, *rest in rows:
        grouped[key].append(rest[0] if len(rest) == 1 else tuple(rest))
    return dict(grouped)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_ticks_at_once_advance_each_due_run_once(
    make_app: AppFactory,
    db: SQLAlchemy,
    chimeway: Chimeway,
    database_url: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,000 runs wait at a due wait; two tick processes start at the same moment.

    ``--now`` is an hour ahead of the clock, so the step-2 deliveries the ticks activate
    are not yet due for the after-commit dispatch (which reads the clock) and each tick's
    due-delivery pass performs them: both processes walk the same ids in the same order,
    so every batch of them is contested.
    """
    sink = tmp_path / "sink.log"
    monkeypatch.setenv("CHIMEWAY_TEST_SINK", str(sink))
    nudge = journey_app.register(chimeway)
    app = make_app()

    with app.app_context():
        started = time.monotonic()
        nudge.trigger(list(range(RUNS)))
        db.session.commit()  # the sync dispatcher sends step 0 to everyone, the runs wait
        took = time.monotonic() - started
        print(f"\n{RUNS} runs triggered, step 0 sent, waiting: {took:.1f} s")
        runs = db.session.scalars(sa.select(WorkflowRun)).all()
        assert len(runs) == RUNS
        assert {(r.state, r.current_step) for r in runs} == {("waiting", 1)}
        first_sends = journey_app.sends(sink)
        assert len(first_sends) == RUNS
        assert {pid for _, _, pid in first_sends} == {os.getpid()}
        now = max(r.due_at for r in runs) + dt.timedelta(minutes=1)
        db.session.rollback()

    # Both processes import everything, then wait at the gate until both are ready.
    gate = tmp_path / "gate"
    gate.mkdir()
    outputs = [tmp_path / f"tick-{i}.log" for i in range(TICKS)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for output in outputs:
            with output.open("wb") as out:
                processes.append(tick_process(database_url, sink, gate, now, out))
        wait_for(lambda: len(list(gate.glob("ready-*"))) == TICKS)
        (gate / "go").touch()
        for process in processes:
            process.wait(timeout=100)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    texts = [output.read_text() for output in outputs]
    for process, text in zip(processes, texts, strict=True):
        assert process.returncode == 0, text
        # a batch that failed is logged, not raised: the output must say nothing else
        said = [
            line for line in text.splitlines() if not line.startswith(("chimeway tick:", "window "))
        ]
        assert said == [], text

    windows: dict[int, tuple[float, float]] = {}
    for process, text in zip(processes, texts, strict=True):
        [window] = [line.split() for line in text.splitlines() if line.startswith("window ")]
        [report] = [line for line in text.splitlines() if line.startswith("chimeway tick:")]
        begin, end = float(window[2]), float(window[3])
        assert int(window[1]) == process.pid
        windows[process.pid] = (begin, end)
        print(f"tick process {process.pid}: {end - begin:.1f} s; {report}")
    overlap = min(end for _, end in windows.values()) - max(begin for begin, _ in windows.values())
    print(f"the two ticks overlapped for {overlap:.1f} s")
    assert overlap > 0, f"the ticks ran one after the other: {windows}"

    with app.app_context():
        runs = db.session.scalars(sa.select(WorkflowRun)).all()
        assert collections.Counter(r.state for r in runs) == {"completed": RUNS}
        run_logs = logs(db, WorkflowTransition.run_id, WorkflowTransition.reason)
        assert run_logs == {r.id: RUN_LOG for r in runs}, "each run moved once per step"

        second = db.session.scalars(sa.select(Delivery).where(Delivery.step == 2)).all()
        step_two = {d.id for d in second}
        assert len(step_two) == RUNS
        assert {(d.status, d.attempt_count) for d in second} == {("succeeded", 1)}
        attempts = logs(db, DeliveryAttempt.delivery_id, DeliveryAttempt.number)
        assert {i: attempts.get(i) for i in step_two} == {i: [1] for i in step_two}
        transitions = logs(
            db,
            DeliveryTransition.delivery_id,
            DeliveryTransition.from_status,
            DeliveryTransition.to_status,
            DeliveryTransition.reason,
        )
        assert {i: transitions.get(i) for i in step_two} == {i: STEP_TWO_LOG for i in step_two}
        db.session.rollback()

    all_sends = journey_app.sends(sink)
    assert all_sends[:RUNS] == first_sends, "step 0 was not sent again"
    sent = all_sends[RUNS:]
    assert collections.Counter((d, a) for d, a, _ in sent) == dict.fromkeys(
        ((i, 1) for i in step_two), 1
    ), "the sink saw each step-2 delivery exactly once"
    split = collections.Counter(pid for _, _, pid in sent)
    switches = sum(a[2] != b[2] for a, b in itertools.pairwise(sent))
    print(
        f"step-2 deliveries sent per tick process: {dict(split)}; the sink switched from one"
        f" process to the other {switches} times"
    )
    assert set(split) <= set(windows)
    if len(split) < TICKS:
        print("one tick process sent every delivery: the ticks did not share the work")
