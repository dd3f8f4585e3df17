"""The pgvector matrix and dimension planning, as data: no server needed."""

from __future__ import annotations

import logging

import pytest

from api.db.exceptions import IncompatibleExtensionError, VectorDimensionError
from api.db.schema.pgvector import Support, check_pgvector_compatibility, plan_vector_column


@pytest.mark.parametrize(
    ("version", "support", "compatible"),
    [
        ("0.4.4", Support.UNSUPPORTED, False),
        ("0.5.0", Support.SUPPORTED, True),
        ("0.5.1", Support.SUPPORTED, True),
        ("0.6.2", Support.SUPPORTED, True),
        ("0.7.4", Support.SUPPORTED, True),
        ("0.8.0", Support.SUPPORTED, True),
        ("0.8.6", Support.SUPPORTED, True),
        ("0.8.9", Support.UNTESTED, True),
        ("0.9.0", Support.UNTESTED, True),
        ("0.10.0", Support.UNTESTED, True),
    ],
)
def test_matrix(version: str, support: Support, compatible: bool) -> None:
    result = check_pgvector_compatibility(version)
    assert result.support is support
    assert result.compatible is compatible
    assert result.reasons, "every verdict carries its reason"


def test_versions_compare_as_versions_not_strings() -> None:
    # As strings "0.10.0" < "0.5.0"; as versions it is newer than anything tested.
    assert check_pgvector_compatibility("0.10.0").support is Support.UNTESTED
    assert check_pgvector_compatibility((0, 4, 9)).support is Support.UNSUPPORTED


def test_unsupported_names_hnsw() -> None:
    assert "HNSW" in check_pgvector_compatibility("0.4.0").reasons[0]


@pytest.mark.parametrize("version", ["0.2.7", "0.3.0"])
def test_known_bad_versions_raise(version: str) -> None:
    with pytest.raises(IncompatibleExtensionError, match="0.3.1"):
        check_pgvector_compatibility(version)


def test_untested_version_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="api.db.schema.pgvector"):
        result = check_pgvector_compatibility("0.9.1")
    assert any("untested" in w for w in result.warnings)
    assert any("untested" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("version", "affected"), [("0.5.1", False), ("0.6.0", True), ("0.8.1", True), ("0.8.2", False)]
)
def test_parallel_hnsw_defect_window(version: str, affected: bool) -> None:
    warnings = check_pgvector_compatibility(version).warnings
    hit = [w for w in warnings if "parallel HNSW" in w]
    assert bool(hit) is affected
    if affected:
        assert "fixed in 0.8.2" in hit[0]


@pytest.mark.parametrize(
    ("dims", "index", "version", "column"),
    [
        (1536, "hnsw", "0.6.2", "vector"),
        (2000, "ivfflat", "0.5.0", "vector"),
        (3072, "none", "0.6.2", "vector"),
        (3072, "hnsw", "0.7.0", "halfvec"),
        (3072, "hnsw", "0.8.6", "halfvec"),
        (4000, "ivfflat", "0.8.6", "halfvec"),
        (16000, "none", "0.5.0", "vector"),
    ],
)
def test_dimension_plan(dims: int, index: str, version: str, column: str) -> None:
    plan = plan_vector_column(dims, index, version)
    assert plan.column_type == column
    assert plan.ddl_type == f"{column}({dims})"


@pytest.mark.parametrize(
    ("dims", "index", "version", "fragment"),
    [
        (3072, "hnsw", "0.6.2", "needs pgvector 0.7.0"),
        (4001, "hnsw", "0.8.6", "reduce the dimensions"),
        (16001, "none", "0.8.6", "reduce the dimensions"),
        (0, "hnsw", "0.8.6", "positive integer"),
        (128, "diskann", "0.8.6", "unknown index type"),
    ],
)
def test_dimension_plan_fails_clearly(dims: int, index: str, version: str, fragment: str) -> None:
    with pytest.raises(VectorDimensionError, match=fragment):
        plan_vector_column(dims, index, version)
