"""A process that boots like an application replica: ``python boot_child.py URL [MARKER]``.

Prints its MigrationReport as JSON. With ``APIDB_SLOW=1`` the second migration
touches ``MARKER`` after its first operation and then sleeps (``APIDB_SLOW=sql``:
runs ``pg_sleep(60)`` on the server), so that a test can kill the process in the
middle of it. The migration code is the same either way
(same checksums), as for a replica that crashed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from peewee import CharField, IntegerField  # noqa: E402

from api.db import Migration, connect, migrate_db  # noqa: E402


def _slow_second(m: object) -> None:
    m.add_column("item", "size", IntegerField(null=True))  # type: ignore[attr-defined]
    if os.environ.get("APIDB_SLOW") == "1":
        Path(sys.argv[2]).write_text(str(os.getpid()))
        time.sleep(60)
    elif os.environ.get("APIDB_SLOW") == "sql":  # a long statement on the server (PostgreSQL)
        Path(sys.argv[2]).write_text(str(os.getpid()))
        m.db.execute_sql("SELECT pg_sleep(60)")  # type: ignore[attr-defined]
    m.add_column("item", "label", CharField(max_length=40, null=True))  # type: ignore[attr-defined]


MIGRATIONS = [
    ("create_item", lambda m: m.sql("CREATE TABLE item (id INTEGER PRIMARY KEY, name VARCHAR(20))")),
    Migration("add_size_and_label", _slow_second),
    ("add_kind",
     lambda m: m.add_column("item", "kind", CharField(max_length=20, null=False, default="plain"))),
    ("index_kind", lambda m: m.add_index("item", ("kind",))),
]


def main() -> int:
    db = connect(sys.argv[1])
    report = migrate_db(db, MIGRATIONS, lock_timeout=120)
    print(json.dumps(report.to_dict()))
    close_all = getattr(db, "close_all", None)
    if close_all:
        close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
