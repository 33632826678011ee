"""The ``CHIMEWAY_*`` configuration keys, their defaults, and their validation."""

from __future__ import annotations

import dataclasses
import typing as t

from .errors import ConfigurationError

DISPATCHERS = ("sync", "rq")

#: Every key Flask-Chimeway reads, with its default. ``init_app`` sets these with
#: ``app.config.setdefault`` and parses them once into :class:`Settings`.
DEFAULTS: dict[str, t.Any] = {
    "CHIMEWAY_DISPATCHER": "sync",
    "CHIMEWAY_REDIS_URL": "redis://127.0.0.1:6379/0",
    "CHIMEWAY_REDIS_TIMEOUT": 1.0,
    "CHIMEWAY_REQUEUE_AFTER": 30,
    "CHIMEWAY_MAX_ATTEMPTS": 5,
    "CHIMEWAY_BACKOFF_BASE": 30.0,
    "CHIMEWAY_BACKOFF_MAX": 3600.0,
    "CHIMEWAY_LEASE_SECONDS": 300,
    "CHIMEWAY_REDACT_KEYS": (),
    "CHIMEWAY_TEMPLATE_FOLDER": "chimeway",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The parsed, validated configuration of one app."""

    dispatcher: str
    redis_url: str
    redis_timeout: float
    requeue_after: int
    max_attempts: int
    backoff_base: float
    backoff_max: float
    lease_seconds: int
    redact_keys: tuple[str, ...]
    template_folder: str

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> Settings:
        """Validate the ``CHIMEWAY_*`` keys of ``config``.

        :raise ConfigurationError: naming the key and the values it accepts.
        """
        dispatcher = config["CHIMEWAY_DISPATCHER"]
        if dispatcher not in DISPATCHERS:
            allowed = ", ".join(repr(d) for d in DISPATCHERS)
            raise ConfigurationError(
                f"CHIMEWAY_DISPATCHER is {dispatcher!r}; it must be one of {allowed}."
            )
        redis_url = config["CHIMEWAY_REDIS_URL"]
        if not isinstance(redis_url, str) or not redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigurationError(
                f"CHIMEWAY_REDIS_URL is {redis_url!r}; it must be a redis://, rediss:// or"
                " unix:// URL."
            )
        backoff_base = _positive_number(config, "CHIMEWAY_BACKOFF_BASE")
        backoff_max = _positive_number(config, "CHIMEWAY_BACKOFF_MAX")
        if backoff_max < backoff_base:
            raise ConfigurationError(
                f"CHIMEWAY_BACKOFF_MAX ({backoff_max}) is smaller than CHIMEWAY_BACKOFF_BASE"
                f" ({backoff_base}); it must be at least as large."
            )
        redact = config["CHIMEWAY_REDACT_KEYS"]
        if (
            isinstance(redact, str)
            or not isinstance(redact, t.Iterable)
            or not all(isinstance(k, str) and k.strip() for k in redact)
        ):
            raise ConfigurationError(
                "CHIMEWAY_REDACT_KEYS must be a list of non-blank strings (key fragments"
                f" to redact in addition to the built-in ones), not {redact!r}."
            )
        folder = config["CHIMEWAY_TEMPLATE_FOLDER"]
        if not isinstance(folder, str) or not folder.strip("/ "):
            raise ConfigurationError(
                f"CHIMEWAY_TEMPLATE_FOLDER is {folder!r}; it must be a non-blank template"
                " folder name such as 'chimeway'."
            )
        return cls(
            dispatcher=dispatcher,
            redis_url=redis_url,
            redis_timeout=_positive_number(config, "CHIMEWAY_REDIS_TIMEOUT"),
            requeue_after=_positive_int(config, "CHIMEWAY_REQUEUE_AFTER"),
            max_attempts=_positive_int(config, "CHIMEWAY_MAX_ATTEMPTS"),
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            lease_seconds=_positive_int(config, "CHIMEWAY_LEASE_SECONDS"),
            redact_keys=tuple(k.strip().lower() for k in redact),
            template_folder=folder.strip("/ "),
        )


def _positive_int(config: t.Mapping[str, t.Any], key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{key} is {value!r}; it must be a whole number of at least 1.")
    return value


def _positive_number(config: t.Mapping[str, t.Any], key: str) -> float:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{key} is {value!r}; it must be a number of seconds above 0.")
    return float(value)
