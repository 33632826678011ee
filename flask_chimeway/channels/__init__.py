"""Channels: how a rendered message leaves the building."""

from __future__ import annotations

from .base import Channel, Message, SendResult
from .builtin import InAppChannel, LogChannel, MemoryChannel

__all__ = ["Channel", "InAppChannel", "LogChannel", "MemoryChannel", "Message", "SendResult"]
