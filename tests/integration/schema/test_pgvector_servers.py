"""pgvector checks on three real servers: pgvector 0.8.6, pgvector 0.6.2, and PostgreSQL without pgvector.

The dimension plan is proven, not trusted: what it says works is created on the
server, and what it says cannot work fails there.
"""

from __future__ import annotations

import pytest
from peewee import DatabaseError

from api.db import check_pgvector
from api.db.exceptions import VectorDimensionError
from api.db.schema.pgvector import Support, plan_vector_column

from engines import Engine


@pytest.mark.engines("pgvector", "pgvector_legacy")
def test_installed_version_and_update_pending(engine: Engine, db) -> None:
    before = check_pgvector(db)
    assert before.support is Support.NOT_INSTALLED and "CREATE EXTENSION vector" in before.reasons[0]
    db.execute_sql("CREATE EXTENSION vector")
    result = check_pgvector(db)
    expected = "0.8.6" if engine.name == "pgvector" else "0.6.2"
    assert result.installed_version == expected == result.available_version
    assert result.compatible and not result.update_pending
    defect = [w for w in result.warnings if "parallel HNSW" in w]
    assert bool(defect) is (engine.name == "pgvector_legacy")


@pytest.mark.engines("pgvector")
def test_update_pending_when_an_older_version_is_installed(db) -> None:
    db.execute_sql("CREATE EXTENSION vector")
    # The embedded server ships install scripts for 0.8.6 only, so an older installed
    # version is made by rewriting the catalog row of this throwaway database, as a
    # server upgraded underneath an old extension would show it.
    db.execute_sql("UPDATE pg_extension SET extversion = '0.7.0' WHERE extname = 'vector'")
    result = check_pgvector(db)
    assert result.installed_version == "0.7.0" and result.available_version == "0.8.6"
    assert result.update_pending
    assert any("ALTER EXTENSION vector UPDATE" in w for w in result.warnings)
    db.execute_sql("UPDATE pg_extension SET extversion = '0.8.6' WHERE extname = 'vector'")
    assert not check_pgvector(db).update_pending


@pytest.mark.engines("postgres")
def test_server_without_pgvector(engine: Engine, db) -> None:
    available = db.execute_sql("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    if available is not None:
        pytest.fail(f"the postgres engine ({engine.source}) was expected to lack pgvector; it offers it")
    result = check_pgvector(db)
    assert result.support is Support.NOT_INSTALLED and not result.compatible
    assert "not installed on this server" in result.reasons[0]


@pytest.mark.engines("pgvector", "pgvector_legacy")
@pytest.mark.parametrize("dims", [1536, 3072])
def test_dimension_plan_matches_the_server(engine: Engine, db, dims: int) -> None:
    db.execute_sql("CREATE EXTENSION vector")
    version = check_pgvector(db).installed_version
    assert version is not None
    try:
        plan = plan_vector_column(dims, "hnsw", version)
    except VectorDimensionError:
        # The plan says no type works: prove the server agrees for both types.
        db.execute_sql(f"CREATE TABLE emb_v (id serial PRIMARY KEY, e vector({dims}))")
        with pytest.raises(DatabaseError):
            with db.atomic():
                db.execute_sql("CREATE INDEX ON emb_v USING hnsw (e vector_l2_ops)")
        with pytest.raises(DatabaseError):
            with db.atomic():
                db.execute_sql(f"CREATE TABLE emb_h (id serial PRIMARY KEY, e halfvec({dims}))")
        assert engine.name == "pgvector_legacy" and dims == 3072
        return
    ops = "halfvec_l2_ops" if plan.column_type == "halfvec" else "vector_l2_ops"
    db.execute_sql(f"CREATE TABLE emb (id serial PRIMARY KEY, e {plan.ddl_type})")
    db.execute_sql(f"CREATE INDEX emb_hnsw ON emb USING hnsw (e {ops})")
    assert db.execute_sql("SELECT count(*) FROM pg_indexes WHERE indexname = 'emb_hnsw'").fetchone()[0] == 1
    if plan.column_type == "halfvec":
        # And plain vector would have failed here.
        db.execute_sql(f"CREATE TABLE emb_plain (id serial PRIMARY KEY, e vector({dims}))")
        with pytest.raises(DatabaseError, match="2000"):
            with db.atomic():
                db.execute_sql("CREATE INDEX ON emb_plain USING hnsw (e vector_l2_ops)")
