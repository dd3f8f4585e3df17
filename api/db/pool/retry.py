"""Open a connection with exponential backoff, retrying only what a retry can fix.

What is transient and what is fatal comes from the classification tables in
:mod:`api.db.error_handler`: ``ErrorInfo.is_transient`` (connection lost or refused,
too many connections, lock timeouts) is retried; ``FATAL_CONFIGURATION``
(wrong password, unknown database, no permission) fails at once with
:class:`ConnectionRejected` saying what to check; anything else is raised as is.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from typing import Callable, TypeVar

from api.db.error_handler import FATAL_CONFIGURATION, ErrorCategory, classify_error
from api.db.exceptions import ConnectionRejected, DatabaseUnavailable
from api.db.pool.config import RetryConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What the operator should check, per fatal category.
WHAT_TO_CHECK: dict[ErrorCategory, str] = {
    ErrorCategory.AUTHENTICATION: "check the user name and password in the database URL (and the server's "
    "pg_hba.conf / user host grants)",
    ErrorCategory.UNKNOWN_DATABASE: "check the database name in the URL, or create the database first",
    ErrorCategory.PERMISSION_DENIED: "grant the user access to the database (CONNECT / USAGE privileges)",
}


def backoff_delays(config: RetryConfig, rng: random.Random | None = None) -> Iterator[float]:
    """The pause before each retry: ``initial * multiplier**n`` capped at ``max_delay``.

    With jitter, each pause is drawn uniformly from [delay/2, delay] ("equal
    jitter"): replicas that failed together spread out, yet the pauses still grow.
    """
    draw = rng or random
    delay = config.initial_delay
    for _ in range(config.max_attempts - 1):
        capped = min(delay, config.max_delay)
        yield draw.uniform(capped / 2, capped) if config.jitter else capped
        delay *= config.multiplier


def call_with_retry(
    operation: Callable[[], T],
    *,
    config: RetryConfig,
    db_type: str,
    target: str,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``operation`` (open a connection to ``target``, a redacted URL) with retries.

    Raises :class:`ConnectionRejected` at once for configuration errors,
    :class:`DatabaseUnavailable` when the transient failures outlast the attempts,
    and any unclassified error unchanged.
    """
    delays = backoff_delays(config, rng)
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except Exception as exc:
            info = classify_error(exc, db_type)
            if info.category in FATAL_CONFIGURATION:
                hint = WHAT_TO_CHECK.get(info.category, "check the connection settings")
                logger.error(
                    "connecting to %s failed (%s): %s; not retrying",
                    target,
                    info.category.value,
                    info.message,
                )
                raise ConnectionRejected(
                    f"cannot connect to {target}: {info.category.value}: {info.message}; {hint}", orig=exc
                ) from exc
            if not info.is_transient:
                logger.error(
                    "connecting to %s failed with an error that is not retried (%s, code %s): %s",
                    target, info.category.value, info.code, info.message,
                )  # fmt: skip
                raise
            delay = next(delays, None)
            if delay is None:
                logger.error(
                    "connecting to %s failed after %d attempt(s) (%s): %s",
                    target, attempt, info.category.value, info.message,
                )  # fmt: skip
                raise DatabaseUnavailable(
                    f"cannot connect to {target} after {attempt} attempt(s): "
                    f"{info.category.value}: {info.message}; "
                    "check that the server is running and reachable from here (host, port, firewall), "
                    "or raise DB_RETRY_MAX_ATTEMPTS / DB_RETRY_MAX_DELAY",
                    orig=exc,
                ) from exc
            logger.warning(
                "connecting to %s failed (attempt %d/%d, %s: %s); retrying in %.2fs",
                target, attempt, config.max_attempts, info.category.value, info.message, delay,
            )  # fmt: skip
            sleep(delay)
