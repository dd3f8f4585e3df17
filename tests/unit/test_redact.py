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


# ---------------------------------------------------------------- redaction by value

import logging  # noqa: E402
from collections.abc import Iterator  # noqa: E402

from api.db import redact  # noqa: E402
from api.db.exceptions import MigrationError  # noqa: E402
from api.db.redact import RedactingFilter, register_secret, register_url_secret  # noqa: E402


@pytest.fixture
def secrets() -> Iterator[None]:
    """Secrets registered by the test are forgotten afterwards."""
    saved = (set(redact._secrets), redact._forms)
    yield
    redact._secrets.clear()
    redact._secrets.update(saved[0])
    redact._forms = saved[1]


def test_a_registered_secret_is_masked_in_every_written_form(secrets: None) -> None:
    register_secret("Zq s@'cret")
    for form in ("Zq s@'cret", "Zq%20s%40%27cret", "Zq+s%40%27cret", "Zq s@''cret", "Zq s@\\'cret"):
        assert "cret" not in redact_text(
            f"CREATE USER MAPPING ... OPTIONS (password '{form}') failed: {form}"
        )


def test_url_passwords_register_and_short_ones_are_masked_by_position_only(secrets: None) -> None:
    register_url_secret("postgresql://app:Zq%23secret1@db/x?sslpassword=Other-pw1")
    assert redact_text("leaked Zq#secret1 and Zq%23secret1 and Other-pw1") == "leaked *** and *** and ***"
    register_url_secret("postgresql://app:abc@db/x")
    assert redact_text("abc in prose stays") == "abc in prose stays"
    assert redact_text("postgresql://app:abc@db/x") == "postgresql://app:***@db/x"


def test_passwords_holding_at_signs_or_quoted_spaces_are_masked_by_position() -> None:
    assert redact_text("postgresql://app:p@ss@db/x") == "postgresql://app:***@db/x"
    assert "my secret" not in redact_text("dsn: host=db password='my secret pw' user=app")
    assert "hunter22" not in redact_text("ALTER USER app IDENTIFIED BY 'hunter22'")


def test_package_errors_mask_registered_secrets(secrets: None) -> None:
    register_secret("Zq-secret-9")
    assert "Zq-secret-9" not in str(MigrationError("statement SELECT 'Zq-secret-9' failed"))


def test_log_filter_masks_args_and_keeps_lazy_formatting(secrets: None) -> None:
    register_secret("Zq-secret-9")
    record = logging.LogRecord(
        "api.db.x", logging.ERROR, __file__, 1, "failed %s at %d", ("Zq-secret-9", 3), None
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "failed *** at 3"
    clean = logging.LogRecord("api.db.x", logging.ERROR, __file__, 1, "n=%d", (3,), None)
    RedactingFilter().filter(clean)
    assert clean.msg == "n=%d" and clean.args == (3,)  # untouched when there is nothing to mask


def test_every_package_logger_filters_before_handlers(
    secrets: None, caplog: pytest.LogCaptureFixture
) -> None:
    import api.db  # noqa: F401 - installs the filter on every api.db logger

    register_secret("Zq-secret-9")
    with caplog.at_level(logging.INFO):
        logging.getLogger("api.db.pool.connect").warning("url had %s", "Zq-secret-9")
    assert "Zq-secret-9" not in caplog.text and "url had ***" in caplog.text
