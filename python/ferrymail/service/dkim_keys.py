"""The server's DKIM key store: keys by name, so that key material never travels in an
API request (a campaign names its keys: "dkim": ["news-2026"])."""

from __future__ import annotations

import os
import tomllib

from ..campaign import DkimKey
from ..errors import ConfigError

#: A key's settings in the store: a campaign file's [dkim] keys.
_FIELDS = {"domain", "selector", "key", "algorithm", "headers", "canonicalization", "aligned"}


def load(path: str) -> dict[str, DkimKey]:
    """The keys of a TOML file of tables, one per key name:

        [news-2026]
        domain = "example.com"
        selector = "s2026"
        key = "news-2026.pem"     # PEM file, relative to this file

    ConfigError naming the file and the key for anything wrong."""
    try:
        with open(path, "rb") as f:
            tables = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}", "dkim-keys") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}", "dkim-keys") from None
    keys: dict[str, DkimKey] = {}
    for name, table in tables.items():
        where = f"{path}: [{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table of a key's settings", "dkim-keys")
        unknown = set(table) - _FIELDS
        if unknown:
            raise ConfigError(f"{where}: unknown {', '.join(sorted(unknown))}", "dkim-keys")
        missing = {"domain", "selector", "key"} - set(table)
        if missing:
            raise ConfigError(f"{where}: {', '.join(sorted(missing))} missing", "dkim-keys")
        settings = dict(table)
        file = os.path.join(os.path.dirname(path), str(settings.pop("key")))
        try:
            with open(file, "rb") as f:
                pem = f.read()
        except OSError as e:
            raise ConfigError(f"{where}: key {file}: {e.strerror or e}", "dkim-keys") from None
        try:
            keys[name] = DkimKey(private_key=pem, **settings)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}", "dkim-keys") from None
    return keys
