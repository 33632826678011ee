"""Who a notification is for: the :class:`Recipient` value and identity normalisation."""

from __future__ import annotations

import dataclasses
import typing as t

from .errors import InvalidParamsError, InvalidRecipientError

MAX_IDENTITY_LENGTH = 255


@dataclasses.dataclass(frozen=True)
class Recipient:
    """A person or system a notification is sent to.

    :param id: the stable identity stored on the notification (a user id as a string).
    :param email: the address the ``email`` channel uses.
    :param phone: the number an SMS or voice channel uses.
    :param webhook_url: the URL the ``webhook`` channel posts to.
    :param addresses: addresses for other channels, by channel name.
    :param timezone: an IANA time zone name, used for quiet hours and digests.
    :param locale: a locale such as ``"en"`` or ``"pt_BR"``, available to templates.
    :param name: a display name, available to templates.
    :param data: anything else the host wants ``build`` and templates to see.
    """

    id: str
    email: str | None = None
    phone: str | None = None
    webhook_url: str | None = None
    addresses: t.Mapping[str, str] = dataclasses.field(default_factory=dict)
    timezone: str = "UTC"
    locale: str | None = None
    name: str | None = None
    data: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", normalize_identity(self.id))

    def address_for(self, channel: str) -> str | None:
        """The address of this recipient on ``channel``, or ``None``."""
        if channel in self.addresses:
            return self.addresses[channel]
        return {"email": self.email, "sms": self.phone, "webhook": self.webhook_url}.get(channel)


#: What ``trigger`` accepts for one recipient.
RecipientLike: t.TypeAlias = "int | str | Recipient"
RecipientLoader: t.TypeAlias = t.Callable[[str], "Recipient | None"]


def normalize_identity(value: object) -> str:
    """Turn a user id, string identity or :class:`Recipient` into the stored identity.

    :raise InvalidRecipientError: for blanks, booleans, over-long strings and other types.
    """
    if isinstance(value, Recipient):
        return value.id
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRecipientError(
            f"A recipient must be an int id, a string identity or a Recipient, not"
            f" {type(value).__name__} {value!r}; pass user.id rather than the user object."
        )
    identity = str(value).strip()
    if not identity:
        raise InvalidRecipientError("A recipient identity is blank; pass a user id or a Recipient.")
    if len(identity) > MAX_IDENTITY_LENGTH:
        raise InvalidRecipientError(
            f"A recipient identity is {len(identity)} characters long; the limit is"
            f" {MAX_IDENTITY_LENGTH}."
        )
    return identity


def normalize_recipients(recipients: object) -> list[RecipientLike]:
    """Turn the ``recipients`` argument of ``trigger`` into a list, distinct by identity.

    The first occurrence of each identity wins; order is kept.

    :raise InvalidRecipientError: when there is no recipient or one is not valid.
    """
    if isinstance(recipients, int | str | Recipient):
        items: list[object] = [recipients]
    elif isinstance(recipients, t.Iterable) and not isinstance(recipients, t.Mapping | bytes):
        items = list(recipients)
    else:
        items = [recipients]
    if not items:
        raise InvalidRecipientError(
            "trigger() was given no recipients; pass one recipient or a non-empty list."
        )
    seen: dict[str, RecipientLike] = {}
    for item in items:
        identity = normalize_identity(item)
        if identity not in seen:
            seen[identity] = t.cast(RecipientLike, item)
    return list(seen.values())


def recipient_snapshot(recipient: Recipient) -> dict[str, t.Any]:
    """``recipient`` as JSON, to keep with the notification.

    :raise InvalidRecipientError: when its ``data`` or ``addresses`` hold values JSON
        cannot store.
    """
    from .params import validate_params

    values = {f.name: getattr(recipient, f.name) for f in dataclasses.fields(recipient)}
    values["addresses"] = dict(recipient.addresses)
    values["data"] = dict(recipient.data)
    try:
        return validate_params(values)
    except InvalidParamsError as exc:
        raise InvalidRecipientError(
            f"Recipient {recipient.id!r} cannot be stored: {exc}".replace("params", "recipient")
        ) from exc
