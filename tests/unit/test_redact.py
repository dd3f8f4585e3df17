from __future__ import annotations

import pytest

from api.db.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("mysql://root@db/x", "mysql://root@db/x"),
        ("postgresql://u@/x?host=/tmp&password=s3cret", "postgresql://u@/x?host=/tmp&password=***"),
        ("postgresql://u:p%40ss@db/x", "postgresql://u:***@db/x"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_masks_urls_keywords_and_explicit_secrets() -> None:
    text = "failed: postgresql://app:s3cret@db/x password=s3cret passwd='abc' token XYZ"
    masked = redact_text(text, "XYZ")
    assert "s3cret" not in masked and "abc" not in masked and "XYZ" not in masked
    assert "postgresql://app:***@db/x" in masked
