"""Notifiers: the classes that say who gets what, on which channels."""

from __future__ import annotations

import typing as t

import jinja2
from flask import current_app

from .errors import InvalidContentError, TemplateNotFoundError
from .params import validate_params
from .recipients import Recipient

if t.TYPE_CHECKING:
    import sqlalchemy.orm as sa_orm

    from .extension import Chimeway
    from .trigger import TriggerResult
    from .workflows.dsl import Workflow


class Notifier:
    """Base class of notifiers. Register subclasses with :meth:`Chimeway.notifier`.

    Override :meth:`build` to produce content in Python, or leave it alone and write
    templates ``chimeway/<key>/<channel>.txt`` and/or ``.html``.
    """

    #: The stable key the notifier is registered under, such as ``"task.assigned"``.
    key: t.ClassVar[str]
    #: The channels every recipient gets a delivery on, in order.
    channels: t.ClassVar[tuple[str, ...]]
    #: Bumped when what the notifier does changes; stored on every event.
    version: t.ClassVar[int] = 1
    #: The extension the notifier is registered with.
    chimeway: t.ClassVar[Chimeway]
    #: The workflow the channels are delivered through, step by step; ``None`` delivers
    #: every channel at once.
    workflow: t.ClassVar[Workflow | None] = None

    def build(
        self, params: t.Mapping[str, t.Any], recipient: Recipient, channel: str
    ) -> t.Mapping[str, t.Any]:
        """The content of the message for one recipient on one channel.

        Called at trigger time with the caller's params (before redaction). Return a
        mapping of JSON values, conventionally ``subject``/``title``, ``text``, ``html``.
        The default renders the notifier's templates; see :meth:`render_templates`.
        """
        return self.render_templates(params, recipient, channel)

    def render_templates(
        self, params: t.Mapping[str, t.Any], recipient: Recipient, channel: str
    ) -> dict[str, t.Any]:
        """Render ``<folder>/<key>/<channel>.txt`` and ``.html`` through the app's loader.

        ``.html`` templates are autoescaped. Each template sees ``params``, ``recipient``,
        ``channel`` and ``notifier``, plus the app's context processors. A template may set
        a top-level ``subject`` (``{% set subject = "Hi " ~ recipient.name %}``), which
        becomes the ``subject`` of the content.

        :raise TemplateNotFoundError: when neither template exists.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        folder = app.extensions["chimeway"].settings.template_folder
        context: dict[str, t.Any] = {
            "params": params,
            "recipient": recipient,
            "channel": channel,
            "notifier": self,
        }
        app.update_template_context(context)
        content: dict[str, t.Any] = {}
        names = [f"{folder}/{self.key}/{channel}.{ext}" for ext in ("txt", "html")]
        for name, field in zip(names, ("text", "html"), strict=True):
            try:
                template = app.jinja_env.get_template(name)
            except jinja2.TemplateNotFound:
                continue
            module = template.make_module(context)
            content[field] = str(module)
            subject = getattr(module, "subject", None)
            if subject is not None:
                content.setdefault("subject", str(subject).strip())
        if not content:
            raise TemplateNotFoundError(
                f"Notifier {self.key!r} has no build() and no template for channel"
                f" {channel!r}; create {names[0]} or {names[1]} in a template folder of the"
                " app, or override build()."
            )
        return content

    @classmethod
    def trigger(
        cls,
        recipients: t.Any,
        params: t.Mapping[str, t.Any] | None = None,
        *,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        session: sa_orm.Session | None = None,
        correlation_id: str | None = None,
    ) -> TriggerResult:
        """Trigger this notifier; the same as ``chimeway.trigger(cls.key, ...)``."""
        chimeway: Chimeway | None = getattr(cls, "chimeway", None)
        if chimeway is None:
            raise RuntimeError(
                f"{cls.__name__} is not registered; decorate it with"
                " @chimeway.notifier(key, channels=[...]) before triggering it."
            )
        return chimeway.trigger(
            cls.key,
            recipients,
            params,
            idempotency_key=idempotency_key,
            tenant=tenant,
            session=session,
            correlation_id=correlation_id,
        )


def check_content(key: str, channel: str, content: object) -> dict[str, t.Any]:
    """Check what ``build`` returned: a mapping that JSON can store.

    :raise InvalidContentError: naming the notifier, the channel and what came back.
    """
    if not isinstance(content, t.Mapping):
        raise InvalidContentError(
            f"{key}.build() returned {type(content).__name__} for channel {channel!r}; it must"
            " return a mapping such as {'subject': ..., 'text': ...}."
        )
    try:
        return validate_params(content)
    except Exception as exc:
        raise InvalidContentError(
            f"{key}.build() for channel {channel!r} returned content JSON cannot store: {exc}"
        ) from exc
