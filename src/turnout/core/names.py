"""Validation of names: model ids and version names, which later become paths and URL
segments, and the names of a setting's choices."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TypeVar

from turnout.core.errors import InvalidConfigError, InvalidNameError

__all__ = ["MAX_NAME_LENGTH", "check_choice", "check_name"]

E = TypeVar("E", bound=StrEnum)

MAX_NAME_LENGTH = 128

# A leading letter or digit rules out "", ".", ".." and hidden files; the rest
# of the set is safe unescaped in a URL path segment and in a file name.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a safe model id or version name, else raise InvalidNameError."""
    if not isinstance(value, str):
        raise InvalidNameError(f"{kind} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidNameError(f"{kind} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidNameError(
            f"{kind} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if _SAFE_NAME.fullmatch(value) is None:
        raise InvalidNameError(
            f"{kind} {value!r} has unsafe characters: use letters, digits, '.', '_' and '-',"
            " starting with a letter or digit"
        )
    return value


def check_choice(kind: str, value: object, choices: type[E]) -> E:
    """Return ``value`` as one of ``choices``, else raise InvalidConfigError naming them all."""
    if isinstance(value, str) and value in set(choices):
        return choices(value)
    accepted = ", ".join(repr(choice.value) for choice in choices)
    raise InvalidConfigError(f"{kind} must be one of {accepted}, got {value!r}")
