"""A replica booting with non-idempotent migrations: ``python lock_child.py URL ROUND``.

Declares the migrations of rounds 0..ROUND (earlier rounds are applied already): per round a
table created (and a row marking its creation), a counter incremented with UPDATE, two rows
inserted. Environment: ``API_DB_MIGRATION_LOCK`` / ``API_DB_LEASE_TTL`` as for any application;
``APIDB_SLEEP``: seconds each migration sleeps after its statement (to be killed in between);
``APIDB_HOLDER_FILE``: the first process to run a migration writes its pid there; ``APIDB_SLOW_SQL``:
a server-side sleep statement run by the count migration (to end its session from outside).

Prints one JSON line: the report, or the error. Exit 0 on success, 3 on an ApiDbError, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from api.db import connect, migrate_db  # noqa: E402
from api.db.exceptions import ApiDbError  # noqa: E402


def _mark_holder() -> None:
    path = os.environ.get("APIDB_HOLDER_FILE")
    if not path:
        return
    try:
        with open(path, "x") as handle:
            handle.write(str(os.getpid()))
    except FileExistsError:
        pass


def _step(m: Any, *statements: str) -> None:
    _mark_holder()
    for statement in statements:
        m.sql(statement)
    pause = float(os.environ.get("APIDB_SLEEP", "0") or 0)
    if pause:
        time.sleep(pause)


def _count(m: Any, r: int) -> None:
    _step(m, f"UPDATE lock_counter SET n = n + 1 WHERE round = {r}")
    slow = os.environ.get("APIDB_SLOW_SQL")
    if slow:
        m.sql(slow)


def round_migrations(r: int) -> list[tuple[str, Any]]:
    """The three migrations of round ``r``."""
    return [
        (f"r{r:02d}_create", lambda m: _step(m, f"CREATE TABLE lock_t{r} (id INTEGER PRIMARY KEY)",
                                             f"INSERT INTO lock_rows (round, k) VALUES ({r}, 0)")),
        (f"r{r:02d}_count", lambda m: _count(m, r)),
        (f"r{r:02d}_rows", lambda m: _step(m, f"INSERT INTO lock_rows (round, k) VALUES ({r}, 1), ({r}, 2)")),
    ]


def migrations_upto(r: int) -> list[tuple[str, Any]]:
    return [item for i in range(r + 1) for item in round_migrations(i)]


def main() -> int:
    db = connect(sys.argv[1])
    try:
        report = migrate_db(db, migrations_upto(int(sys.argv[2])), lock_timeout=90)
    except ApiDbError as exc:
        print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)[:2000]}))
        traceback.print_exc()
        return 3
    finally:
        getattr(db, "close_all", db.close)()
    print(json.dumps({"ok": True, "report": report.to_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
