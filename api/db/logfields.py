"""Structured logs: the documented ``extra`` fields of api.db's records, and a JSON formatter.

Call sites pass their facts as ``extra={...}`` with the names of :data:`FIELDS`; for the records whose
call site passes none, :class:`FieldsFilter` derives the subject from the message's first argument
(``"pool %s: ..."`` gives ``pool``, ``"migration %s ..."`` gives ``migration``). Text fields are masked
like messages (:func:`api.db.redact.redact_text`). :class:`JsonFormatter` writes one JSON object a line
with the time, level, logger, message and every extra field; ``python-json-logger`` shows the same fields.

One-line setup in an application: ``api.db.logfields.configure_logging(logging.INFO, "json")``.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from typing import Any

from api.db.redact import install_package_filter, redact_text

# The field names, each with what it holds (docs/OBSERVABILITY.md has the same table).
FIELDS: dict[str, str] = {
    "event": "what happened, a constant: applied, skipped, failed, begin, commit, rollback, discarded...",
    "migration": "the migration's name",
    "migrations": "the names of the migrations concerned (a list)",
    "status": "the outcome: success, skipped, failed, pass, warn, fail",
    "duration_ms": "how long it took, in milliseconds",
    "operations": "how many operations of the migration are in effect",
    "pool": "the pool's masked URL",
    "utilization": "the pool's in-use share, 0 to 1",
    "wait_ms": "how long a checkout or the lock waited, in milliseconds",
    "engine": "the engine family: postgres, mysql, sqlite",
    "error_category": "the ErrorCategory of an error (connection, lock_timeout, syntax...)",
    "reason": "why it happened (a discarded connection, a skipped migration)",
    "isolation_level": "the transaction's isolation level",
    "transaction": "transaction or savepoint",
    "check": "the name of a health or preflight check",
    "lock_strategy": "how the migration lock is taken: pg_advisory_lock, get_lock, begin_immediate",
    "holder_thread": "the name of the thread that held a connection (a leak, a reclaimed connection)",
}
_SUBJECTS = (  # message template prefix -> the field its first argument fills
    (re.compile(r"pool %s\b"), "pool"),
    (re.compile(r"(?:resuming )?migration %s\b"), "migration"),
    (re.compile(r"preflight %s\b"), "check"),
    (re.compile(r"health check of %s\b"), "pool"),
)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _derive(record: logging.LogRecord) -> None:
    """Fill the subject field from the first argument where the call site did not pass it."""
    if not isinstance(record.msg, str) or not isinstance(record.args, tuple) or not record.args:
        return
    for pattern, name in _SUBJECTS:
        if pattern.match(record.msg) and name not in record.__dict__:
            record.__dict__[name] = str(record.args[0])
            return


class FieldsFilter(logging.Filter):
    """Derives subject fields and masks secrets in the text fields of api.db's records; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the derived fields; redact every string extra."""
        _derive(record)
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD and isinstance(value, str):
                record.__dict__[name] = redact_text(value)
        return True


_FILTER = FieldsFilter()


def install_fields_filter() -> None:
    """Put :class:`FieldsFilter` on the ``api.db`` logger and every ``api.db.*`` logger made so far."""
    install_package_filter(_FILTER)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call site or a filter added to ``record`` (what is not a LogRecord attribute)."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return redact_text(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the extra fields, the exception text."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        data: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in extra_fields(record).items():
            data.setdefault(name, _jsonable(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = redact_text(record.exc_text)
        return json.dumps(data, default=str)


LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO, log_format: str = "text") -> None:
    """``logging.basicConfig`` with api.db's text format or :class:`JsonFormatter` (``log_format="json"``)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    logging.basicConfig(level=level, format=TEXT_FORMAT)
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    install_fields_filter()
