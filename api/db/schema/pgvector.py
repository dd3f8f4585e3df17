"""pgvector: which versions the framework supports, and which column type holds N dimensions.

The matrix and the dimension limits are data. Versions are compared as
tuples, never as strings ("0.10.0" > "0.9.0"). The live check reads the
installed version from ``pg_extension.extversion`` (the extension is named
``vector``) and the installable one from ``pg_available_extensions``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, NamedTuple

import peewee

from api.db.engines import engine_for
from api.db.engines.info import parse_version
from api.db.exceptions import IncompatibleExtensionError, VectorDimensionError

logger = logging.getLogger(__name__)

Version = tuple[int, ...]


class Support(str, Enum):
    """How the framework stands to a pgvector version."""

    SUPPORTED = "supported"
    UNTESTED = "untested"  # newer than anything tested: probably fine, say so
    UNSUPPORTED = "unsupported"  # lacks what the framework needs
    NOT_INSTALLED = "not_installed"


class VersionRule(NamedTuple):
    """Versions in ``[low, high)`` have ``support``, for ``reason``."""

    low: Version
    high: Version
    support: Support
    reason: str


class KnownDefect(NamedTuple):
    """A defect of versions in ``[low, fixed_in)``; reported as a warning."""

    low: Version
    fixed_in: Version
    description: str


# The support matrix, oldest first. Versions past NEWEST_TESTED are UNTESTED.
PGVECTOR_MATRIX: tuple[VersionRule, ...] = (
    VersionRule((0,), (0, 5, 0), Support.UNSUPPORTED, "no HNSW index type (added in 0.5.0)"),
    VersionRule((0, 5, 0), (0, 6, 0), Support.SUPPORTED, "HNSW and IVFFlat; vector only"),
    VersionRule((0, 6, 0), (0, 7, 0), Support.SUPPORTED, "parallel HNSW builds; vector only, no halfvec"),
    VersionRule((0, 7, 0), (0, 8, 0), Support.SUPPORTED, "halfvec, sparsevec and bit indexing"),
    VersionRule((0, 8, 0), (0, 9, 0), Support.SUPPORTED, "iterative index scans"),
)
NEWEST_TESTED: Version = (0, 8, 6)

# Versions that must not run: using them loses data. check_pgvector_compatibility raises.
KNOWN_BAD: dict[Version, str] = {
    (
        0,
        2,
        7,
    ): "inserts silently corrupt ivfflat indexes (fixed in 0.3.1; recreate ivfflat indexes after upgrading)",
    (
        0,
        3,
        0,
    ): "inserts silently corrupt ivfflat indexes (fixed in 0.3.1; recreate ivfflat indexes after upgrading)",
}

KNOWN_DEFECTS: tuple[KnownDefect, ...] = (
    KnownDefect((0, 6, 0), (0, 8, 2), "buffer overflow in parallel HNSW index builds"),
)

# Dimension limits (pgvector README): storage limit and the limit for an HNSW / IVFFlat index.
VECTOR_MAX_DIMS = 16000
VECTOR_MAX_INDEXED_DIMS = 2000
HALFVEC_MAX_DIMS = 16000
HALFVEC_MAX_INDEXED_DIMS = 4000
HALFVEC_SINCE: Version = (0, 7, 0)
HNSW_SINCE: Version = (0, 5, 0)
INDEX_TYPES = ("hnsw", "ivfflat", "none")


def version_text(version: Version) -> str:
    return ".".join(str(part) for part in version)


@dataclass
class CompatibilityResult:
    """The verdict on one pgvector version, with every reason behind it."""

    version: str | None
    support: Support
    compatible: bool
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    installed_version: str | None = None
    available_version: str | None = None
    update_pending: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["support"] = self.support.value
        return data


def _as_version(version: str | Version) -> Version:
    return parse_version(version) if isinstance(version, str) else tuple(version)


def check_pgvector_compatibility(version: str | Version) -> CompatibilityResult:
    """The verdict on pgvector ``version``; raises IncompatibleExtensionError for known-bad versions."""
    parsed = _as_version(version)
    shown = version_text(parsed)
    if parsed in KNOWN_BAD:
        raise IncompatibleExtensionError(
            f"pgvector {shown} must not be used: {KNOWN_BAD[parsed]}; "
            f"upgrade to {version_text(NEWEST_TESTED)}"
        )
    result = CompatibilityResult(shown, Support.UNTESTED, True)
    for rule in PGVECTOR_MATRIX:
        if rule.low <= parsed < rule.high:
            result.support = rule.support
            result.compatible = rule.support is Support.SUPPORTED
            result.reasons.append(f"pgvector {shown}: {rule.support.value}: {rule.reason}")
            break
    else:
        result.reasons.append(
            f"pgvector {shown} is newer than the newest tested ({version_text(NEWEST_TESTED)}): untested"
        )
        result.warnings.append(f"pgvector {shown} is untested with this framework")
    if result.support is Support.SUPPORTED and parsed > NEWEST_TESTED:
        result.support = Support.UNTESTED
        result.warnings.append(f"pgvector {shown} is untested with this framework")
    for defect in KNOWN_DEFECTS:
        if defect.low <= parsed < defect.fixed_in:
            result.warnings.append(
                f"pgvector {shown} has a known defect: {defect.description}; fixed in "
                f"{version_text(defect.fixed_in)}"
            )
    for message in result.warnings:
        logger.warning("%s", message)
    return result


@dataclass(frozen=True)
class VectorColumnPlan:
    """The column type that holds ``dims`` dimensions with the wanted index, and why."""

    dims: int
    index: str
    column_type: str  # vector or halfvec
    ddl_type: str  # e.g. halfvec(3072)
    reason: str


def _check_plan_arguments(dims: int, index: str, version: str | Version) -> Version:
    """The parsed ``version``; refuses an unknown index type, non-positive dimensions, HNSW before 0.5.0."""
    if index not in INDEX_TYPES:
        raise VectorDimensionError(f"unknown index type {index!r}; use one of {', '.join(INDEX_TYPES)}")
    if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
        raise VectorDimensionError(f"dimensions must be a positive integer, got {dims!r}")
    parsed = _as_version(version)
    if index != "none" and parsed < HNSW_SINCE and index == "hnsw":
        raise VectorDimensionError(
            f"pgvector {version_text(parsed)} has no HNSW index; "
            f"upgrade to {version_text(HNSW_SINCE)} or newer"
        )
    return parsed


def _no_column_fits(
    dims: int, index: str, parsed: Version, vector_limit: int, halfvec_limit: int
) -> VectorDimensionError:
    indexed = index != "none"
    if parsed < HALFVEC_SINCE:
        return VectorDimensionError(
            f"{dims} dimensions cannot be indexed ({index}) on pgvector {version_text(parsed)}: "
            f"vector indexes stop at {VECTOR_MAX_INDEXED_DIMS} and "
            f"halfvec (up to {HALFVEC_MAX_INDEXED_DIMS}) needs pgvector "
            f"{version_text(HALFVEC_SINCE)} or newer; "
            "upgrade pgvector, reduce the dimensions, or use index='none'"
        )
    with_index = "an " + index + " index" if indexed else "no index"
    return VectorDimensionError(
        f"{dims} dimensions exceed every pgvector column type with {with_index} "
        f"(vector {vector_limit}, halfvec {halfvec_limit}); reduce the dimensions"
    )


def plan_vector_column(
    dims: int, index: str = "hnsw", version: str | Version = NEWEST_TESTED
) -> VectorColumnPlan:
    """Choose ``vector`` or ``halfvec`` for ``dims`` on pgvector ``version``.

    Raises VectorDimensionError if neither fits.
    """
    parsed = _check_plan_arguments(dims, index, version)
    indexed = index != "none"
    vector_limit = VECTOR_MAX_INDEXED_DIMS if indexed else VECTOR_MAX_DIMS
    if dims <= vector_limit:
        what = f"an {index} index" if indexed else "no index"
        reason = f"vector holds {dims} <= {vector_limit} dimensions with {what}"
        return VectorColumnPlan(dims, index, "vector", f"vector({dims})", reason)
    halfvec_limit = HALFVEC_MAX_INDEXED_DIMS if indexed else HALFVEC_MAX_DIMS
    if parsed >= HALFVEC_SINCE and dims <= halfvec_limit:
        return VectorColumnPlan(
            dims,
            index,
            "halfvec",
            f"halfvec({dims})",
            f"vector stops at {vector_limit} dimensions with an {index} index; "
            f"halfvec (half precision) holds up to {halfvec_limit}",
        )
    raise _no_column_fits(dims, index, parsed, vector_limit, halfvec_limit)


def _extension_versions(database: peewee.Database) -> tuple[str | None, str | None]:
    installed = database.execute_sql(
        "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
    ).fetchone()
    available = database.execute_sql(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
    ).fetchone()
    return (installed[0] if installed else None, available[0] if available else None)


def check_pgvector(database: peewee.Database) -> CompatibilityResult:
    """Check the live server's pgvector: installed and available versions, verdict, pending update."""
    engine = engine_for(database)
    if not engine.has_extensions:
        reason = f"pgvector exists only on PostgreSQL, not {engine.name}"
        return CompatibilityResult(None, Support.NOT_INSTALLED, False, [reason])
    installed, available = _extension_versions(database)
    if installed is None:
        if available is None:
            reason = "pgvector is not installed on this server (no 'vector' in pg_available_extensions)"
        else:
            reason = f"pgvector {available} is available but not installed: CREATE EXTENSION vector"
        return CompatibilityResult(None, Support.NOT_INSTALLED, False, [reason], available_version=available)
    result = check_pgvector_compatibility(installed)
    result.installed_version = installed
    result.available_version = available
    if available and parse_version(available) != parse_version(installed):
        result.update_pending = True
        result.warnings.append(
            f"pgvector {installed} is installed but {available} is available: "
            "ALTER EXTENSION vector UPDATE is pending"
        )
    return result
