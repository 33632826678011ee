"""The workflow DSL: steps that deliver, wait and stop, checked when they are declared."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import typing as t

from ..errors import WorkflowDefinitionError

#: In a ``match``, stands for the id of the run's own notification.
NOTIFICATION = "@notification"

OUTCOME_ACTIONS = ("continue", "skip_waits", "stop")


@dataclasses.dataclass(frozen=True)
class Signal:
    """A stop condition: a signal by name, optionally about the run's own subject.

    ``match`` maps a field of the signal's data to where the run's value comes from: the
    name of a trigger param, or :data:`NOTIFICATION` for the run's notification id.
    ``signal("invoice.paid", match={"invoice_id": "invoice_id"})`` stops only the run
    whose params had the same ``invoice_id`` as the tracked signal's data.
    """

    name: str
    match: t.Mapping[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, t.Any]:
        return {"signal": self.name, "match": dict(self.match)}


def signal(name: str, *, match: t.Mapping[str, str] | None = None) -> Signal:
    """A stop condition on the signal ``name``; see :class:`Signal`.

    :raise WorkflowDefinitionError: for a blank name or a malformed ``match``.
    """
    if not isinstance(name, str) or not name.strip():
        raise WorkflowDefinitionError(
            f"A signal name must be a non-blank string such as 'invoice.paid', not {name!r}."
        )
    match = dict(match or {})
    for field, source in match.items():
        if not (isinstance(field, str) and field and isinstance(source, str) and source):
            raise WorkflowDefinitionError(
                f"signal({name!r}, match=...) maps data fields to param names (or"
                f" NOTIFICATION); {field!r}: {source!r} is not that."
            )
    return Signal(name.strip(), match)


def read() -> Signal:
    """Stop when the run's own in-app notification is read (``mark_read``)."""
    return signal("notification.read", match={"notification_id": NOTIFICATION})


def seen() -> Signal:
    """Stop when the run's own in-app notification is seen (``mark_seen``)."""
    return signal("notification.seen", match={"notification_id": NOTIFICATION})


@dataclasses.dataclass(frozen=True)
class Param:
    """An escalation target read from the trigger's params, such as ``param("manager_id")``."""

    name: str


def param(name: str) -> Param:
    """Deliver to the recipient whose identity is ``params[name]``."""
    if not isinstance(name, str) or not name.strip():
        raise WorkflowDefinitionError(f"param() takes a param name, not {name!r}.")
    return Param(name)


#: Who an escalation goes to: a param, or a function of ``(params, recipient)`` returning
#: an identity, a :class:`~flask_chimeway.Recipient` or ``None``.
Target: t.TypeAlias = "Param | t.Callable[[t.Mapping[str, t.Any], t.Any], t.Any]"


@dataclasses.dataclass(frozen=True)
class Deliver:
    """Send on ``channel``, to the run's recipient or, for an escalation, to ``to``."""

    channel: str
    to: Target | None = None
    on_success: str = "continue"
    on_failure: str = "skip_waits"

    def to_json(self) -> dict[str, t.Any]:
        target = None
        if isinstance(self.to, Param):
            target = f"param:{self.to.name}"
        elif self.to is not None:
            target = f"callable:{getattr(self.to, '__qualname__', repr(self.to))}"
        return {
            "kind": "deliver",
            "channel": self.channel,
            "to": target,
            "on_success": self.on_success,
            "on_failure": self.on_failure,
        }


@dataclasses.dataclass(frozen=True)
class Wait:
    """Wait ``seconds``; any of ``stop_on`` arriving meanwhile stops the run."""

    seconds: float
    stop_on: tuple[Signal, ...] = ()

    def to_json(self) -> dict[str, t.Any]:
        return {
            "kind": "wait",
            "seconds": self.seconds,
            "stop_on": [s.to_json() for s in self.stop_on],
        }


Step: t.TypeAlias = Deliver | Wait


def deliver(
    channel: str, *, on_success: str = "continue", on_failure: str = "skip_waits"
) -> Deliver:
    """A step that delivers on ``channel`` to the run's recipient.

    :param on_success: when the delivery succeeds: ``"continue"`` with the next step, or
        ``"stop"`` the run.
    :param on_failure: when it is cancelled (a permanent failure, retries exhausted):
        ``"skip_waits"`` (the default) goes straight on to the next delivery step,
        ``"continue"`` goes on with the next step, ``"stop"`` stops the run.
    """
    return Deliver(channel, None, _action(on_success), _action(on_failure))


def escalate(
    channel: str,
    *,
    to: Target,
    on_success: str = "continue",
    on_failure: str = "skip_waits",
) -> Deliver:
    """A step that delivers on ``channel`` to someone else: ``to`` is ``param("name")`` or
    a function ``(params, recipient) -> identity | Recipient | None``, resolved (and the
    content built) when the notifier is triggered."""
    if to is None or not (isinstance(to, Param) or callable(to)):
        raise WorkflowDefinitionError(
            f"escalate({channel!r}) needs to=param('...') or a function (params, recipient)"
            " returning who to escalate to."
        )
    return Deliver(channel, to, _action(on_success), _action(on_failure))


def wait(
    delta: dt.timedelta | None = None,
    *,
    seconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    days: float = 0,
    stop_on: t.Iterable[Signal] = (),
) -> Wait:
    """A wait gate; any signal in ``stop_on`` arriving while it waits stops the run."""
    if delta is not None and not isinstance(delta, dt.timedelta):
        raise WorkflowDefinitionError(
            f"wait() takes a timedelta or minutes=/hours=/days=..., not {delta!r}."
        )
    total = (delta or dt.timedelta()) + dt.timedelta(
        seconds=seconds, minutes=minutes, hours=hours, days=days
    )
    if total <= dt.timedelta(0):
        raise WorkflowDefinitionError(
            f"A wait must last a positive time, not {total}; pass minutes=30, hours=24, ..."
        )
    conditions = tuple(stop_on)
    if not all(isinstance(c, Signal) for c in conditions):
        raise WorkflowDefinitionError("wait(stop_on=...) takes signal(...) conditions.")
    return Wait(total.total_seconds(), conditions)


def _action(value: str) -> str:
    if value not in OUTCOME_ACTIONS:
        raise WorkflowDefinitionError(
            f"An outcome action is one of {', '.join(OUTCOME_ACTIONS)}, not {value!r}."
        )
    return value


@dataclasses.dataclass(frozen=True)
class Workflow:
    """Ordered steps, and stop conditions that hold during the whole run.

    .. code-block:: python

        Workflow(
            deliver("in_app"),
            wait(minutes=30, stop_on=[read()]),
            deliver("email"),
            wait(hours=24, stop_on=[signal("task.completed", match={"task_id": "task_id"})]),
            escalate("email", to=param("manager_id")),
        )
    """

    steps: tuple[Step, ...]
    stop_on: tuple[Signal, ...] = ()

    def __init__(self, *steps: Step, stop_on: t.Iterable[Signal] = ()) -> None:
        object.__setattr__(self, "steps", tuple(steps))
        object.__setattr__(self, "stop_on", tuple(stop_on))

    def check(self, key: str, channels: t.Sequence[str]) -> None:
        """Refuse a workflow that cannot work, naming the notifier and the step.

        :raise WorkflowDefinitionError: no steps, a step that is not a step, a channel the
            notifier does not list, a wait that ends the workflow (nothing runs after it),
            steps after one that always stops the run.
        """
        if not self.steps:
            raise WorkflowDefinitionError(f"Notifier {key!r}: a workflow needs steps.")
        if not all(isinstance(c, Signal) for c in self.stop_on):
            raise WorkflowDefinitionError(
                f"Notifier {key!r}: Workflow(stop_on=...) takes signal(...) conditions."
            )
        for index, step in enumerate(self.steps):
            where = f"Notifier {key!r}, workflow step {index}"
            if not isinstance(step, Deliver | Wait):
                raise WorkflowDefinitionError(
                    f"{where} is {step!r}; use deliver(), escalate() or wait()."
                )
            if isinstance(step, Deliver) and step.channel not in channels:
                raise WorkflowDefinitionError(
                    f"{where} delivers on {step.channel!r}, which the notifier does not list"
                    f" in channels={list(channels)!r}."
                )
            if isinstance(step, Deliver) and step.to is not None and step.channel == "in_app":
                raise WorkflowDefinitionError(
                    f"{where} escalates on in_app: an inbox entry belongs to the notified"
                    " recipient; escalate on another channel or trigger a notifier for them."
                )
            last = index == len(self.steps) - 1
            if isinstance(step, Wait) and last:
                raise WorkflowDefinitionError(
                    f"{where} is a wait with nothing after it; end the workflow with a"
                    " delivery, or remove the wait."
                )
            if (
                isinstance(step, Deliver)
                and not last
                and step.on_success == "stop"
                and step.on_failure == "stop"
            ):
                raise WorkflowDefinitionError(
                    f"{where} stops the run whatever happens, so the steps after it can"
                    " never run; remove them or let one outcome continue."
                )
        if not any(isinstance(s, Deliver) for s in self.steps):
            raise WorkflowDefinitionError(f"Notifier {key!r}: a workflow must deliver something.")

    def to_json(self) -> dict[str, t.Any]:
        """The definition a run stores and follows."""
        return {
            "steps": [s.to_json() for s in self.steps],
            "stop_on": [c.to_json() for c in self.stop_on],
        }

    def fingerprint(self) -> str:
        """A hash of :meth:`to_json`, to notice steps changed under one version."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def match_sources(self) -> set[str]:
        """The param names stop conditions compare with."""
        conditions = [*self.stop_on]
        for step in self.steps:
            if isinstance(step, Wait):
                conditions.extend(step.stop_on)
        return {src for c in conditions for src in c.match.values() if src != NOTIFICATION}
