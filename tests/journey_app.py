"""An app for tests that run the tick in real processes:
``flask --app tests.journey_app:create_app chimeway progress``.

Configured from the environment like :mod:`tests.rq_app`, but with the ``sync``
dispatcher and a workflow notifier: deliver on the ``sink``, wait an hour, deliver on the
``sink`` again. The ``sink`` channel appends ``<delivery> <attempt> <pid>`` per send to
``$CHIMEWAY_TEST_SINK``, so a test can count sends across processes.

With ``$CHIMEWAY_TEST_GATE`` set to a directory, ``create_app`` writes ``ready-<pid>``
there and waits for a ``go`` file before returning, so a test can release several
processes at the same moment once their imports are done; the process prints the wall
clock times at which it was released and at which it exited.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import time
import typing as t

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Channel, Chimeway, Message, Notifier, SendResult
from flask_chimeway.workflows import Workflow, deliver, wait

KEY = "journey.nudge"
JOURNEY = Workflow(deliver("sink"), wait(hours=1), deliver("sink"))
GATE_TIMEOUT = 60.0

db = SQLAlchemy()
chimeway = Chimeway(db=db)


class FileSink(Channel):
    """Appends ``<delivery> <attempt> <pid>`` per send to ``$CHIMEWAY_TEST_SINK``."""

    def send(self, message: Message) -> SendResult:
        sink = pathlib.Path(os.environ["CHIMEWAY_TEST_SINK"])
        with sink.open("a") as f:
            f.write(f"{message.delivery_id} {message.attempt} {os.getpid()}\n")
        return SendResult(provider_message_id=f"sink-{message.delivery_id}")


class Nudge(Notifier):
    def build(
        self, params: t.Mapping[str, t.Any], recipient: t.Any, channel: str
    ) -> dict[str, t.Any]:
        return {"text": f"nudge for {recipient.id}"}


def register(extension: Chimeway) -> type[Nudge]:
    """Register the ``sink`` channel and the workflow notifier on ``extension`` (a test's
    own :class:`Chimeway` registers the same notifier as the processes it starts)."""
    extension.channel("sink", FileSink())
    return extension.notifier(KEY, channels=["sink"], workflow=JOURNEY)(type("Nudge", (Nudge,), {}))


register(chimeway)


def _wait_at_gate(gate: pathlib.Path) -> None:
    (gate / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + GATE_TIMEOUT
    while not (gate / "go").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"nobody opened the gate {gate} within {GATE_TIMEOUT} s")
        time.sleep(0.005)
    released = time.time()
    atexit.register(lambda: print(f"window {os.getpid()} {released:.6f} {time.time():.6f}"))


def create_app(database_url: str | None = None) -> Flask:
    app = Flask("journey_test_app")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url or os.environ["CHIMEWAY_TEST_DATABASE_URL"],
        CHIMEWAY_DISPATCHER="sync",
    )
    db.init_app(app)
    chimeway.init_app(app)
    gate = os.environ.get("CHIMEWAY_TEST_GATE")
    if gate:
        _wait_at_gate(pathlib.Path(gate))
    return app


def sends(sink: pathlib.Path) -> list[tuple[int, int, int]]:
    """``(delivery_id, attempt, pid)`` per line the sink wrote."""
    if not sink.exists():
        return []
    return [
        (int(d), int(a), int(p))
        for d, a, p in (line.split() for line in sink.read_text().splitlines() if line)
    ]
