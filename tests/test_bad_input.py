"""Bad input: a specific ChimewayError saying what to fix, and no Chimeway rows left."""

from __future__ import annotations

import datetime as dt
import typing as t

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import (
    Chimeway,
    ChimewayError,
    DuplicateNotifierError,
    InvalidContentError,
    InvalidIdempotencyKeyError,
    InvalidParamsError,
    InvalidRecipientError,
    InvalidTenantError,
    Notifier,
    RecipientNotFoundError,
    RegistrationError,
    TemplateNotFoundError,
    UnknownChannelError,
    UnknownNotifierError,
)

from .helpers import no_rows


@pytest.fixture
def ping(chimeway: Chimeway) -> type[Notifier]:
    @chimeway.notifier("ping", channels=["in_app", "memory"])
    class Ping(Notifier):
        def build(self, params, recipient, channel):
            return {"text": "ping"}

    return Ping


def attempt_then_commit(db: SQLAlchemy, call: t.Callable[[], object]) -> ChimewayError:
    """Run a failing call, then commit: the error must have added nothing to the session
    and left it usable."""
    with pytest.raises(ChimewayError) as info:
        call()
    db.session.commit()
    assert no_rows(db)
    return info.value


def test_unknown_notifier_key(app: Flask, db: SQLAlchemy, chimeway: Chimeway, ping: t.Any) -> None:
    error = attempt_then_commit(db, lambda: chimeway.trigger("pong", 1))
    assert isinstance(error, UnknownNotifierError)
    assert "'pong'" in str(error)
    assert "ping" in str(error)


def test_two_notifiers_under_one_key(chimeway: Chimeway, ping: t.Any) -> None:
    with pytest.raises(DuplicateNotifierError, match=r"'ping' is already registered"):

        @chimeway.notifier("ping", channels=["in_app"])
        class Other(Notifier):
            pass

    assert chimeway.notifiers["ping"] is ping


def test_notifier_naming_an_unconfigured_channel_after_init_app(
    app: Flask, chimeway: Chimeway
) -> None:
    with pytest.raises(UnknownChannelError, match=r"'sms'.*chimeway.channel"):

        @chimeway.notifier("text.me", channels=["in_app", "sms"])
        class TextMe(Notifier):
            pass

    assert "text.me" not in chimeway.notifiers


def test_notifier_naming_an_unconfigured_channel_fails_init_app(
    db: SQLAlchemy, chimeway: Chimeway
) -> None:
    @chimeway.notifier("text.me", channels=["sms"])
    class TextMe(Notifier):
        pass

    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    with pytest.raises(UnknownChannelError, match=r"'sms'"):
        chimeway.init_app(app)
    assert "chimeway" not in app.extensions


@pytest.mark.parametrize(
    ("channels", "match"),
    [([], "non-empty list"), ("in_app", "non-empty list"), (["in_app", "in_app"], "distinct")],
)
def test_notifier_channels_must_be_a_list_of_distinct_names(
    chimeway: Chimeway, channels: t.Any, match: str
) -> None:
    with pytest.raises(RegistrationError, match=match):
        chimeway.notifier("x", channels=channels)


def test_no_recipients(app: Flask, db: SQLAlchemy, ping: t.Any) -> None:
    error = attempt_then_commit(db, lambda: ping.trigger([]))
    assert isinstance(error, InvalidRecipientError)
    assert "no recipients" in str(error)


def test_blank_recipient(app: Flask, db: SQLAlchemy, ping: t.Any) -> None:
    error = attempt_then_commit(db, lambda: ping.trigger([1, "  "]))
    assert isinstance(error, InvalidRecipientError)
    assert "blank" in str(error)


def test_recipient_of_the_wrong_type(app: Flask, db: SQLAlchemy, ping: t.Any) -> None:
    error = attempt_then_commit(db, lambda: ping.trigger([1, object()]))
    assert isinstance(error, InvalidRecipientError)
    assert "user.id" in str(error)


def test_recipient_unknown_to_the_loader(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway, ping: t.Any
) -> None:
    chimeway.recipient_loader(lambda identity: None)
    error = attempt_then_commit(db, lambda: ping.trigger(5))
    assert isinstance(error, RecipientNotFoundError)
    assert "'5'" in str(error)


@pytest.mark.parametrize("key", ["", "   ", 42, b"bytes"])
def test_blank_or_non_string_idempotency_key(
    app: Flask, db: SQLAlchemy, ping: t.Any, key: object
) -> None:
    error = attempt_then_commit(db, lambda: ping.trigger(1, idempotency_key=key))
    assert isinstance(error, InvalidIdempotencyKeyError)
    assert "idempotency_key must be a non-blank string" in str(error)


def test_too_long_idempotency_key(app: Flask, db: SQLAlchemy, ping: t.Any) -> None:
    error = attempt_then_commit(db, lambda: ping.trigger(1, idempotency_key="k" * 256))
    assert isinstance(error, InvalidIdempotencyKeyError)
    assert "limit is 255" in str(error)


def test_blank_tenant(app: Flask, db: SQLAlchemy, ping: t.Any) -> None:
    error = attempt_then_commit(db, lambda: ping.trigger(1, tenant=""))
    assert isinstance(error, InvalidTenantError)


def test_params_that_are_not_json_serialisable(app: Flask, db: SQLAlchemy, ping: t.Any) -> None:
    params = {"task": {"due": dt.date(2026, 12, 3)}}
    error = attempt_then_commit(db, lambda: ping.trigger(1, params))
    assert isinstance(error, InvalidParamsError)
    assert "params['task']['due'] is a date" in str(error)
    assert "ISO string" in str(error)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ([1, 2], "must be a mapping"),
        ({1: "x"}, "keys must be strings"),
        ({"x": float("nan")}, "NaN"),
    ],
)
def test_params_of_the_wrong_shape(
    app: Flask, db: SQLAlchemy, ping: t.Any, params: t.Any, match: str
) -> None:
    error = attempt_then_commit(db, lambda: ping.trigger(1, params))
    assert isinstance(error, InvalidParamsError)
    assert match in str(error)


def test_build_returning_something_that_is_not_a_mapping(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    @chimeway.notifier("bad.build", channels=["in_app"])
    class BadBuild(Notifier):
        def build(self, params, recipient, channel):
            return "just a string"

    error = attempt_then_commit(db, lambda: BadBuild.trigger(1))
    assert isinstance(error, InvalidContentError)
    assert "bad.build.build() returned str for channel 'in_app'" in str(error)


def test_build_returning_content_json_cannot_store(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    @chimeway.notifier("bad.content", channels=["in_app"])
    class BadContent(Notifier):
        def build(self, params, recipient, channel):
            return {"when": dt.datetime.now(dt.UTC)}

    error = attempt_then_commit(db, lambda: BadContent.trigger(1))
    assert isinstance(error, InvalidContentError)


def test_missing_template(app: Flask, db: SQLAlchemy, chimeway: Chimeway) -> None:
    @chimeway.notifier("no.template", channels=["in_app"])
    class NoTemplate(Notifier):
        pass

    error = attempt_then_commit(db, lambda: NoTemplate.trigger(1))
    assert isinstance(error, TemplateNotFoundError)
    assert "chimeway/no.template/in_app.txt" in str(error)
    assert "chimeway/no.template/in_app.html" in str(error)


def test_trigger_outside_an_app_context(make_app: t.Any, db: SQLAlchemy, ping: t.Any) -> None:
    app = make_app()
    with pytest.raises(RuntimeError, match=r"needs an application context.*app_context"):
        ping.trigger(1)
    with app.app_context():
        assert no_rows(db)


def test_trigger_in_an_app_without_chimeway(chimeway: Chimeway, ping: t.Any) -> None:
    with Flask("bare").app_context(), pytest.raises(RuntimeError, match=r"init_app\(app\)"):
        ping.trigger(1)


def test_unregistered_notifier_class(app: Flask) -> None:
    class Loose(Notifier):
        pass

    with pytest.raises(RuntimeError, match=r"not registered"):
        Loose.trigger(1)
