"""gunicorn settings for the examples: ``gunicorn -c examples/gunicorn_conf.py ...``.

With ``PROMETHEUS_MULTIPROC_DIR`` set (an empty directory, shared by the workers), ``/metrics``
sums every worker's counters; a worker that exits keeps its counters and loses its live gauges.
"""

from __future__ import annotations

import os
from typing import Any

workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
timeout = 30
graceful_timeout = 10


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended: its pool gauges leave the multiprocess sums."""
    from api.db.health.metrics import mark_process_dead

    mark_process_dead(worker.pid)
