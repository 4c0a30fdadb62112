"""Reading settings from the environment, failing fast with the variable's name."""

from __future__ import annotations

import os
from collections.abc import Mapping


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    """The variable's value, or the default when unset or empty."""
    value = env.get(name, "").strip()
    return value or default


def env_int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    """An integer within [low, high]."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    """A number within [low, high]."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def env_database_url(env: Mapping[str, str], name: str, default: str) -> str:
    """A SQLAlchemy URL for SQLite or PostgreSQL."""
    url = env_str(env, name, default)
    if not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
        raise ConfigError(f"{name} must be a sqlite:/// or postgresql:// URL, got {url!r}")
    return url


def env_secret(env: Mapping[str, str], name: str) -> str:
    """A secret given directly (NAME) or as a file path (NAME_FILE); empty when neither is set."""
    value = env.get(name, "").strip()
    path = env.get(f"{name}_FILE", "").strip()
    if value or not path:
        return value
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as error:
        raise ConfigError(f"{name}_FILE cannot be read: {error}") from None


def process_env() -> Mapping[str, str]:
    """The process environment (read once, in __main__)."""
    return dict(os.environ)
