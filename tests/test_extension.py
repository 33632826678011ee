"""The extension object: init_app, settings, several apps, the public API."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

import flask_chimeway
from flask_chimeway import Chimeway, ConfigurationError, Notifier
from flask_chimeway.settings import DEFAULTS


def bare_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", **config)
    return app


def test_init_app_stores_state_and_sets_defaults(chimeway: Chimeway) -> None:
    app = bare_app()
    chimeway.init_app(app)
    state = app.extensions["chimeway"]
    assert state.chimeway is chimeway
    assert state.settings.dispatcher == "sync"
    assert state.settings.max_attempts == 5
    for key, value in DEFAULTS.items():
        assert app.config[key] == value
    assert "chimeway" in app.cli.commands


def test_chimeway_app_argument_calls_init_app() -> None:
    app = bare_app(CHIMEWAY_MAX_ATTEMPTS=2)
    chimeway = Chimeway(app, db=SQLAlchemy())
    assert app.extensions["chimeway"].settings.max_attempts == 2
    assert not hasattr(chimeway, "app")


def test_init_app_twice_is_refused(chimeway: Chimeway) -> None:
    app = bare_app()
    chimeway.init_app(app)
    with pytest.raises(RuntimeError, match=r"already been registered"):
        chimeway.init_app(app)


def test_db_must_be_flask_sqlalchemy() -> None:
    with pytest.raises(TypeError, match=r"flask_sqlalchemy.SQLAlchemy"):
        Chimeway(db=object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("CHIMEWAY_DISPATCHER", "celery", "CHIMEWAY_DISPATCHER is 'celery'; it must be one of"),
        ("CHIMEWAY_REDIS_URL", "localhost:6379", "CHIMEWAY_REDIS_URL .* redis://"),
        ("CHIMEWAY_MAX_ATTEMPTS", 0, "CHIMEWAY_MAX_ATTEMPTS is 0; it must be a whole number"),
        ("CHIMEWAY_MAX_ATTEMPTS", "3", "CHIMEWAY_MAX_ATTEMPTS is '3'"),
        ("CHIMEWAY_MAX_ATTEMPTS", True, "CHIMEWAY_MAX_ATTEMPTS is True"),
        ("CHIMEWAY_BACKOFF_BASE", -1, "CHIMEWAY_BACKOFF_BASE is -1; it must be a number"),
        ("CHIMEWAY_BACKOFF_MAX", 10, "CHIMEWAY_BACKOFF_MAX .* smaller than CHIMEWAY_BACKOFF_BASE"),
        ("CHIMEWAY_LEASE_SECONDS", 1.5, "CHIMEWAY_LEASE_SECONDS is 1.5"),
        ("CHIMEWAY_REDACT_KEYS", "pin", "CHIMEWAY_REDACT_KEYS must be a list"),
        ("CHIMEWAY_REDACT_KEYS", 5, "CHIMEWAY_REDACT_KEYS must be a list"),
        ("CHIMEWAY_REDIS_TIMEOUT", 0, "CHIMEWAY_REDIS_TIMEOUT is 0"),
        ("CHIMEWAY_REQUEUE_AFTER", -5, "CHIMEWAY_REQUEUE_AFTER is -5"),
        ("CHIMEWAY_REDACT_KEYS", ["pin", " "], "CHIMEWAY_REDACT_KEYS must be a list"),
        ("CHIMEWAY_TEMPLATE_FOLDER", "/", "CHIMEWAY_TEMPLATE_FOLDER is '/'"),
    ],
)
def test_invalid_settings_name_the_key_and_the_allowed_values(
    chimeway: Chimeway, key: str, value: object, match: str
) -> None:
    app = bare_app(**{key: value})
    with pytest.raises(ConfigurationError, match=match):
        chimeway.init_app(app)
    assert "chimeway" not in app.extensions


def test_every_setting_is_documented() -> None:
    import pathlib

    docs = pathlib.Path(__file__).parent.parent / "docs" / "configuration.rst"
    text = docs.read_text()
    missing = [key for key in DEFAULTS if key not in text]
    assert not missing, f"undocumented settings: {missing}"


def test_several_apps_in_one_process_keep_their_own_state(
    make_app: t.Any, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    @chimeway.notifier("hello", channels=["memory"])
    class Hello(Notifier):
        def build(self, params, recipient, channel):
            return {"text": "hello"}

    first = make_app(CHIMEWAY_MAX_ATTEMPTS=2)
    second = make_app(CHIMEWAY_MAX_ATTEMPTS=7)
    with first.app_context():
        Hello.trigger(1)
        db.session.commit()
    with second.app_context():
        Hello.trigger([1, 2])
        db.session.commit()

    one, two = first.extensions["chimeway"], second.extensions["chimeway"]
    assert (one.settings.max_attempts, two.settings.max_attempts) == (2, 7)
    assert len(one.memory.messages) == 1
    assert len(two.memory.messages) == 2


def test_public_api_is_pinned() -> None:
    assert sorted(flask_chimeway.__all__) == [
        "AttemptOutcome",
        "Channel",
        "Chimeway",
        "ChimewayError",
        "ConfigurationError",
        "ContentError",
        "DeliveryError",
        "DeliveryStatus",
        "DuplicateNotifierError",
        "IllegalTransitionError",
        "InAppChannel",
        "InvalidContentError",
        "InvalidIdempotencyKeyError",
        "InvalidParamsError",
        "InvalidRecipientError",
        "InvalidSignalError",
        "InvalidTenantError",
        "LogChannel",
        "MemoryChannel",
        "Message",
        "Notifier",
        "PermanentDeliveryError",
        "Recipient",
        "RecipientNotFoundError",
        "RegistrationError",
        "SendResult",
        "TemplateNotFoundError",
        "Trace",
        "TraceNotFoundError",
        "TransientDeliveryError",
        "TriggerError",
        "TriggerResult",
        "UnknownChannelError",
        "UnknownNotifierError",
        "WorkflowDefinitionError",
        "trace",
    ]
    for name in flask_chimeway.__all__:
        assert hasattr(flask_chimeway, name)
    from flask_chimeway import errors, models, testing

    assert models.__all__ == [
        "Delivery",
        "DeliveryAttempt",
        "DeliveryTransition",
        "Event",
        "Notification",
        "Signal",
        "WorkflowDefinition",
        "WorkflowRun",
        "WorkflowTransition",
    ]
    assert testing.__all__ == ["Clock", "Outbox", "SentMessage", "capture", "clock", "drain"]
    from flask_chimeway import workflows

    assert workflows.__all__ == [
        "NOTIFICATION",
        "Deliver",
        "Param",
        "Signal",
        "Wait",
        "Workflow",
        "deliver",
        "escalate",
        "param",
        "read",
        "seen",
        "signal",
        "wait",
    ]
    for name in vars(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert name in flask_chimeway.__all__, f"{name} is not exported"
