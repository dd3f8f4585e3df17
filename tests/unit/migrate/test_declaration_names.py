"""Migration names: control characters refused, and a digest that no two name lists share."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from api.db.exceptions import MigrationDeclarationError
from api.db.migrate.declarations import (
    DIGEST_VERSION,
    _quick_names,
    digest_payload,
    migrations_digest,
    plan_migrations,
)


def noop(m: object) -> None:
    return None


@pytest.mark.parametrize(
    ("name", "position"),
    [("a\nb", 1), ("a\x00b", 1), ("ab\tc", 2), ("a\rb", 1), ("x\x1b[0m", 1), ("a\x7fb", 1)],
)
def test_control_characters_are_refused_with_their_position(name: str, position: int) -> None:
    items = [(name, noop)]
    assert _quick_names(items) is None  # the fast path never accepts it
    with pytest.raises(MigrationDeclarationError) as caught:
        plan_migrations(items)
    text = str(caught.value)
    assert f"at position {position}" in text and "control character" in text


def test_the_issue_regression_newlines_and_joined_names() -> None:
    # Joined with newlines, ["a\nb", "c"] and ["a", "b\nc"] had one digest: both are refused now.
    for names in (["a\nb", "c"], ["a", "b\nc"]):
        with pytest.raises(MigrationDeclarationError):
            plan_migrations([(n, noop) for n in names])
    assert migrations_digest(["ab", "c"]) != migrations_digest(["a", "bc"])
    assert migrations_digest(["a,b"]) != migrations_digest(["a", "b"])


def test_printable_unicode_names_still_take_the_fast_path() -> None:
    items = [("001_café", noop), ("002_索引", noop)]
    assert _quick_names(items) == ["001_café", "002_索引"]
    assert [m.name for m in plan_migrations(items)] == ["001_café", "002_索引"]


# Every string of up to two characters over an alphabet with each separator an encoding could
# confuse (comma, colon, quote, backslash, newline, NUL, brackets, a lone surrogate...): near-collisions
# such as ["ab", "c"] / ["a", "bc"] come up all the time. Drawn from a pool, to keep 10,000 cases fast.
ALPHABET = list('ab,:"\\\n\x00[] ') + ["\u2028", "\ud800", "é"]
POOL = sorted({""} | set(ALPHABET) | {x + y for x in ALPHABET for y in ALPHABET})
NAMES = st.lists(st.sampled_from(POOL), max_size=4)


@settings(
    max_examples=10_000,
    deadline=None,
    database=None,  # nothing written into the work tree
    phases=(Phase.generate, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(NAMES, NAMES)
def test_two_different_name_lists_never_share_a_digest(a: list[str], b: list[str]) -> None:
    assume(a != b)
    assert migrations_digest(a) != migrations_digest(b)
    # The text hashed decodes back to the list: the encoding itself is injective, not just the hash lucky.
    assert json.loads(digest_payload(a)) == [DIGEST_VERSION, *a]


def test_digest_cost_stays_small() -> None:
    names = [f"{i:04d}_migration" for i in range(500)]
    started = time.perf_counter()
    for _ in range(100):
        migrations_digest(names)
    assert (time.perf_counter() - started) / 100 < 0.005  # well under a millisecond per boot, in practice
