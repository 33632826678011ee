"""Recipients: identities, the loader, Recipient values."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_chimeway import Chimeway, InvalidRecipientError, Notifier, Recipient


def test_the_loader_resolves_identities_for_build(
    app: Flask, db: SQLAlchemy, chimeway: Chimeway
) -> None:
    users = {"1": ("Ada", "ada@example.com", "Europe/Lisbon", "pt_PT")}

    @chimeway.recipient_loader
    def load(identity: str) -> Recipient | None:
        if identity not in users:
            return None
        name, email, tz, locale = users[identity]
        return Recipient(id=identity, name=name, email=email, timezone=tz, locale=locale)

    assert chimeway._recipient_loader is load

    @chimeway.notifier("hello", channels=["memory"])
    class Hello(Notifier):
        def build(self, params, recipient, channel):
            return {"text": f"{recipient.name} {recipient.timezone} {recipient.locale}"}

    result = Hello.trigger(1)
    assert result.deliveries[0].content == {"text": "Ada Europe/Lisbon pt_PT"}
    db.session.commit()
    [message] = chimeway.get_state().memory.messages
    assert message.recipient.email == "ada@example.com"


def test_recipient_addresses_per_channel() -> None:
    r = Recipient(
        id=5,
        email="a@example.com",
        phone="+351",
        webhook_url="https://h",
        addresses={"slack": "U1"},
    )
    assert r.id == "5"
    assert r.address_for("email") == "a@example.com"
    assert r.address_for("sms") == "+351"
    assert r.address_for("webhook") == "https://h"
    assert r.address_for("slack") == "U1"
    assert r.address_for("in_app") is None


@pytest.mark.parametrize("identity", ["", " ", True, None, 1.5, "x" * 256])
def test_recipient_ids_must_be_usable(identity: t.Any) -> None:
    with pytest.raises(InvalidRecipientError):
        Recipient(id=identity)
