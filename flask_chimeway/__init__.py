"""Flask-Chimeway: durable, explainable notifications for Flask."""

from __future__ import annotations

from .channels import Channel, InAppChannel, LogChannel, MemoryChannel, Message, SendResult
from .errors import (
    ChimewayError,
    ConfigurationError,
    ContentError,
    DeliveryError,
    DuplicateNotifierError,
    IllegalTransitionError,
    InvalidContentError,
    InvalidIdempotencyKeyError,
    InvalidParamsError,
    InvalidRecipientError,
    InvalidSignalError,
    InvalidTenantError,
    PermanentDeliveryError,
    RecipientNotFoundError,
    RegistrationError,
    TemplateNotFoundError,
    TraceNotFoundError,
    TransientDeliveryError,
    TriggerError,
    UnknownChannelError,
    UnknownNotifierError,
    WorkflowDefinitionError,
)
from .explain import Trace, trace
from .extension import Chimeway
from .lifecycle import AttemptOutcome, DeliveryStatus
from .notifier import Notifier
from .recipients import Recipient
from .trigger import TriggerResult

__version__ = "0.1.0.dev0"

__all__ = [
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
