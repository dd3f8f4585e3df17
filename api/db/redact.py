"""Hide credentials before a URL or an error text reaches a log, a message or a response.

Two kinds of masking, both applied by :func:`redact_text`:

* **by position**: the password of ``scheme://user:password@host`` and of ``password=...`` /
  ``passwd: '...'`` pairs (quoted values may hold spaces), whatever its length;
* **by value**: every secret registered with :func:`register_secret` (``connect()`` registers the
  password of each URL, of ``$DATABASE_URL``, of DSNs and keyword arguments), wherever it appears, in
  the forms a user or a driver writes it: plain, percent-encoded (``%40`` or ``+`` for a space),
  SQL-quoted (``''``), backslash- or JSON-escaped. Secrets of :data:`MIN_SECRET_LENGTH` - 1 characters
  or fewer are masked by position only: masking ``abc`` everywhere would garble ordinary text.

:class:`RedactingFilter` applies the same masking to log records of the ``api.db`` loggers before any
handler sees them (:func:`install_log_filter`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter secrets are masked only in URL and DSN positions
PACKAGE_LOGGER = "api.db"

# scheme://user:password@host -> scheme://user:***@host, anywhere in a text; the password may hold '@'.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^\s/]*)@")
# password=secret / passwd='sec ret' / "password": "secret" as drivers and DSNs print them.
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>\b(?:[a-z_]*password|passwd|pwd)\b[\"']?\s*[=:]\s*)"
    r"(?P<secret>'(?:[^'\\]|\\.|'')*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s\"',;&)]+)",
    re.IGNORECASE,
)
# SQL that carries a password as a literal: OPTIONS (password 'x'), IDENTIFIED BY 'x', PASSWORD 'x'.
_SQL_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|identified\s+by)\s+)(?P<secret>'(?:[^'\\]|\\.|'')*'?)", re.IGNORECASE
)

_lock = threading.Lock()
_secrets: set[str] = set()
_forms: tuple[str, ...] = ()  # every written form of every secret, longest first


def _written_forms(secret: str) -> set[str]:
    """The ways ``secret`` appears in text: plain, percent-encoded, SQL-quoted, escaped."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        secret.replace("'", "''"),
        secret.replace("\\", "\\\\").replace("'", "\\'"),
        json.dumps(secret)[1:-1],
        repr(secret)[1:-1],
    }
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def register_secret(secret: str | None) -> None:
    """Mask ``secret`` (and its encoded forms) in every text the package produces from now on."""
    global _forms
    if not secret or not isinstance(secret, str):
        return
    candidates = {secret}
    decoded = unquote(secret)
    if decoded != secret:
        candidates.add(decoded)  # the value as written in a URL, and as the server sees it
    new = {c for c in candidates if len(c) >= MIN_SECRET_LENGTH} - _secrets
    if not new:
        return
    with _lock:
        _secrets.update(new)
        forms = set(_forms)
        for item in new:
            forms |= _written_forms(item)
        _forms = tuple(sorted(forms, key=len, reverse=True))


def register_url_secret(url: str | None) -> None:
    """Register the password of ``url`` (authority or ``password=`` query parameter), if it has one."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return
    register_secret(password)
    for match in _KEYWORD_PASSWORD.finditer(parts.query):
        register_secret(unquote(match.group("secret")))


def known_secret_count() -> int:
    """How many secrets are registered (for tests and diagnostics; never the secrets themselves)."""
    return len(_secrets)


def redact_url(url: str) -> str:
    """Return ``url`` with its password (in the authority or the query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostinfo}"
    query = _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + MASK, parts.query)
    return redact_text(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


def redact_text(text: str, *secrets: str | None) -> str:
    """Mask URL passwords, ``password=...`` pairs, registered secrets and any of ``secrets`` in ``text``."""
    if not isinstance(text, str):
        text = str(text)
    for form in _forms:  # by value first: a known secret may hold the quote that ends a positional match
        if form in text:
            text = text.replace(form, MASK)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    text = _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    text = _SQL_PASSWORD.sub(lambda m: m.group("head") + "'" + MASK + "'", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's rendered message and exception text; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace ``msg``/``args`` by the masked message when masking changes it (formatting stays lazy)."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as logging does
            return True
        masked = redact_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


_FILTER = RedactingFilter()


def install_package_filter(log_filter: logging.Filter) -> None:
    """Put ``log_filter`` on the ``api.db`` logger and every ``api.db.*`` logger made so far (once each)."""
    manager = logging.Logger.manager
    names = [PACKAGE_LOGGER] + [n for n in list(manager.loggerDict) if n.startswith(PACKAGE_LOGGER + ".")]
    for name in names:
        logger = logging.getLogger(name)
        if log_filter not in logger.filters:
            logger.addFilter(log_filter)


def install_log_filter() -> None:
    """Put :class:`RedactingFilter` on the ``api.db`` logger and every ``api.db.*`` logger made so far."""
    install_package_filter(_FILTER)


def package_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the redacting filter installed."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
