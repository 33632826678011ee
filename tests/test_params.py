"""Params: stored as JSON (JSONB on PostgreSQL), secrets redacted at any depth."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Chimeway, Notifier
from flask_chimeway.models import Event
from flask_chimeway.params import REDACTED, Redactor


@pytest.fixture
def note(chimeway: Chimeway) -> type[Notifier]:
    @chimeway.notifier("note", channels=["in_app"])
    class Note(Notifier):
        def build(self, params, recipient, channel):
            return {"text": "note"}

    return Note


def stored_params(db: SQLAlchemy) -> t.Any:
    with db.engine.connect() as conn:
        return conn.scalar(sa.select(Event.params))


def test_secret_looking_keys_are_redacted_recursively(
    app: Flask, db: SQLAlchemy, note: t.Any
) -> None:
    params = {
        "name": "Ada",
        "Password": "hunter2",
        "user": {"api-key": "k", "profile": {"refresh_token": "r", "city": "Lisbon"}},
        "hooks": [{"client_secret": "s", "url": "https://example.com"}, "plain"],
        "token_count": 3,
        "count": 3,
    }
    note.trigger(1, params)
    db.session.commit()

    assert stored_params(db) == {
        "name": "Ada",
        "Password": REDACTED,
        "user": {"api-key": REDACTED, "profile": {"refresh_token": REDACTED, "city": "Lisbon"}},
        "hooks": [{"client_secret": REDACTED, "url": "https://example.com"}, "plain"],
        "token_count": REDACTED,
        "count": 3,
    }
    assert params["Password"] == "hunter2", "the caller's params are not modified"


def test_extra_redact_keys_from_settings(make_app: t.Any, db: SQLAlchemy, note: t.Any) -> None:
    app = make_app(CHIMEWAY_REDACT_KEYS=["iban", "Date-Of-Birth"])
    with app.app_context():
        note.trigger(1, {"iban": "PT50", "date_of_birth": "1990", "city": "Porto"})
        db.session.commit()
        assert stored_params(db) == {"iban": REDACTED, "date_of_birth": REDACTED, "city": "Porto"}


def test_json_values_round_trip(app: Flask, db: SQLAlchemy, note: t.Any) -> None:
    params = {
        "n": 1,
        "f": 1.5,
        "b": True,
        "none": None,
        "list": [1, "two", {"x": [3]}],
        "unicode": "café ✓",
    }
    note.trigger(1, params)
    db.session.commit()
    assert stored_params(db) == params


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_params_are_jsonb_on_postgresql(app: Flask, db: SQLAlchemy, note: t.Any) -> None:
    columns = {c["name"]: c["type"] for c in sa.inspect(db.engine).get_columns("chimeway_events")}
    assert type(columns["params"]).__name__ == "JSONB"
    note.trigger(1, {"invoice": {"id": 42}})
    db.session.commit()
    with db.engine.connect() as conn:
        found = conn.scalar(
            sa.text("SELECT count(*) FROM chimeway_events WHERE params @> :doc"),
            {"doc": '{"invoice": {"id": 42}}'},
        )
    assert found == 1


def test_redactor_matches_fragments_regardless_of_case_and_dashes() -> None:
    redactor = Redactor(["pin"])
    assert redactor.is_secret("X-API-KEY")
    assert redactor.is_secret("stripeSecretKey")
    assert redactor.is_secret("card_pin")
    assert not redactor.is_secret("username")
    assert not redactor.is_secret("footprint")
