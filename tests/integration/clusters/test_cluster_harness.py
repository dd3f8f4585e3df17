"""The harness itself: free ports, REQUIRE_CLUSTERS, missing packages, a failed start names its logs."""

from __future__ import annotations

import glob

import pytest

import clusters


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = clusters.free_ports(12)
    assert len(set(ports)) == 12
    assert all(1024 < port < 65536 for port in ports)


def test_require_clusters_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUIRE_CLUSTERS", "pgbouncer, galera")
    assert clusters.required_clusters() == {"pgbouncer", "galera"}
    monkeypatch.setenv("REQUIRE_CLUSTERS", "pgbouncer,redis")
    with pytest.raises(ValueError, match="redis"):
        clusters.required_clusters()


def test_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(clusters.REQUIREMENTS, "galera", [("/nonexistent/mariadbd", "mariadb-server")])
    assert clusters.missing_packages("galera") == ["mariadb-server"]


@pytest.mark.skipif(clusters.missing_packages("pgbouncer") != [], reason="pgbouncer not installed")
def test_failed_start_names_its_log_files() -> None:
    expected = r"see /tmp/apidb-pgbouncer-bogus-\w+/pgbouncer.log"
    with pytest.raises(clusters.ClusterStartError, match=expected):
        with clusters.start_pgbouncer("bogus"):
            pass  # pragma: no cover
    for root in glob.glob("/tmp/apidb-pgbouncer-bogus-*"):
        clusters.shutil.rmtree(root, ignore_errors=True)
