"""The exception hierarchy: one root, one subclass per thing a caller can fix."""

from __future__ import annotations


class ChimewayError(Exception):
    """Root of every error Flask-Chimeway raises on purpose."""


class ConfigurationError(ChimewayError):
    """A ``CHIMEWAY_*`` setting has a value that cannot work."""


class RegistrationError(ChimewayError):
    """A notifier or channel was registered in a way that cannot work."""


class DuplicateNotifierError(RegistrationError):
    """Two notifiers were registered under one key."""


class UnknownChannelError(RegistrationError):
    """A notifier names a channel that is not registered."""


class UnknownNotifierError(ChimewayError):
    """``trigger`` was called with a key no notifier is registered under."""


class TriggerError(ChimewayError):
    """The arguments given to ``trigger`` cannot make a notification."""


class InvalidRecipientError(TriggerError):
    """No recipients, a blank recipient, or a value that is not a recipient."""


class RecipientNotFoundError(TriggerError):
    """The recipient loader returned ``None`` for an identity."""


class InvalidIdempotencyKeyError(TriggerError):
    """The idempotency key is blank, too long or not a string."""


class InvalidTenantError(TriggerError):
    """The tenant is blank, too long or not a string."""


class InvalidParamsError(TriggerError):
    """The params are not a JSON-serialisable mapping with string keys."""


class ContentError(TriggerError):
    """The content of a notification could not be built."""


class InvalidContentError(ContentError):
    """``Notifier.build`` returned something that is not a mapping JSON can store."""


class TemplateNotFoundError(ContentError):
    """No template exists for a notifier and channel that has no ``build``."""


class IllegalTransitionError(ChimewayError):
    """A delivery was asked to move between two statuses the lifecycle does not connect."""


class TraceNotFoundError(ChimewayError):
    """``trace`` was given an id that names no event, notification or delivery."""


class DeliveryError(ChimewayError):
    """Raised by a channel's ``send`` when the provider did not accept the message.

    The class carries the retry decision in :attr:`retryable`: ``True`` (retry) for this
    class and :class:`TransientDeliveryError`, ``False`` for
    :class:`PermanentDeliveryError`. A subclass may set it either way.
    """

    retryable: bool = True


class TransientDeliveryError(DeliveryError):
    """The send may succeed later (timeout, rate limit, 5xx): the delivery is retried."""

    retryable = True


class PermanentDeliveryError(DeliveryError):
    """The send will never succeed (bad address, rejected content): the delivery is cancelled."""

    retryable = False


class WorkflowDefinitionError(RegistrationError):
    """A workflow declaration cannot work, or changed under an existing notifier version."""


class InvalidSignalError(ChimewayError):
    """``track`` was given a signal name or data that cannot be stored."""
