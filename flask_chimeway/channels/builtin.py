"""The channels every app has: ``in_app``, ``log`` and ``memory``."""

from __future__ import annotations

import logging
import threading

from .base import Channel, Message, SendResult

logger = logging.getLogger(__name__)


class InAppChannel(Channel):
    """The inbox. The notification row *is* the in-app message, so sending only marks it
    delivered; an inbox reads the notifications that have an ``in_app`` delivery."""

    name = "in_app"

    def send(self, message: Message) -> SendResult:
        return SendResult(provider_message_id=f"ntf_{message.notification_id}")


class LogChannel(Channel):
    """Writes one line per message to the ``flask_chimeway.channels.builtin`` logger.

    The line carries ids only at INFO; the content is logged at DEBUG.
    """

    name = "log"

    def send(self, message: Message) -> SendResult:
        logger.info(
            "chimeway log channel: delivery %s (%s) to recipient %s",
            message.delivery_id,
            message.notifier_key,
            message.recipient.id,
        )
        logger.debug(
            "chimeway log channel: delivery %s content %r",
            message.delivery_id,
            dict(message.content),
        )
        return SendResult()


class MemoryChannel(Channel):
    """Keeps every message in :attr:`messages`. Each app gets its own instance."""

    name = "memory"

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    def send(self, message: Message) -> SendResult:
        with self._lock:
            self.messages.append(message)
        return SendResult()

    def clear(self) -> None:
        """Forget every kept message."""
        with self._lock:
            self.messages.clear()
