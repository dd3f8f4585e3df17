"""Fork safety: a forked child forgets the connections it inherited, without a word on their sockets.

A pool (or a probe connection) opened before ``fork()`` (gunicorn ``--preload``, uWSGI without
``lazy-apps``, ``multiprocessing`` with the fork start method) leaves the parent and every child
holding the same sockets: two processes then read each other's replies. In the child, each
inherited socket's descriptor is pointed at ``/dev/null`` (``os.dup2``) before the driver object
is dropped, so whatever the driver sends when it is collected (PostgreSQL's Terminate, MySQL's
COM_QUIT) goes nowhere and the parent's sessions stay intact; the child opens its own on demand.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

# Objects with an ``_after_fork_in_child()`` method (pools, health checkers, metric exporters), weakly held,
# in registration order: a pool resets its counters before an exporter built on it reads them.
_REGISTERED: list[weakref.ref[Any]] = []
_HOOKS: list[Callable[[], None]] = []


def register(owner: Any) -> None:
    """Call ``owner._after_fork_in_child()`` in every child forked while ``owner`` lives."""
    _REGISTERED[:] = [ref for ref in _REGISTERED if ref() is not None]
    _REGISTERED.append(weakref.ref(owner))


def on_fork_in_child(hook: Callable[[], None]) -> None:
    """Run ``hook`` in every forked child, after the registered owners have forgotten their connections."""
    _HOOKS.append(hook)


def detach_descriptors(fds: Iterable[int | None]) -> int:
    """Point each descriptor at ``/dev/null`` so the socket it named is never written to again here."""
    wanted = sorted({fd for fd in fds if fd is not None and fd >= 0})
    if not wanted:
        return 0
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in wanted:
            os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    return len(wanted)


def _after_fork_in_child() -> None:
    for ref in list(_REGISTERED):
        owner = ref()
        if owner is None:
            continue
        try:
            owner._after_fork_in_child()
        except Exception as exc:  # a child must start even if one owner could not reset itself
            logger.error("after fork: %r could not drop its inherited connections: %s", owner, exc)
    for hook in list(_HOOKS):
        hook()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
