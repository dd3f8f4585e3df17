"""A process that boots with one backfill: ``python backfill_child.py URL``.

The backfill adds 1 to ``item.counter`` (not idempotent: a row updated twice shows 2) in batches
of 500 with a pause, so that a test can SIGKILL it in the middle; the code is the same for the
boot that resumes it (same checksums), as for a replica that crashed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from peewee import SQL  # noqa: E402

from api.db import Migration, connect, migrate_db  # noqa: E402

MIGRATIONS = [
    Migration("bump_counter", lambda m: m.backfill("item", "counter", SQL("counter + 1"), batch_size=500,
                                                   pause=0.02), atomic=False),  # fmt: skip
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
