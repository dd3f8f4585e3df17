"""Hide credentials before a URL or an error text reaches a log, a message or a response."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# scheme://user:password@host -> scheme://user:***@host, anywhere in a text.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)@")
# password=secret / passwd='secret' / "password": "secret" as drivers and DSNs print them.
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd)\b[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^\s\"',;&)]+)",
    re.IGNORECASE,
)


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
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, *secrets: str | None) -> str:
    """Mask URL passwords, ``password=...`` pairs and any of ``secrets`` found in ``text``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    text = _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
