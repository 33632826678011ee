"""Explain: ``flask chimeway trace`` and ``flask_chimeway.trace``."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as sa_orm
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import (
    Channel,
    Chimeway,
    Message,
    Notifier,
    TraceNotFoundError,
    TransientDeliveryError,
    trace,
)
from flask_chimeway.models import Delivery


class Once(Channel):
    def __init__(self) -> None:
        self.failed = False

    def send(self, message: Message) -> None:
        if not self.failed:
            self.failed = True
            raise TransientDeliveryError("smtp 451 try later")


@pytest.fixture
def triggered(app: Flask, db: SQLAlchemy, chimeway: Chimeway) -> t.Any:
    chimeway.channel("email", Once())

    @chimeway.notifier("task.assigned", channels=["in_app", "email"])
    class TaskAssigned(Notifier):
        def build(self, params, recipient, channel):
            return {"text": "x"}

    result = TaskAssigned.trigger(
        [7], {"title": "Docs", "password": "p"}, idempotency_key="assign:1", tenant="acme"
    )
    db.session.commit()
    return result


def test_trace_cli_shows_every_status_change_and_attempt(app: Flask, triggered: t.Any) -> None:
    event_id = triggered.event.id
    out = app.test_cli_runner().invoke(args=["chimeway", "trace", f"evt_{event_id}"])
    assert out.exit_code == 0, out.output
    text = out.output
    assert f"evt_{event_id}  task.assigned v1" in text
    assert "tenant     acme" in text
    assert "idempotency key  assign:1" in text
    assert '"password": "[REDACTED]"' in text
    assert "ntf_" in text
    assert "to 7" in text
    in_app, email = triggered.deliveries
    assert f"dlv_{in_app.id}  in_app  now succeeded (sent)" in text
    assert f"dlv_{email.id}  email  now failed (transient_failure)" in text
    assert "attempt 1    transient_failure" in text
    assert "TransientDeliveryError: smtp 451 try later" in text
    assert "next attempt due" in text
    # the email timeline is in order: planned, claimed, the attempt, the failure
    email_part = text.split(f"dlv_{email.id}")[1]
    order = ["pending      planned", "sending      claimed", "attempt 1", "failed       transient"]
    positions = [email_part.index(item) for item in order]
    assert positions == sorted(positions)


def test_trace_of_one_delivery_shows_only_it(app: Flask, db: SQLAlchemy, triggered: t.Any) -> None:
    in_app, email = triggered.deliveries
    with sa_orm.Session(db.engine) as session:
        text = str(trace(session, f"dlv_{email.id}"))
    assert f"dlv_{email.id}" in text
    assert f"dlv_{in_app.id}" not in text


def test_trace_of_a_notification_and_by_object(
    app: Flask, db: SQLAlchemy, triggered: t.Any
) -> None:
    notification = triggered.notifications[0]
    with sa_orm.Session(db.engine) as session:
        by_id = trace(session, notification.public_id)
        delivery = session.scalars(sa.select(Delivery)).first()
        by_object = trace(session, delivery)
    assert by_id.notifications[0].id == notification.id
    assert len(by_id.timelines) == 2
    assert list(by_object.timelines) == [delivery.id]


def test_trace_unknown_and_ambiguous_ids(app: Flask, triggered: t.Any) -> None:
    runner = app.test_cli_runner()
    out = runner.invoke(args=["chimeway", "trace", "evt_999"])
    assert out.exit_code != 0
    assert "No event, notification, delivery, run or signal matches 'evt_999'" in out.output
    out = runner.invoke(args=["chimeway", "trace", "1"])  # evt_1, ntf_1 and dlv_1 exist
    assert out.exit_code != 0
    assert "ambiguous" in out.output
    out = runner.invoke(args=["chimeway", "trace", "job_1"])
    assert "pass evt_<id>, ntf_<id>, dlv_<id>" in out.output


def test_bare_number_traces_when_only_one_row_matches(
    app: Flask, db: SQLAlchemy, triggered: t.Any
) -> None:
    with sa_orm.Session(db.engine) as session:
        email = triggered.deliveries[1]
        assert email.id == 2  # events and notifications have only id 1
        assert trace(session, "2").subject.id == 2
        with pytest.raises(TraceNotFoundError):
            trace(session, 1)


def test_progress_cli_runs_a_tick(app: Flask, triggered: t.Any) -> None:
    runner = app.test_cli_runner()
    out = runner.invoke(args=["chimeway", "progress", "--now", "2999-01-01T00:00:00"])
    assert out.exit_code == 0, out.output
    assert "1 delivery(ies) performed" in out.output
    out = runner.invoke(args=["chimeway", "progress", "--now", "yesterday"])
    assert out.exit_code != 0
    assert "ISO 8601" in out.output
