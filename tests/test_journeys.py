"""The recipes of the "Multi-step journeys" guide, end to end: with the sync dispatcher on
SQLite, and with the rq dispatcher on PostgreSQL (real Redis, jobs run by an in-process
worker), under a fake clock."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Channel, Chimeway, Message, Notifier, PermanentDeliveryError
from flask_chimeway.testing import Clock, capture, clock, drain
from flask_chimeway.workflows import Workflow, deliver, escalate, param, read, signal, wait


class Recording(Channel):
    """A provider stand-in: records what it sent; pages to ``unreachable`` bounce."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.unreachable: set[str] = set()

    def send(self, message: Message) -> None:
        if message.recipient.id in self.unreachable:
            raise PermanentDeliveryError(f"{message.recipient.id} is unreachable")
        self.sent.append(message)

    def to(self, recipient: str) -> list[Message]:
        return [m for m in self.sent if m.recipient.id == recipient]


class Text(Notifier):
    def build(self, params, recipient, channel):
        return {"text": f"{self.key} on {channel} for {recipient.id}"}


@pytest.fixture
def journey_app(
    request: pytest.FixtureRequest, backend: str, chimeway: Chimeway
) -> tuple[Flask, Recording, Recording]:
    """sqlite: the sync dispatcher; postgresql: the rq dispatcher with real Redis."""
    email, pager = Recording(), Recording()
    chimeway.channel("email", email)
    chimeway.channel("pager", pager)
    config = {}
    if backend == "postgresql":
        request.getfixturevalue("redis_client")
        config = {
            "CHIMEWAY_DISPATCHER": "rq",
            "CHIMEWAY_REDIS_URL": request.getfixturevalue("redis_url"),
        }
    return request.getfixturevalue("make_app")(**config), email, pager


def settle(app: Flask, c: Clock | None = None, **advance: float) -> None:
    """Let everything due happen: move the clock (and tick), run queued jobs (rq)."""
    drain(app)
    if c is not None and advance:
        c.advance(**advance)
        drain(app)


# -- recipe 1: mention escalation -----------------------------------------------------
MENTION = Workflow(
    deliver("in_app"),
    wait(minutes=30, stop_on=[read()]),
    deliver("email"),
    wait(hours=24, stop_on=[read()]),
    escalate("email", to=param("teammate_id")),
)


def mention_notifier(chimeway: Chimeway) -> t.Any:
    return chimeway.notifier("comment.mention", channels=["in_app", "email"], workflow=MENTION)(
        type("Mention", (Text,), {})
    )


def test_mention_read_in_app_sends_no_email(
    journey_app: t.Any, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    app, email, _ = journey_app
    mention = mention_notifier(chimeway)
    with app.app_context(), clock(app) as c:
        notification = mention.trigger("ada", {"teammate_id": "bob"}).notifications[0]
        db.session.commit()
        settle(app)
        settle(app, c, minutes=10)
        chimeway.mark_read(notification.id, "ada")
        db.session.commit()
        settle(app, c, minutes=30)
        settle(app, c, hours=30)
    assert email.sent == []


def test_mention_unread_sends_email_then_escalates(
    journey_app: t.Any, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    app, email, _ = journey_app
    mention = mention_notifier(chimeway)
    with app.app_context(), clock(app) as c, capture(app, fake=False) as outbox:
        mention.trigger("ada", {"teammate_id": "bob"})
        db.session.commit()
        settle(app)
        outbox.assert_sent("comment.mention", channel="in_app", recipient="ada")
        settle(app, c, minutes=29)
        assert email.sent == []
        settle(app, c, minutes=1)
        assert [m.recipient.id for m in email.sent] == ["ada"]
        settle(app, c, hours=24)
    assert [m.recipient.id for m in email.sent] == ["ada", "bob"]
    assert email.to("bob")[0].content == {"text": "comment.mention on email for bob"}


def test_mention_read_after_the_email_does_not_escalate(
    journey_app: t.Any, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    app, email, _ = journey_app
    mention = mention_notifier(chimeway)
    with app.app_context(), clock(app) as c:
        notification = mention.trigger("ada", {"teammate_id": "bob"}).notifications[0]
        db.session.commit()
        settle(app, c, minutes=31)
        chimeway.mark_read(notification.id, "ada")
        db.session.commit()
        settle(app, c, hours=25)
    assert [m.recipient.id for m in email.sent] == ["ada"]


# -- recipe 2: invoice dunning --------------------------------------------------------
DUNNING = Workflow(
    deliver("email"),
    wait(days=3),
    deliver("email"),
    stop_on=[signal("invoice.paid", match={"invoice_id": "invoice_id"})],
)


def test_dunning_stops_when_the_invoice_is_paid(
    journey_app: t.Any, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    app, email, _ = journey_app
    overdue = chimeway.notifier("invoice.overdue", channels=["email"], workflow=DUNNING)(
        type("Overdue", (Text,), {})
    )
    with app.app_context(), clock(app) as c:
        overdue.trigger("acme", {"invoice_id": 42})
        overdue.trigger("acme", {"invoice_id": 43})
        db.session.commit()
        settle(app)
        assert len(email.sent) == 2
        settle(app, c, days=1)
        chimeway.track("acme", "invoice.paid", {"invoice_id": 42})
        db.session.commit()
        settle(app, c, days=2)
    reminders = [m for m in email.sent if m.attempt == 1]
    assert len(reminders) == 3, "the first email of both, the second only for invoice 43"
    second = email.sent[-1]
    assert second.notification_id == email.sent[1].notification_id


def test_dunning_sends_the_second_email_when_unpaid(
    journey_app: t.Any, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    app, email, _ = journey_app
    overdue = chimeway.notifier("invoice.overdue", channels=["email"], workflow=DUNNING)(
        type("Overdue", (Text,), {})
    )
    with app.app_context(), clock(app) as c:
        overdue.trigger("acme", {"invoice_id": 42})
        db.session.commit()
        settle(app, c, days=2)
        assert len(email.sent) == 1
        settle(app, c, days=1)
    assert len(email.sent) == 2


# -- recipe 3: on-call escalation ------------------------------------------------------
ON_CALL = Workflow(
    deliver("pager"),
    wait(minutes=5, stop_on=[signal("page.acknowledged", match={"incident_id": "incident_id"})]),
    escalate("pager", to=param("secondary_id")),
)


def page_notifier(chimeway: Chimeway) -> t.Any:
    return chimeway.notifier("incident.page", channels=["pager"], workflow=ON_CALL)(
        type("Page", (Text,), {})
    )


def test_on_call_acknowledged_in_time_does_not_escalate(
    journey_app: t.Any, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    app, _, pager = journey_app
    page = page_notifier(chimeway)
    with app.app_context(), clock(app) as c:
        page.trigger("primary", {"incident_id": 7, "secondary_id": "secondary"})
        db.session.commit()
        settle(app, c, minutes=3)
        chimeway.track("primary", "page.acknowledged", {"incident_id": 7})
        db.session.commit()
        settle(app, c, minutes=10)
    assert [m.recipient.id for m in pager.sent] == ["primary"]


def test_on_call_unacknowledged_escalates_after_five_minutes(
    journey_app: t.Any, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    app, _, pager = journey_app
    page = page_notifier(chimeway)
    with app.app_context(), clock(app) as c:
        page.trigger("primary", {"incident_id": 7, "secondary_id": "secondary"})
        db.session.commit()
        settle(app, c, minutes=4)
        chimeway.track("primary", "page.acknowledged", {"incident_id": 8})  # another incident
        db.session.commit()
        assert [m.recipient.id for m in pager.sent] == ["primary"]
        settle(app, c, minutes=1)
    assert [m.recipient.id for m in pager.sent] == ["primary", "secondary"]


def test_on_call_failed_page_escalates_at_once(
    journey_app: t.Any, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    app, _, pager = journey_app
    pager.unreachable.add("primary")
    page = page_notifier(chimeway)
    with app.app_context(), clock(app):
        page.trigger("primary", {"incident_id": 7, "secondary_id": "secondary"})
        db.session.commit()
        settle(app)
        settle(app)  # rq: the escalation's job was enqueued by the first drain's jobs
    assert [m.recipient.id for m in pager.sent] == ["secondary"]
