"""An ``email`` channel that writes each message to a file outbox instead of an SMTP server."""

from __future__ import annotations

import os
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from pathlib import Path

from flask import current_app

from flask_chimeway import Channel, Message, PermanentDeliveryError, SendResult


class OutboxEmailChannel(Channel):
    """Writes every email as an ``.eml`` file in the folder named by ``TASKBOARD_OUTBOX``.

    It stands in for SMTP on a machine without a mail server: the files are what would have
    been sent, and any mail client opens them. A recipient without an email address is a
    :class:`~flask_chimeway.PermanentDeliveryError`, because no retry can fix it.
    """

    def send(self, message: Message) -> SendResult:
        address = message.address
        if not address:
            raise PermanentDeliveryError(f"recipient {message.recipient.id} has no email address")
        config = current_app.config
        email = EmailMessage()
        email["From"] = config["TASKBOARD_MAIL_FROM"]
        email["To"] = formataddr((message.recipient.name or "", address))
        email["Date"] = formatdate(usegmt=True)
        email["Subject"] = str(message.content.get("subject", message.notifier_key))
        # Derived from the idempotency key, so a retried attempt is recognisably the same mail.
        email["Message-ID"] = f"<{message.idempotency_key}@taskboard.invalid>"
        email["X-Chimeway-Delivery"] = f"dlv_{message.delivery_id}"
        email.set_content(str(message.content.get("text", "")))
        html = message.content.get("html")
        if html:
            email.add_alternative(str(html), subtype="html")

        outbox = Path(config["TASKBOARD_OUTBOX"])
        outbox.mkdir(parents=True, exist_ok=True)
        path = outbox / f"{message.idempotency_key}.eml"
        partial = path.with_suffix(".partial")
        partial.write_bytes(email.as_bytes())
        # A reader of the outbox never sees half a message.
        os.replace(partial, path)
        return SendResult(provider_message_id=path.name)
