"""The Flask app the ``rq_*`` benchmarks trigger on and their worker processes run.

Worker processes load it with the ``flask`` command from the repository root::

    CHIMEWAY_BENCH_DATABASE_URL=postgresql+psycopg://... CHIMEWAY_BENCH_REDIS_URL=redis://...
        .venv/bin/flask --app bench.bench_app:create_app chimeway worker --simple --no-scheduler

The benchmark scripts import it and pass the URLs to :func:`create_app`.
"""

from __future__ import annotations

import os
import typing as t

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Chimeway, Notifier, Recipient

#: One trigger writes one delivery per recipient on each of these channels.
TASK_ASSIGNED = "bench.task_assigned"
TASK_CHANNELS = ("in_app", "log")
#: The worker benchmarks drain deliveries on the built-in ``log`` channel only.
LOG_ONLY = "bench.log_only"

FILLER = (
    "Open the task to see its description, its due date and the people working on it."
    " Reply to this message or comment on the task to ask a question. "
)

db = SQLAlchemy()
chimeway = Chimeway(db=db)


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
    """The content of one delivery, the same for Chimeway and the baselines (~310 bytes of
    JSON, as in ``bench/trigger.py``)."""
    return {
        "subject": f"{params['assigned_by']} assigned you {params['title']!r}",
        "text": f"Hello {recipient_id}, you have a new task on {channel}. {FILLER}",
        "url": params["url"],
    }


def recipient_ids(transaction: int, count: int) -> list[str]:
    """Distinct recipient identities for one transaction."""
    return [f"user-{transaction * count + k + 1}" for k in range(count)]


@chimeway.notifier(TASK_ASSIGNED, channels=list(TASK_CHANNELS))
class TaskAssigned(Notifier):
    def build(
        self, params: t.Mapping[str, t.Any], recipient: Recipient, channel: str
    ) -> dict[str, t.Any]:
        return build_content(params, recipient.id, channel)


@chimeway.notifier(LOG_ONLY, channels=["log"])
class LogOnly(Notifier):
    def build(
        self, params: t.Mapping[str, t.Any], recipient: Recipient, channel: str
    ) -> dict[str, t.Any]:
        return build_content(params, recipient.id, channel)


def create_app(database_url: str | None = None, redis_url: str | None = None) -> Flask:
    """An app with the ``rq`` dispatcher on the given database and Redis (by default
    ``$CHIMEWAY_BENCH_DATABASE_URL`` and ``$CHIMEWAY_BENCH_REDIS_URL``)."""
    app = Flask("chimeway_bench")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url or os.environ["CHIMEWAY_BENCH_DATABASE_URL"],
        CHIMEWAY_DISPATCHER="rq",
        CHIMEWAY_REDIS_URL=redis_url or os.environ["CHIMEWAY_BENCH_REDIS_URL"],
    )
    db.init_app(app)
    chimeway.init_app(app)
    return app
