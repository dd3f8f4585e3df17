"""Open a connection with exponential backoff, retrying only what a retry can fix.

What is transient and what is fatal comes from the classification tables in
:mod:`api.db.error_handler`: ``ErrorInfo.is_transient`` (connection lost or refused,
too many connections, lock timeouts) is retried; ``FATAL_CONFIGURATION``
(wrong password, unknown database, no permission) fails at once with
:class:`ConnectionRejected` saying what to check; anything else is raised as is.

The budget is both a count (``DB_RETRY_MAX_ATTEMPTS``) and a time (``DB_RETRY_MAX_ELAPSED``,
60 s by default, so a 30 s failover is ridden out): retrying stops at whichever runs out
first, and the last pause is shortened so the budget is not overrun. While members answer
but none accepts writes (``read_only``: a promotion under way), the connect polls every
second, bounded by the time only.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterator
from typing import Callable, TypeVar

from api.db.error_handler import (
    FATAL_CONFIGURATION,
    TRANSIENT,
    ErrorCategory,
    ErrorInfo,
    classify_error,
)
from api.db.exceptions import ConnectionRejected, DatabaseUnavailable
from api.db.pool.config import RetryConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

FAILOVER_POLL = 1.0  # seconds: the longest pause while members answer but none accepts writes yet

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
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``operation`` (open a connection to ``target``, a redacted URL) with retries.

    Raises :class:`ConnectionRejected` at once for configuration errors,
    :class:`DatabaseUnavailable` when the transient failures outlast the attempts,
    and any unclassified error unchanged.
    """
    delays = backoff_delays(config, rng)
    deadline = clock() + config.max_elapsed
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except Exception as exc:
            info = classify_connect_error(exc, db_type)
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
            remaining = deadline - clock()
            if info.category is ErrorCategory.READ_ONLY:
                # Members answer but none is writable yet: a promotion is under way. Poll it closely,
                # bounded by the time budget only (short polls would use up the count long before it).
                delay: float | None = min(FAILOVER_POLL, remaining) if remaining > 0 else None
            else:
                delay = _next_delay(delays, remaining)
            if delay is None:
                logger.error(
                    "connecting to %s failed after %d attempt(s) (%s): %s",
                    target, attempt, info.category.value, info.message,
                )  # fmt: skip
                raise DatabaseUnavailable(
                    f"cannot connect to {target} after {attempt} attempt(s) in "
                    f"{config.max_elapsed - (deadline - clock()):.1f}s: "
                    f"{info.category.value}: {info.message}; "
                    "check that the server is running and reachable from here (host, port, firewall), "
                    "or raise DB_RETRY_MAX_ATTEMPTS / DB_RETRY_MAX_ELAPSED / DB_RETRY_MAX_DELAY",
                    orig=exc,
                ) from exc
            logger.warning(
                "connecting to %s failed (attempt %d, %.0fs of DB_RETRY_MAX_ELAPSED left, %s: %s); "
                "retrying in %.2fs",
                target, attempt, max(0.0, remaining), info.category.value, info.message, delay,
            )  # fmt: skip
            sleep(delay)


# libpq reports a failed host list as one message, one "connection to server at ..." per host.
_PER_HOST = re.compile(r"(?=connection to server (?:at|on) )")


def classify_connect_error(exc: BaseException, db_type: str) -> ErrorInfo:
    """The error's classification; for a host list, the most hopeful host's (a transient one if any).

    During a failover one member may refuse (read-only, starting up, not yet holding a new
    database) while another is merely down: the connect is retried when any host may recover.
    """
    info = classify_error(exc, db_type)
    parts = [part for part in _PER_HOST.split(info.message) if part.strip()]
    if len(parts) < 2:
        return info
    categories = [classify_error(RuntimeError(part), db_type).category for part in parts]
    if ErrorCategory.READ_ONLY in categories:  # a member answers: a promotion is what we wait for
        return info._replace(category=ErrorCategory.READ_ONLY)
    transient = [category for category in categories if category in TRANSIENT]
    return info._replace(category=transient[0]) if transient else info


def _next_delay(delays: Iterator[float], remaining: float) -> float | None:
    """The next pause, cut to the time left; None when the count or the time budget is spent."""
    delay = next(delays, None)
    if delay is None or remaining <= 0:
        return None
    return min(delay, remaining)
