"""flask_chimeway.testing: what users assert about their own notifications."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Channel, Chimeway, Message, Notifier
from flask_chimeway.models import DeliveryAttempt
from flask_chimeway.testing import capture


class Exploding(Channel):
    def __init__(self) -> None:
        self.calls = 0

    def send(self, message: Message) -> None:
        self.calls += 1
        raise RuntimeError("real provider called")


@pytest.fixture
def email(chimeway: Chimeway) -> Exploding:
    channel = Exploding()
    chimeway.channel("email", channel)
    return channel


@pytest.fixture
def welcome(chimeway: Chimeway, email: Exploding) -> type[Notifier]:
    @chimeway.notifier("user.welcome", channels=["in_app", "email"])
    class Welcome(Notifier):
        def build(self, params, recipient, channel):
            return {"subject": f"Welcome {params['name']}", "text": "Glad you are here."}

    return Welcome


def test_capture_records_and_fakes_sends(
    app: Flask, db: SQLAlchemy, welcome: t.Any, email: Exploding
) -> None:
    with capture(app) as outbox:
        welcome.trigger([1, 2], {"name": "Ada"})
        db.session.commit()

    assert email.calls == 0
    outbox.assert_sent("user.welcome", recipient=1, channel="email", containing="Welcome Ada")
    outbox.assert_sent("user.welcome", count=4)
    outbox.assert_sent("user.welcome", channel="in_app", count=2)
    outbox.assert_not_sent("user.welcome", recipient=3)
    outbox.assert_not_sent("user.farewell")
    [sent] = outbox.sent("user.welcome", recipient="2", channel="email")
    assert sent.content["subject"] == "Welcome Ada"
    # a faked send is told apart from a real one in the attempt history
    attempts = db.session.scalars(sa.select(DeliveryAttempt)).all()
    assert {a.provider_message_id for a in attempts} == {"flask_chimeway.testing:fake"}


def test_failed_assertions_say_what_was_sent(app: Flask, db: SQLAlchemy, welcome: t.Any) -> None:
    with capture(app) as outbox:
        welcome.trigger(1, {"name": "Ada"})
        db.session.commit()
    with pytest.raises(AssertionError, match=r"Expected exactly 1 'user.welcome'.*found 2") as e:
        outbox.assert_sent("user.welcome", count=1)
    assert "user.welcome to 1 on email" in str(e.value)
    with pytest.raises(AssertionError, match=r"Expected no 'user.welcome' message to 1"):
        outbox.assert_not_sent("user.welcome", recipient=1)
    with pytest.raises(AssertionError, match=r"Expected nothing sent"):
        outbox.assert_nothing_sent()


def test_rolled_back_triggers_send_nothing(app: Flask, db: SQLAlchemy, welcome: t.Any) -> None:
    with capture(app) as outbox:
        welcome.trigger(1, {"name": "Ada"})
        db.session.rollback()
    outbox.assert_nothing_sent()


def test_passthrough_capture_calls_the_real_channel(
    app: Flask, db: SQLAlchemy, welcome: t.Any, email: Exploding
) -> None:
    with capture(app, fake=False) as outbox:
        welcome.trigger(1, {"name": "Ada"})
        db.session.commit()
    assert email.calls == 1
    outbox.assert_sent("user.welcome", channel="email")


def test_capture_stops_at_the_end_of_the_block(
    app: Flask, db: SQLAlchemy, welcome: t.Any, email: Exploding
) -> None:
    with capture(app) as outbox:
        pass
    welcome.trigger(1, {"name": "Ada"})
    db.session.commit()
    outbox.assert_nothing_sent()
    assert email.calls == 1
