"""An app for tests that run real worker processes: ``flask --app tests.rq_app worker``.

Configured from the environment so a test can point subprocess workers at its own
database and Redis. The ``sink`` channel appends one line per send to a file, so a test
can count sends across processes; a message whose content asks for it blocks until the
process is killed (or sleeps a while), to interrupt a worker in the middle of a send.
"""

from __future__ import annotations

import os
import pathlib
import time
import typing as t

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Channel, Chimeway, Message, Notifier, SendResult

db = SQLAlchemy()
chimeway = Chimeway(db=db)


class FileSink(Channel):
    """Appends ``<delivery> <attempt> <pid>`` per send to ``$CHIMEWAY_TEST_SINK``."""

    def send(self, message: Message) -> SendResult:
        sink = pathlib.Path(os.environ["CHIMEWAY_TEST_SINK"])
        behaviour = message.content.get("behaviour", "")
        if behaviour in ("block", "slow"):
            with (sink.parent / "started").open("a") as f:
                f.write(f"{message.delivery_id} {os.getpid()}\n")
            if behaviour == "block" and message.attempt == 1:
                while True:  # until SIGKILL
                    time.sleep(0.05)
            if behaviour == "slow":
                time.sleep(float(message.content.get("seconds", 1)))
        with sink.open("a") as f:
            f.write(f"{message.delivery_id} {message.attempt} {os.getpid()}\n")
        return SendResult(provider_message_id=f"sink-{message.delivery_id}")


chimeway.channel("sink", FileSink())


@chimeway.notifier("sink.note", channels=["sink"])
class Note(Notifier):
    def build(
        self, params: t.Mapping[str, t.Any], recipient: t.Any, channel: str
    ) -> dict[str, t.Any]:
        return dict(params)


def create_app(database_url: str | None = None, redis_url: str | None = None) -> Flask:
    app = Flask("rq_test_app")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url or os.environ["CHIMEWAY_TEST_DATABASE_URL"],
        CHIMEWAY_DISPATCHER="rq",
        CHIMEWAY_REDIS_URL=redis_url or os.environ["CHIMEWAY_TEST_REDIS_URL"],
        CHIMEWAY_LEASE_SECONDS=int(os.environ.get("CHIMEWAY_TEST_LEASE_SECONDS", "300")),
        CHIMEWAY_BACKOFF_BASE=float(os.environ.get("CHIMEWAY_TEST_BACKOFF_BASE", "30")),
    )
    db.init_app(app)
    chimeway.init_app(app)
    return app


def sends(sink: pathlib.Path) -> list[tuple[int, int]]:
    """``(delivery_id, attempt)`` per line the sink wrote."""
    if not sink.exists():
        return []
    return [
        (int(d), int(a))
        for d, a, _ in (line.split() for line in sink.read_text().splitlines() if line)
    ]
