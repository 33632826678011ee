"""Workflows: multi-step journeys with wait gates, escalations and stop conditions.

Declare one on a notifier with :func:`deliver`, :func:`escalate`, :func:`wait` and stop
conditions made with :func:`signal` (or :func:`read` / :func:`seen`).
"""

from __future__ import annotations

from .dsl import (
    NOTIFICATION,
    Deliver,
    Param,
    Signal,
    Wait,
    Workflow,
    deliver,
    escalate,
    param,
    read,
    seen,
    signal,
    wait,
)

__all__ = [
    "NOTIFICATION",
    "Deliver",
    "Param",
    "Signal",
    "Wait",
    "Workflow",
    "deliver",
    "escalate",
    "param",
    "read",
    "seen",
    "signal",
    "wait",
]
