"""Reading a settings struct (WebConfig, InboundConfig) from a TOML file, errors naming the file."""

from __future__ import annotations

import os
from typing import TypeVar

import msgspec

from .errors import ConfigError

T = TypeVar("T")


def load_settings(path: str | os.PathLike[str], kind: type[T]) -> T:
    """The `kind` a TOML file describes; ConfigError naming the file and what is wrong
    (unreadable, not TOML, an unknown or mistyped key, a value its checks refuse)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"{name}: {e.strerror or e}") from None
    try:
        return msgspec.toml.decode(data, type=kind)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{name}: {e}") from None
    except msgspec.DecodeError as e:
        raise ConfigError(f"{name}: not valid TOML: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}", e.field) from None
