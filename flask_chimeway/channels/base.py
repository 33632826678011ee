"""The channel interface: ``send(message) -> SendResult``, raising delivery errors."""

from __future__ import annotations

import dataclasses
import typing as t

from ..recipients import Recipient


@dataclasses.dataclass(frozen=True)
class Message:
    """Everything a channel needs to send one delivery attempt.

    :param idempotency_key: the same for every attempt of one delivery
        (``"chimeway-delivery-<id>"``); pass it to providers that deduplicate, so a retry
        of a request the provider already accepted is dropped there.
    :param attempt: the attempt number, from 1.
    """

    delivery_id: int
    notification_id: int
    event_id: int
    attempt: int
    idempotency_key: str
    channel: str
    notifier_key: str
    tenant: str | None
    recipient: Recipient
    content: t.Mapping[str, t.Any]

    @property
    def address(self) -> str | None:
        """The recipient's address on this message's channel, if it has one."""
        return self.recipient.address_for(self.channel)


@dataclasses.dataclass(frozen=True)
class SendResult:
    """What a channel reports back after the provider accepted a message.

    :param provider_message_id: the provider's id for the message, stored on the attempt.
    """

    provider_message_id: str | None = None


class Channel:
    """Base class for channels. Subclass it and implement :meth:`send`.

    ``send`` returns a :class:`SendResult` (or ``None``) when the provider accepted the
    message and raises :class:`~flask_chimeway.TransientDeliveryError` (retry later) or
    :class:`~flask_chimeway.PermanentDeliveryError` (give up) when it did not. Any other
    exception counts as transient: it is recorded with its class and retried.

    Channels are shared between threads and apps; keep per-send state in locals.
    """

    #: Set from the registration name when the channel is registered.
    name: str = ""

    def send(self, message: Message) -> SendResult | None:
        """Send ``message``; see the class documentation for the contract."""
        raise NotImplementedError(f"{type(self).__name__} must implement send(message).")
