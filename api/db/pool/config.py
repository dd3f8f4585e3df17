"""Pool and retry settings: keyword arguments, else the environment, else a preset, else defaults.

Every setting is declared once in :data:`SETTINGS` (name, environment variable,
type, default, lower bound) and checked in one place, :func:`load_config`, so an
error always names the variable (``POOL_MAX_CONNECTIONS``) or keyword it came from.
Precedence, highest first: keyword arguments, environment variables, the preset
(``preset=`` or ``$POOL_PRESET``), the defaults below.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Union

from api.db.exceptions import ConfigurationError

Number = Union[int, float]

PRESET_ENV = "POOL_PRESET"


@dataclass(frozen=True)
class PoolConfig:
    """How many connections, how long to wait for one, how long they live, what to watch."""

    min_connections: int = 5  # opened eagerly at the first connect()
    max_connections: int = 100
    acquire_timeout: float = 30.0  # seconds a checkout may wait before PoolTimeout
    max_lifetime: float = 3600.0  # seconds; a connection older than this is closed on check-in
    idle_timeout: float = 600.0  # seconds; idle connections above min_connections are closed after this
    leak_threshold: float = 0.0  # seconds a checkout may last before it is reported; 0 = off
    app_name: str = "api.db"  # PostgreSQL application_name, MySQL program_name
    connect_timeout: float = 10.0  # seconds for the TCP connect + handshake
    statement_timeout: float = 0.0  # seconds a statement may run on the server; 0 = no limit
    slow_query_ms: float = 1000.0  # queries slower than this are logged at WARNING
    diagnostics: bool = True  # query timing and acquiring call sites (counters are always kept)
    warning_percent: float = 80.0  # utilization logged at WARNING
    critical_percent: float = 95.0  # utilization logged at CRITICAL
    reset_session: str = "auto"  # auto: reset when the session may have changed; always; never
    alive_bypass: float = 0.5  # seconds; a connection used more recently is not pinged on checkout
    pooler: str = "auto"  # auto: detect PgBouncer; pgbouncer: one is in front; none: never one
    resend_unanswered: bool = True  # resend once a statement outside a transaction that got no answer


@dataclass(frozen=True)
class RetryConfig:
    """Exponential backoff with jitter for opening a connection."""

    max_attempts: int = 10
    max_elapsed: float = 60.0  # seconds from the first attempt; covers a 30 s failover with room to spare
    initial_delay: float = 1.0
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: bool = True


@dataclass(frozen=True)
class RoutingConfig:
    """Read/write routing over replicas (``connect(url, replicas=[...])``)."""

    max_replica_lag: float = 5.0  # seconds; a replica further behind is skipped
    replica_poll_interval: float = 1.0  # seconds between two lag measurements of each replica
    read_your_writes: float = 2.0  # seconds a thread's reads stay on the primary after its write
    replica_fallback: str = "primary"  # no healthy replica: primary (read there) or fail (NoHealthyReplica)


@dataclass(frozen=True)
class DatabaseConfig:
    """The pool and retry settings ``connect()`` uses; build it with :func:`load_config`."""

    pool: PoolConfig
    retry: RetryConfig
    preset: str | None = None
    routing: RoutingConfig = RoutingConfig()

    def as_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "pool": asdict(self.pool), "retry": asdict(self.retry),
                "routing": asdict(self.routing)}  # fmt: skip


class _Setting:
    __slots__ = ("key", "env", "kind", "minimum", "section", "field", "choices")

    def __init__(
        self, key: str, env: str, kind: type, minimum: Number | None, section: str, field: str,
        choices: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        self.key = key  # the keyword argument
        self.env = env  # the environment variable
        self.kind = kind
        self.minimum = minimum
        self.section = section  # "pool", "retry" or "routing"
        self.field = field  # the dataclass field
        self.choices = choices  # allowed values of a str setting; empty = any non-empty text


def _pool(
    key: str, env: str, kind: type, minimum: Number | None = 0, choices: tuple[str, ...] = ()
) -> _Setting:
    return _Setting(key, env, kind, minimum, "pool", key, choices)


def _retry(field: str, env: str, kind: type, minimum: Number | None = 0) -> _Setting:
    return _Setting(f"retry_{field}", env, kind, minimum, "retry", field)


def _routing(
    key: str, env: str, kind: type, minimum: Number | None = 0, choices: tuple[str, ...] = ()
) -> _Setting:
    return _Setting(key, env, kind, minimum, "routing", key, choices)


SETTINGS: tuple[_Setting, ...] = (
    _pool("min_connections", "POOL_MIN_CONNECTIONS", int),
    _pool("max_connections", "POOL_MAX_CONNECTIONS", int, 1),
    _pool("acquire_timeout", "POOL_ACQUIRE_TIMEOUT", float, 0.001),
    _pool("max_lifetime", "POOL_MAX_LIFETIME", float, 1),
    _pool("idle_timeout", "POOL_IDLE_TIMEOUT", float, 1),
    _pool("leak_threshold", "POOL_LEAK_THRESHOLD", float),
    _pool("app_name", "APP_NAME", str, None),
    _pool("connect_timeout", "DB_CONNECT_TIMEOUT", float, 1),
    _pool("statement_timeout", "DB_STATEMENT_TIMEOUT", float),
    _pool("slow_query_ms", "DB_SLOW_QUERY_MS", float),
    _pool("diagnostics", "POOL_DIAGNOSTICS", bool, None),
    _pool("warning_percent", "POOL_WARNING_PERCENT", float),
    _pool("critical_percent", "POOL_CRITICAL_PERCENT", float),
    _pool("reset_session", "POOL_RESET_SESSION", str, None, ("auto", "always", "never")),
    _pool("alive_bypass", "POOL_ALIVE_BYPASS", float),
    _pool("pooler", "DB_POOLER", str, None, ("auto", "pgbouncer", "none")),
    _pool("resend_unanswered", "DB_RESEND_UNANSWERED", bool, None),
    _retry("max_attempts", "DB_RETRY_MAX_ATTEMPTS", int, 1),
    _retry("max_elapsed", "DB_RETRY_MAX_ELAPSED", float),
    _retry("initial_delay", "DB_RETRY_INITIAL_DELAY", float),
    _retry("max_delay", "DB_RETRY_MAX_DELAY", float),
    _retry("multiplier", "DB_RETRY_MULTIPLIER", float, 1),
    _retry("jitter", "DB_RETRY_JITTER", bool, None),
    _routing("max_replica_lag", "DB_MAX_REPLICA_LAG", float),
    _routing("replica_poll_interval", "DB_REPLICA_POLL_INTERVAL", float, 0.05),
    _routing("read_your_writes", "DB_READ_YOUR_WRITES", float),
    _routing("replica_fallback", "DB_REPLICA_FALLBACK", str, None, ("primary", "fail")),
)
SETTINGS_BY_KEY: dict[str, _Setting] = {s.key: s for s in SETTINGS}

# playhouse.pool's own keyword names, accepted so existing calls keep working.
ALIASES: dict[str, str] = {"timeout": "acquire_timeout", "stale_timeout": "max_lifetime"}

# Named starting points; the environment and keyword arguments still override them.
PRESETS: dict[str, dict[str, Any]] = {
    # One developer, a local server: small pool, fast failure, loud about slow queries and leaks.
    "development": {
        "min_connections": 1, "max_connections": 10, "acquire_timeout": 10.0, "idle_timeout": 300.0,
        "leak_threshold": 60.0, "slow_query_ms": 200.0, "retry_max_attempts": 3, "retry_max_delay": 5.0,
        "retry_max_elapsed": 10.0,
    },
    # The defaults, with leak reports for checkouts held over two minutes and a statement limit.
    "production": {"leak_threshold": 120.0, "statement_timeout": 300.0},
    # Many short requests: a larger warm pool, waits that fail fast rather than pile up.
    "high_traffic": {
        "min_connections": 20, "max_connections": 200, "acquire_timeout": 5.0, "max_lifetime": 1800.0,
        "idle_timeout": 300.0, "leak_threshold": 30.0, "slow_query_ms": 250.0, "statement_timeout": 60.0,
    },
    # Test suites: no warm-up, tiny pool, short waits, one retry at most.
    "testing": {
        "min_connections": 0, "max_connections": 5, "acquire_timeout": 5.0, "max_lifetime": 300.0,
        "idle_timeout": 60.0, "leak_threshold": 10.0, "connect_timeout": 5.0, "retry_max_attempts": 2,
        "retry_initial_delay": 0.05, "retry_max_delay": 0.2, "retry_jitter": False, "retry_max_elapsed": 2.0,
    },
}  # fmt: skip

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _source(setting: _Setting, origin: str) -> str:
    if origin == "env":
        return f"environment variable {setting.env}"
    if origin == "keyword":
        return f"{setting.key}= (environment variable {setting.env})"
    return f"{setting.key} of preset {origin!r}"


def _convert_bool(setting: _Setting, raw: Any, where: str) -> bool:
    """A boolean setting: a bool, or one of the words of ``_TRUE`` / ``_FALSE``."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(f"{where} is {raw!r}: expected true or false (1/0, yes/no, on/off)")


def _convert_str(setting: _Setting, raw: Any, where: str) -> str:
    """A text setting: not empty, lower-cased and checked when it has choices."""
    text = str(raw).strip()
    if not text:
        raise ConfigurationError(f"{where} is empty: give a name or leave it unset")
    if setting.choices and text.lower() not in setting.choices:
        raise ConfigurationError(f"{where} is {raw!r}: expected one of {', '.join(setting.choices)}")
    return text.lower() if setting.choices else text


def _parse_number(setting: _Setting, raw: Any, where: str) -> Number:
    """``raw`` as the setting's int or float; a float with a fraction is no int."""
    if isinstance(raw, bool):
        raise ConfigurationError(f"{where} is {raw!r}: expected a number")
    try:
        value: Number = setting.kind(raw.strip() if isinstance(raw, str) else raw)
        if setting.kind is int and isinstance(raw, float) and raw != int(raw):
            raise ValueError
    except (TypeError, ValueError):
        noun = "a whole number" if setting.kind is int else "a number of seconds"
        raise ConfigurationError(f"{where} is {raw!r}: expected {noun}") from None
    return value


def _convert_number(setting: _Setting, raw: Any, where: str) -> Number:
    """A numeric setting: finite and at least the setting's minimum."""
    value = _parse_number(setting, raw, where)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(f"{where} is {raw!r}: expected a finite number")
    if setting.minimum is not None and value < setting.minimum:
        bound = "positive" if setting.minimum > 0 else "zero or more"
        raise ConfigurationError(f"{where} is {raw!r}: must be {bound} (at least {setting.minimum})")
    return value


_CONVERTERS: dict[type, Callable[[_Setting, Any, str], Any]] = {bool: _convert_bool, str: _convert_str}


def _convert(setting: _Setting, raw: Any, origin: str) -> Any:
    """``raw`` from ``origin`` (keyword, env or a preset name) as the setting's type, validated."""
    converter = _CONVERTERS.get(setting.kind, _convert_number)
    return converter(setting, raw, _source(setting, origin))


def config_keys() -> frozenset[str]:
    """Keyword names :func:`load_config` accepts (including playhouse's aliases)."""
    return frozenset(SETTINGS_BY_KEY) | frozenset(ALIASES)


def load_config(
    environ: Mapping[str, str] | None = None, *, preset: str | None = None, **overrides: Any
) -> DatabaseConfig:
    """Build and validate the settings; a ConfigurationError names the variable at fault.

    ``environ`` defaults to ``os.environ``; ``preset`` to ``$POOL_PRESET``.
    ``overrides`` take the :class:`PoolConfig` field names, ``retry_<field>`` for
    :class:`RetryConfig`, and playhouse's ``timeout`` / ``stale_timeout``.
    """
    env = os.environ if environ is None else environ
    preset_name = preset if preset is not None else (env.get(PRESET_ENV) or None)
    if preset_name is not None and preset_name not in PRESETS:
        raise ConfigurationError(
            f"unknown pool preset {preset_name!r} (preset= or {PRESET_ENV}); use one of {', '.join(PRESETS)}"
        )
    unknown = sorted(set(overrides) - config_keys())
    if unknown:
        raise ConfigurationError(
            f"unknown pool setting(s) {', '.join(unknown)}; known: {', '.join(sorted(config_keys()))}"
        )
    keywords = {ALIASES.get(key, key): value for key, value in overrides.items() if value is not None}
    values: dict[str, dict[str, Any]] = {"pool": {}, "retry": {}, "routing": {}}
    for setting in SETTINGS:
        found = _raw_value(setting, keywords, env, preset_name)
        if found is not None:
            values[setting.section][setting.field] = _convert(setting, *found)
    if "min_connections" not in values["pool"] and "max_connections" in values["pool"]:
        # Only the maximum was given: the default minimum follows it down instead of failing.
        values["pool"]["min_connections"] = min(PoolConfig.min_connections, values["pool"]["max_connections"])
    config = DatabaseConfig(
        PoolConfig(**values["pool"]), RetryConfig(**values["retry"]), preset_name,
        RoutingConfig(**values["routing"]),
    )
    _check_relations(config)
    return config


def _raw_value(
    setting: _Setting, keywords: Mapping[str, Any], env: Mapping[str, str], preset_name: str | None
) -> tuple[Any, str] | None:
    """(raw value, origin) of ``setting``: a keyword wins over the environment, which wins over the preset."""
    if setting.key in keywords:
        return keywords[setting.key], "keyword"
    if env.get(setting.env, "").strip():
        return env[setting.env], "env"
    if preset_name is not None and setting.key in PRESETS[preset_name]:
        return PRESETS[preset_name][setting.key], preset_name
    return None


def _check_relations(config: DatabaseConfig) -> None:
    pool, retry = config.pool, config.retry
    if pool.min_connections > pool.max_connections:
        raise ConfigurationError(
            f"POOL_MIN_CONNECTIONS ({pool.min_connections}) is above POOL_MAX_CONNECTIONS "
            f"({pool.max_connections}): lower the minimum or raise the maximum"
        )
    if retry.initial_delay > retry.max_delay:
        raise ConfigurationError(
            f"DB_RETRY_INITIAL_DELAY ({retry.initial_delay}) is above DB_RETRY_MAX_DELAY ({retry.max_delay})"
        )
    if pool.warning_percent > pool.critical_percent or pool.critical_percent > 100:
        raise ConfigurationError(
            f"POOL_WARNING_PERCENT ({pool.warning_percent}) must not exceed POOL_CRITICAL_PERCENT "
            f"({pool.critical_percent}), which must not exceed 100"
        )


def environment_names() -> dict[str, str]:
    """Environment variable -> keyword, for documentation and ``log_connection_config``."""
    return {s.env: s.key for s in SETTINGS}


__all__ = [
    "DatabaseConfig",
    "PoolConfig",
    "RetryConfig",
    "RoutingConfig",
    "PRESETS",
    "load_config",
    "config_keys",
    "environment_names",
]
