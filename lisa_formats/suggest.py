"""The one "Did you mean ...?" of both packages, in lm-eval's wording."""

from __future__ import annotations

import difflib
from typing import Iterable


def closest(value: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to ``value`` by spelling, or None when none is close."""
    found = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return found[0] if found else None


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` (with its leading space) or an empty string."""
    match = closest(value, choices)
    return f" Did you mean {match!r}?" if match else ""


def unknown(kind: str, value: str, choices: Iterable[str]) -> str:
    """``Unknown KIND 'value'. Did you mean 'x'? Available: a, b, c``."""
    choices = sorted(str(c) for c in choices)
    return f"Unknown {kind} {value!r}.{did_you_mean(value, choices)} Available: {', '.join(choices) or '(none)'}"
