"""Params: validation as JSON, and redaction of secret-looking keys before storage."""

from __future__ import annotations

import math
import re
import typing as t

from .errors import InvalidParamsError

REDACTED = "[REDACTED]"

#: Fragments of key names whose values are never stored. Matching ignores case and treats
#: ``-`` like ``_``; ``CHIMEWAY_REDACT_KEYS`` adds more.
SECRET_KEY_FRAGMENTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "authorization",
    "credential",
    "cookie",
    "session_id",
    "pin_code",
    "cvv",
    "card_number",
)


def validate_params(params: object) -> dict[str, t.Any]:
    """Check that ``params`` is a mapping that JSON can store exactly, and copy it.

    :raise InvalidParamsError: naming the path of the first value JSON cannot hold.
    """
    if params is None:
        return {}
    if not isinstance(params, t.Mapping):
        raise InvalidParamsError(f"params must be a mapping (a dict), not {type(params).__name__}.")
    return t.cast(dict[str, t.Any], _check(params, "params"))


def _check(value: object, path: str) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidParamsError(f"{path} is {value!r}; JSON has no NaN or infinity.")
        return value
    if isinstance(value, t.Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidParamsError(
                    f"{path} has the key {key!r} of type {type(key).__name__}; JSON object"
                    " keys must be strings."
                )
            out[key] = _check(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_check(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise InvalidParamsError(
        f"{path} is a {type(value).__name__}, which JSON cannot store; convert it first"
        " (for example a datetime to an ISO string, a Decimal to a string, a model to its id)."
    )


class Redactor:
    """Replaces the values of secret-looking keys, at any depth, with ``[REDACTED]``."""

    def __init__(self, extra_fragments: t.Iterable[str] = ()) -> None:
        fragments = [*SECRET_KEY_FRAGMENTS, *extra_fragments]
        self._pattern = re.compile(
            "|".join(re.escape(f.lower().replace("-", "_")) for f in fragments)
        )

    def is_secret(self, key: str) -> bool:
        """Whether the value under ``key`` must not be stored."""
        return self._pattern.search(key.lower().replace("-", "_")) is not None

    def redact(self, value: t.Any) -> t.Any:
        """A copy of ``value`` with secret-looking keys redacted, recursively."""
        if isinstance(value, dict):
            return {k: REDACTED if self.is_secret(k) else self.redact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact(v) for v in value]
        return value
