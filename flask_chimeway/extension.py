"""The :class:`Chimeway` extension object and its per-app state."""

from __future__ import annotations

import dataclasses
import typing as t

import sqlalchemy.orm as sa_orm
from flask import Flask, current_app, has_app_context
from flask_sqlalchemy import SQLAlchemy

from . import dispatch, models
from .channels import Channel, InAppChannel, LogChannel, MemoryChannel
from .errors import DuplicateNotifierError, RegistrationError, UnknownChannelError
from .notifier import Notifier
from .params import Redactor
from .recipients import Recipient, RecipientLoader
from .settings import DEFAULTS, Settings
from .workflows.dsl import Workflow

if t.TYPE_CHECKING:
    from .models import Signal
    from .testing import Outbox
    from .trigger import TriggerResult

N = t.TypeVar("N", bound=type[Notifier])
C = t.TypeVar("C", bound="Channel | type[Channel]")
L = t.TypeVar("L", bound=RecipientLoader)

BUILTIN_CHANNELS = ("in_app", "log", "memory")


@dataclasses.dataclass
class State:
    """What :meth:`Chimeway.init_app` stores in ``app.extensions["chimeway"]``."""

    chimeway: Chimeway
    settings: Settings
    #: This app's own instances of the built-in channels.
    builtin_channels: dict[str, Channel]
    redactor: Redactor
    #: Active :func:`flask_chimeway.testing.capture` outboxes.
    outboxes: list[Outbox] = dataclasses.field(default_factory=list)
    #: The Redis connection of the ``rq`` dispatcher, made on first use.
    redis: t.Any = None
    #: Set after "Redis is unreachable" was logged, cleared by the next success.
    redis_warned: bool = False
    #: ``(key, version)`` of workflows checked against the stored definitions.
    checked_workflows: set[tuple[str, int]] = dataclasses.field(default_factory=set)

    @property
    def channels(self) -> dict[str, Channel]:
        """Every channel this app can send on, by name."""
        return {**self.builtin_channels, **self.chimeway._channels}

    @property
    def memory(self) -> MemoryChannel:
        """This app's ``memory`` channel."""
        return t.cast(MemoryChannel, self.builtin_channels["memory"])


class Chimeway:
    """The Flask-Chimeway extension.

    :param app: an app to initialise now; or call :meth:`init_app` later.
    :param db: the host's Flask-SQLAlchemy extension; Chimeway's tables join its metadata
        and triggers use its session unless given another.
    """

    def __init__(self, app: Flask | None = None, *, db: SQLAlchemy) -> None:
        if not isinstance(db, SQLAlchemy):
            raise TypeError(
                f"Chimeway(db=...) takes the app's flask_sqlalchemy.SQLAlchemy instance, not"
                f" {type(db).__name__}."
            )
        self.db = db
        self._notifiers: dict[str, type[Notifier]] = {}
        self._channels: dict[str, Channel] = {}
        self._recipient_loader: RecipientLoader | None = None
        self._initialised = False
        models.attach(db.metadata)
        dispatch.listen()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set up Chimeway for ``app``: read and check its ``CHIMEWAY_*`` settings, create
        its channels, add the ``flask chimeway`` commands.

        :raise ConfigurationError: when a setting has a value that cannot work.
        :raise UnknownChannelError: when a registered notifier names an unknown channel.
        :raise RuntimeError: when ``app`` already has Chimeway.
        """
        if "chimeway" in app.extensions:
            raise RuntimeError(
                "A 'Chimeway' instance has already been registered on this Flask app. Import"
                " and use that instance instead."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        settings = Settings.from_config(app.config)
        for notifier in self._notifiers.values():
            self._check_channels(notifier.key, notifier.channels)
        app.extensions["chimeway"] = State(
            chimeway=self,
            settings=settings,
            builtin_channels={
                "in_app": InAppChannel(),
                "log": LogChannel(),
                "memory": MemoryChannel(),
            },
            redactor=Redactor(settings.redact_keys),
        )
        from .cli import chimeway_cli

        app.cli.add_command(chimeway_cli)
        self._initialised = True

    # registration ---------------------------------------------------------------------

    def notifier(
        self,
        key: str,
        *,
        channels: t.Sequence[str],
        version: int = 1,
        workflow: Workflow | None = None,
    ) -> t.Callable[[N], N]:
        """A class decorator that registers a :class:`Notifier` subclass under ``key``.

        :param key: a stable, unique name such as ``"task.assigned"``; stored on events.
        :param channels: the channels each recipient gets a delivery on.
        :param version: bump it when the notifier's behaviour changes; a workflow's steps
            may not change under a version that was already used.
        :param workflow: deliver the channels step by step instead of all at once; see
            :mod:`flask_chimeway.workflows`.
        :raise DuplicateNotifierError: when another notifier already has ``key``.
        :raise UnknownChannelError: when a channel is not registered (checked now if an app
            is initialised, otherwise at :meth:`init_app`).
        """
        if not isinstance(key, str) or not key.strip() or len(key) > 200:
            raise RegistrationError(
                f"A notifier key must be a non-blank string of at most 200 characters, not {key!r}."
            )
        if isinstance(channels, str) or not channels:
            raise RegistrationError(
                f"Notifier {key!r}: channels must be a non-empty list of channel names, such"
                f" as ['in_app', 'email'], not {channels!r}."
            )
        names = tuple(channels)
        if any(not isinstance(c, str) or not c for c in names) or len(set(names)) != len(names):
            raise RegistrationError(
                f"Notifier {key!r}: channels {list(names)!r} must be distinct non-blank names."
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RegistrationError(
                f"Notifier {key!r}: version must be a whole number of at least 1, not {version!r}."
            )
        if workflow is not None:
            if not isinstance(workflow, Workflow):
                raise RegistrationError(
                    f"Notifier {key!r}: workflow must be a Workflow(...), not {workflow!r}."
                )
            workflow.check(key, names)

        def decorator(cls: N) -> N:
            if not (isinstance(cls, type) and issubclass(cls, Notifier)):
                raise RegistrationError(
                    f"@chimeway.notifier({key!r}) decorates Notifier subclasses; {cls!r} is"
                    " not one."
                )
            existing = self._notifiers.get(key)
            if existing is not None:
                raise DuplicateNotifierError(
                    f"Notifier key {key!r} is already registered by"
                    f" {existing.__module__}.{existing.__qualname__}; give"
                    f" {cls.__module__}.{cls.__qualname__} another key."
                )
            if self._initialised:
                self._check_channels(key, names)
            cls.key = key
            cls.channels = names
            cls.version = version
            cls.workflow = workflow
            cls.chimeway = self
            self._notifiers[key] = cls
            return cls

        return decorator

    def channel(self, name: str, channel: Channel | type[Channel] | None = None) -> t.Any:
        """Register a custom channel under ``name``, for every app of this extension.

        Use it as a class decorator (``@chimeway.channel("sms")`` on a :class:`Channel`
        subclass, instantiated once with no arguments) or call it with an instance
        (``chimeway.channel("sms", TwilioChannel(...))``). Every app of this extension
        can use it at once; register it before the notifiers that name it.

        :raise RegistrationError: when the name is taken or the object is not a channel.
        """
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise RegistrationError(
                f"A channel name must be a non-blank string of at most 100 characters, not"
                f" {name!r}."
            )
        if name in BUILTIN_CHANNELS or name in self._channels:
            raise RegistrationError(
                f"A channel named {name!r} is already registered; choose another name."
            )

        def register(obj: C) -> C:
            instance = obj() if isinstance(obj, type) and issubclass(obj, Channel) else obj
            if not isinstance(instance, Channel):
                raise RegistrationError(
                    f"chimeway.channel({name!r}) takes a Channel subclass or instance, not {obj!r}."
                )
            instance.name = name
            self._channels[name] = instance
            return obj

        if channel is not None:
            return register(channel)
        return register

    def recipient_loader(self, loader: L) -> L:
        """Register the function that turns a recipient identity (a string) into a
        :class:`Recipient`, or returns ``None`` when it knows no such recipient.

        Without a loader, identities become ``Recipient(id=identity)``.
        """
        self._recipient_loader = loader
        return loader

    # lookups ---------------------------------------------------------------------------

    @property
    def notifiers(self) -> t.Mapping[str, type[Notifier]]:
        """The registered notifier classes, by key."""
        return dict(self._notifiers)

    def load_recipient(self, recipient: Recipient | int | str) -> Recipient | None:
        """Resolve ``recipient`` through the loader; ``None`` when the loader knows nobody."""
        if isinstance(recipient, Recipient):
            return recipient
        identity = str(recipient).strip()
        if self._recipient_loader is None:
            return Recipient(id=identity)
        return self._recipient_loader(identity)

    def get_state(self) -> State:
        """The per-app state of the current app.

        :raise RuntimeError: outside an app context, or for an app without this instance.
        """
        state = current_state()
        if state.chimeway is not self:
            raise RuntimeError(
                f"The current app {current_app.name!r} is set up with another Chimeway"
                " instance; trigger through that one."
            )
        return state

    def _check_channels(self, key: str, names: t.Sequence[str]) -> None:
        known = set(BUILTIN_CHANNELS) | set(self._channels)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UnknownChannelError(
                f"Notifier {key!r} uses channel(s) {', '.join(map(repr, unknown))}, which"
                f" are not registered. Known channels: {', '.join(sorted(known))}. Register"
                " custom channels with chimeway.channel(name) before the notifier."
            )

    # triggering ------------------------------------------------------------------------

    def trigger(
        self,
        key: str,
        recipients: t.Any,
        params: t.Mapping[str, t.Any] | None = None,
        *,
        idempotency_key: str | None = None,
        tenant: str | None = None,
        session: sa_orm.Session | None = None,
        correlation_id: str | None = None,
    ) -> TriggerResult:
        """Record a notification for ``recipients`` in the caller's transaction.

        Adds an event, one notification per distinct recipient and one delivery per
        channel to ``session`` (``db.session`` by default) and flushes. It does not commit:
        the deliveries are performed (``sync``) or enqueued (``rq``) after the caller
        commits, and never if it rolls back.

        :param key: the key of a registered notifier.
        :param recipients: one recipient or a list of them: ids, string identities or
            :class:`Recipient` objects.
        :param params: JSON-serialisable values for the content; secret-looking keys are
            redacted before they are stored.
        :param idempotency_key: when given, a second trigger with the same key in the same
            tenant creates nothing and returns the first result with ``duplicate=True``.
        :param tenant: scopes idempotency keys and inboxes; ``None`` is the default tenant.
        :param session: the session to add the rows to.
        :param correlation_id: free text stored on the event, such as a request id.
        :raise ChimewayError: a subclass naming what to fix; nothing is added then.
        :raise RuntimeError: outside an app context.
        """
        from .trigger import trigger

        return trigger(
            self,
            self.get_state(),
            key,
            recipients,
            params,
            idempotency_key=idempotency_key,
            tenant=tenant,
            session=self._session(session),
            correlation_id=correlation_id,
        )

    # signals and the inbox -----------------------------------------------------------

    def track(
        self,
        recipient: t.Any,
        name: str,
        data: t.Mapping[str, t.Any] | None = None,
        *,
        tenant: str | None = None,
        session: sa_orm.Session | None = None,
    ) -> Signal:
        """Record that ``name`` happened to ``recipient`` (``"invoice.paid"``,
        ``"task.completed"``), in the caller's transaction.

        After the commit it is routed to the recipient's workflow runs (inline with the
        ``sync`` dispatcher, through a job on ``chimeway_signals`` with ``rq``): the runs
        whose current stop conditions name it, and match its data, stop. A signal that
        stops nothing is kept with the reason.

        :raise InvalidSignalError: for a blank name or data JSON cannot store.
        :raise InvalidTenantError: for a tenant that is not a non-blank string.
        """
        from .signals import track

        return track(self.get_state(), self._session(session), recipient, name, data, tenant)

    def mark_seen(
        self,
        notification_id: int,
        recipient: t.Any,
        *,
        tenant: str | None = None,
        session: sa_orm.Session | None = None,
    ) -> bool:
        """Mark ``recipient``'s notification seen, the first time only, and track
        ``notification.seen`` for the run that sent it. ``False`` when it was seen already
        or is not ``recipient``'s (in ``tenant``)."""
        from .signals import mark

        return mark(
            self._session(session),
            notification_id,
            recipient,
            "seen",
            tenant,
            self.get_state(),
        )

    def mark_read(
        self,
        notification_id: int,
        recipient: t.Any,
        *,
        tenant: str | None = None,
        session: sa_orm.Session | None = None,
    ) -> bool:
        """Mark ``recipient``'s notification read (and seen), the first time only, and
        track ``notification.read`` for the run that sent it: a workflow waiting with
        ``stop_on=[read()]`` stops. ``False`` when it was read already or is not
        ``recipient``'s (in ``tenant``)."""
        from .signals import mark

        return mark(
            self._session(session),
            notification_id,
            recipient,
            "read",
            tenant,
            self.get_state(),
        )

    def _session(
        self, session: sa_orm.Session | sa_orm.scoped_session[t.Any] | None
    ) -> sa_orm.Session:
        """The session to write to: ``db.session`` by default; a scoped session (such as
        ``db.session`` passed explicitly) resolved to its current session, whose
        transactions the after-commit dispatch follows."""
        if session is None:
            session = self.db.session
        if isinstance(session, sa_orm.scoped_session):
            return t.cast(sa_orm.Session, session())
        return session


def current_state() -> State:
    """The Chimeway state of the current app.

    :raise RuntimeError: outside an app context, or for an app without Chimeway.
    """
    if not has_app_context():
        raise RuntimeError(
            "Flask-Chimeway needs an application context, and there is none. Call it from"
            " a view, a CLI command or a worker job, or push one with"
            " 'with app.app_context():'."
        )
    state = current_app.extensions.get("chimeway")
    if state is None:
        raise RuntimeError(
            f"The current app {current_app.name!r} is not set up with Flask-Chimeway; call"
            " chimeway.init_app(app) in the app factory."
        )
    return t.cast(State, state)
