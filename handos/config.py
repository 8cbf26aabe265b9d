"""Config helpers shared by the decoder and training configs."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

from handos.errors import ConfigError


def check_keys(given: Iterable[str], cls: type, what: str, where: str = "") -> None:
    """ConfigError "unknown {what} [...]{where}; known: [...]" when `given` has keys that are not fields of dataclass `cls`."""
    known = {f.name for f in fields(cls)}
    bad = set(given) - known
    if bad:
        raise ConfigError(f"unknown {what} {sorted(bad)}{where}; known: {sorted(known)}")


__all__ = ["check_keys"]
