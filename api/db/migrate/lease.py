"""The lease: a migration lock that is one row of ``migration_lock``, valid through poolers and on clusters.

The row (``name`` = ``migrate``) carries the holder's random ``token``, its ``owner`` (host:pid), a
``generation`` that grows on each takeover, and ``acquired_at`` / ``renewed_at`` / ``expires_at`` as
epoch seconds of the SERVER clock (each engine's ``lease_now_sql``). Every statement is a short
committed transaction, so the lease works through a transaction pooler (PgBouncer) and replicates
on Galera, where a certification conflict means that someone else won.

* acquire: read the row; none: INSERT it; expired: UPDATE it, compare-and-swap on the old token
  (generation + 1); then read it back and own it only if the token is ours. Polled with backoff.
* heartbeat: a named daemon thread on its own connection renews ``expires_at`` every ttl/3;
  0 rows, or no renewal for longer than the ttl, marks the lease lost.
* fencing: :meth:`Lease.check` before each migration (the heartbeat's flag, no round trip), and
  :meth:`Lease.fenced` around each history write: in the same transaction, the row is touched
  ``WHERE token AND generation``; 0 rows (or a certification conflict) raises MigrationLockLost,
  and the write is rolled back.
* release: DELETE ``WHERE token``; 0 rows is MigrationLockLost.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import random
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import peewee

from api.db.engines import engine_for
from api.db.engines.base import describe_holder
from api.db.error_handler import ErrorCategory, classify_error
from api.db.exceptions import MigrationLockLost, MigrationLockTimeout
from api.db.migrate.tables import create_tables_race_free

logger = logging.getLogger(__name__)

LOCK_TABLE = "migration_lock"
LOCK_ROW = "migrate"
DEFAULT_TTL = 30.0
MIN_TTL = 0.5
# Answers that mean "another holder is writing the row right now": wait and try again.
CONTENTION = frozenset(
    {ErrorCategory.DEADLOCK, ErrorCategory.SERIALIZATION_FAILURE, ErrorCategory.LOCK_TIMEOUT}
)


# -- timing (pure arithmetic) ------------------------------------------------------------


def heartbeat_interval(ttl: float) -> float:
    """Seconds between two renewals: a third of the ttl, so two renewals may fail before expiry."""
    return ttl / 3.0


def next_delay(delay: float, maximum: float) -> float:
    """The next poll delay while waiting for the lease: doubled, capped."""
    return min(delay * 2.0, maximum)


def jittered(delay: float) -> float:
    """``delay`` spread over [0.5, 1.5) of itself, so that booters do not poll in step."""
    return delay * (0.5 + random.random())


def is_expired(expires_at: float, now: float) -> bool:
    """Whether a lease that expires at ``expires_at`` may be taken over at server time ``now``."""
    return expires_at < now


def renewal_overdue(last_renewed: float, now: float, ttl: float) -> bool:
    """Whether the holder went longer than the ttl without a renewal (monotonic seconds)."""
    return now - last_renewed > ttl


# -- the row -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseRow:
    """The lock row as read, with the server's time of the read."""

    token: str
    owner: str
    generation: int
    acquired_at: float
    renewed_at: float
    expires_at: float
    now: float

    def holder(self) -> dict[str, Any]:
        """The holder, as MigrationLockTimeout and the waiting log line name it."""
        since = datetime.datetime.fromtimestamp(self.acquired_at, datetime.timezone.utc)
        return {
            "owner": self.owner,
            "token": self.token[:8],
            "generation": self.generation,
            "since": since.isoformat(timespec="seconds"),
            "expires_in": f"{self.expires_at - self.now:.1f} s",
        }


def lock_model(db: peewee.Database) -> Any:
    """The ``migration_lock`` table as a model bound to ``db`` (for its race-free creation)."""

    class MigrationLock(peewee.Model):
        name = peewee.CharField(max_length=64, primary_key=True)
        token = peewee.CharField(max_length=64)
        owner = peewee.CharField(max_length=255)
        generation = peewee.BigIntegerField()
        acquired_at = peewee.DoubleField()  # epoch seconds of the server clock
        renewed_at = peewee.DoubleField()
        expires_at = peewee.DoubleField()

        class Meta:
            table_name = LOCK_TABLE

    MigrationLock.bind(db)
    return MigrationLock


_COLUMNS = "token, owner, generation, acquired_at, renewed_at, expires_at"
_READ = "SELECT {cols}, {now} FROM {t} WHERE name = {p}"
_INSERT = (
    "INSERT INTO {t} (name, token, owner, generation, acquired_at, renewed_at, expires_at) "
    "VALUES ({p}, {p}, {p}, 1, {now}, {now}, {now} + {p})"
)
_TAKE_OVER = (
    "UPDATE {t} SET token = {p}, owner = {p}, generation = generation + 1, acquired_at = {now}, "
    "renewed_at = {now}, expires_at = {now} + {p} WHERE name = {p} AND token = {p} AND expires_at < {now}"
)
_RENEW = (
    "UPDATE {t} SET renewed_at = {now}, expires_at = {now} + {p} "
    "WHERE name = {p} AND token = {p} AND generation = {p}"
)
_RELEASE = "DELETE FROM {t} WHERE name = {p} AND token = {p}"


class Lease:
    """One process's claim on the lease row: acquire, heartbeat, check, fence, release."""

    strategy = "lease"

    def __init__(self, db: peewee.Database, ttl: float = DEFAULT_TTL, *, reason: str = "requested") -> None:
        from api.db.migrate.tracker import installed_by

        self.db = db
        self.engine = engine_for(db)
        self.ttl = float(ttl)
        self.reason = reason
        self.owner = self.token = uuid.uuid4().hex
        self.holder_name = installed_by()
        self.generation: int | None = None
        self.lost_reason: str | None = None
        self.last_renewed = 0.0  # monotonic time of the last renewal that answered
        # The outermost transaction whose own level already touched the lease row: the row stays locked
        # (PostgreSQL, SQLite's write lock) and certified (Galera) with it until it ends, so later
        # history writes in it need no touch of their own.
        self._touched_in: Any = None
        self._busy = False  # the last attempt met a locked file (SQLite)
        self._heartbeat: Heartbeat | None = None
        self._conn: Any = None

    def __repr__(self) -> str:
        return f"<Lease {self.token[:8]} generation={self.generation} lost={self.lost_reason!r}>"

    # -- statements ------------------------------------------------------------------

    def _sql(self, template: str) -> str:
        q = self.db.quote
        table = f"{q[0]}{LOCK_TABLE}{q[1]}"
        return template.format(t=table, p=self.db.param, now=self.engine.lease_now_sql, cols=_COLUMNS)

    def _execute(self, template: str, params: tuple[Any, ...], db: peewee.Database | None = None) -> int:
        """Run one statement (its own committed transaction outside a caller's); the rows it touched."""
        cursor = (db or self.db).execute_sql(self._sql(template), params)
        return int(cursor.rowcount or 0)

    def read(self) -> LeaseRow | None:
        """The lock row now, or None when nobody holds the lease."""
        row = self.db.execute_sql(self._sql(_READ), (LOCK_ROW,)).fetchone()
        if row is None:
            return None
        token, owner, generation, acquired, renewed, expires, now = row
        return LeaseRow(str(token), str(owner), int(generation), float(acquired), float(renewed),
                        float(expires), float(now))  # fmt: skip

    def holder(self) -> dict[str, Any]:
        """Who holds the lease now (empty when nobody, or when it cannot be read)."""
        try:
            row = self.read()
        except peewee.DatabaseError:  # a locked file or a missing table: nobody can be named
            return {}
        return row.holder() if row else {}

    # -- acquire ---------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """One attempt; True when the row now carries our token."""
        try:
            if not self._claim():
                return False
            mine = self.read()
        except peewee.IntegrityError:  # another booter inserted the row first
            return False
        except peewee.DatabaseError as exc:
            info = classify_error(exc, self.engine.name)
            if info.category not in CONTENTION:
                raise
            self._busy = True
            logger.debug("lease attempt met a concurrent writer (%s: %s)", info.category.value, info.message)
            return False
        self._busy = False
        if mine is None or mine.token != self.token:
            return False
        self.generation = mine.generation
        self.last_renewed = time.monotonic()
        return True

    def _claim(self) -> bool:
        """INSERT the row, or take an expired one over; False when it is held and valid."""
        row = self.read()
        if row is None:
            self._execute(_INSERT, (LOCK_ROW, self.token, self.holder_name, self.ttl))
            return True
        if not is_expired(row.expires_at, row.now):
            return False
        logger.warning(
            "the migration lease of %s (generation %d) expired %.1f s ago; taking it over",
            row.owner, row.generation, row.now - row.expires_at,
        )  # fmt: skip
        params = (self.token, self.holder_name, self.ttl, LOCK_ROW, row.token)
        return self._execute(_TAKE_OVER, params) == 1

    def acquire(self, timeout: float) -> None:
        """Take the lease within ``timeout`` seconds, then start the heartbeat; else MigrationLockTimeout."""
        deadline = time.monotonic() + timeout
        delay = self.engine.lock_poll_first
        logged = False
        created = False
        while True:
            created = created or self._ensure_table()
            if created and self.try_acquire():
                break
            if time.monotonic() >= deadline:
                raise self.timeout_error(timeout)
            if not logged:
                logger.info("waiting for the migration lease, held by %s", describe_holder(self.holder()))
                logged = True
            time.sleep(min(jittered(delay), max(0.0, deadline - time.monotonic())))
            delay = next_delay(delay, self.engine.lock_poll_max)
        self._conn = self.db.connection()
        self._start_heartbeat()
        logger.debug("migration lease taken (token %s, generation %s)", self.token[:8], self.generation)

    def _ensure_table(self) -> bool:
        """Create the lock table if needed; False when a writer holds the file meanwhile (SQLite)."""
        try:
            create_tables_race_free(self.db, [lock_model(self.db)])
        except peewee.DatabaseError as exc:
            if classify_error(exc, self.engine.name).category not in CONTENTION:
                raise
            self._busy = True
            return False
        return True

    def timeout_error(self, timeout: float) -> MigrationLockTimeout:
        """The timeout error, naming the holder of the lease (or the writer that kept the file locked)."""
        holder = self.holder()
        if not holder and self._busy and self.engine.lease_busy_text:
            text = self.engine.lease_busy_text.format(database=self.db.database, timeout=timeout)
            return MigrationLockTimeout(text, holder={})
        return MigrationLockTimeout(
            f"the migration lease was not free within {timeout:g} s; held by {describe_holder(holder)}. "
            "Another instance is probably migrating: wait for it; if it died, its lease expires "
            "(expires_in) and the next boot takes over",
            holder=holder,
        )

    # -- heartbeat -------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        database = self.engine.lease_database()
        if database is None:  # :memory: SQLite: nobody else can see the lease anyway
            return
        self._heartbeat = Heartbeat(self, database, heartbeat_interval(self.ttl))
        self._heartbeat.start()

    def beat(self, database: peewee.Database) -> bool:
        """One renewal on the heartbeat's connection; False once the lease is lost."""
        if self.lost_reason is not None:
            return False
        try:
            database.connect(reuse_if_open=True)
            renewed = self._execute(_RENEW, (self.ttl, LOCK_ROW, self.token, self.generation), database)
        except peewee.DatabaseError as exc:
            return self._renewal_failed(database, exc)
        if renewed != 1:
            self.lose("the lease row no longer carries this holder's token (it expired and was taken over)")
            return False
        self.last_renewed = time.monotonic()
        return True

    def _renewal_failed(self, database: peewee.Database, exc: BaseException) -> bool:
        info = classify_error(exc, self.engine.name)
        with contextlib.suppress(Exception):
            database.close()  # reconnect on the next beat
        if info.category in CONTENTION and self.engine.renewal_blocked(self._conn):
            logger.debug("lease renewal waits for this holder's own transaction (%s)", info.message)
            return True
        if renewal_overdue(self.last_renewed, time.monotonic(), self.ttl):
            why = f"{info.category.value}: {info.message}"
            self.lose(f"the lease could not be renewed for {self.ttl:g} s ({why})")
            return False
        logger.warning(
            "could not renew the migration lease (%s: %s); retrying", info.category.value, info.message
        )
        return True

    def lose(self, reason: str) -> None:
        """Mark the lease lost (the first reason wins)."""
        if self.lost_reason is None:
            self.lost_reason = reason
            logger.error("migration lease %s lost: %s", self.token[:8], reason)

    # -- fencing ---------------------------------------------------------------------

    def lost_error(self) -> MigrationLockLost:
        return MigrationLockLost(
            f"this process lost the migration lease (token {self.token[:8]}, generation {self.generation}): "
            f"{self.lost_reason}; it stopped and wrote no further history; the next boot completes the run",
            strategy=self.strategy,
            owner=self.token,
        )

    @property
    def fence(self) -> peewee.ColumnBase:
        """A condition for a history write: the lease row still carries our token and generation.

        Weaker than :meth:`fenced` on Galera (a read is not certified) and on PostgreSQL (no row
        lock): use both.
        """
        sql = self._sql("SELECT 1 FROM {t} WHERE name = {p} AND token = {p} AND generation = {p}")
        params = (LOCK_ROW, self.token, self.generation)
        expression: peewee.ColumnBase = peewee.fn.EXISTS(peewee.SQL(sql, params))
        return expression

    def check(self) -> None:
        """Raise MigrationLockLost when the heartbeat found the lease lost (no round trip)."""
        if self.lost_reason is not None:
            raise self.lost_error()

    @contextlib.contextmanager
    def fenced(self) -> Iterator[None]:
        """A history write, in one transaction with a touch of the lease row that proves we still hold it."""
        self.check()
        outermost = self._outermost()
        if outermost is not None and outermost is self._touched_in:
            yield  # this transaction touched the row at its own level: still ours until it ends
            return
        try:
            # In a transaction already, the touch and the write share it: a failure rolls back the whole.
            with contextlib.nullcontext() if self.db.in_transaction() else self.db.atomic():
                params = (self.ttl, LOCK_ROW, self.token, self.generation)
                if self._execute(_RENEW, params) != 1:
                    self.lose("the lease row no longer carries this holder's token (history write fence)")
                    raise self.lost_error()
                yield
        except peewee.DatabaseError as exc:
            info = classify_error(exc, self.engine.name)
            if info.category not in CONTENTION:
                raise
            self.lose(f"a history write conflicted with another writer of the lease ({info.message})")
            raise self.lost_error() from exc
        self.last_renewed = time.monotonic()
        self._touched_in = outermost

    def _outermost(self) -> Any:
        """This thread's outermost open transaction when the caller writes at its level, else None.

        A touch inside a savepoint may be rolled back with it (and its row lock released): only a
        touch at the transaction's own level is remembered. peewee keeps the open ones in a list.
        """
        transactions = cast(Any, self.db)._state.transactions
        return transactions[0] if len(transactions) == 1 else None

    # -- release ---------------------------------------------------------------------

    def release(self) -> None:
        """Stop the heartbeat and delete the row if it is still ours; MigrationLockLost if it was not."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        removed = self._delete()
        if self.lost_reason is None and removed != 1:
            self.lose("the lease row was gone or another holder's at release")
        if self.lost_reason is not None:
            raise self.lost_error()
        logger.debug("migration lease %s released", self.token[:8])


    def _delete(self) -> int:
        """DELETE our row; on a fresh connection when this thread's one is gone (killed session)."""
        try:
            return self._execute(_RELEASE, (LOCK_ROW, self.token))
        except Exception as exc:  # the session died under us: the row is still ours, delete it elsewhere
            info = classify_error(exc, self.engine.name)
            logger.warning(
                "releasing the lease on a fresh connection (%s: %s)", info.category.value, info.message
            )
        database = self.engine.lease_database()
        if database is None:
            return 0
        try:
            with database.connection_context():
                return self._execute(_RELEASE, (LOCK_ROW, self.token), database)
        except Exception as exc:  # noqa: BLE001 - the server is unreachable: the row expires by itself
            info = classify_error(exc, self.engine.name)
            self.lose(f"it could not be released ({info.category.value}: {info.message}); it expires within "
                      f"{self.ttl:g} s")  # fmt: skip
            return 0


class Heartbeat:
    """The named daemon thread that renews a lease on its own connection; holds a weak reference to it."""

    def __init__(self, lease: Lease, database: peewee.Database, interval: float) -> None:
        self._lease = weakref.ref(lease)
        self._database = database
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"api.db-lease-heartbeat-{lease.token[:8]}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing; waits for a renewal in flight (it cannot outlast the caller's committed work)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, 2 * self._interval))

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                lease = self._lease()
                if lease is None or not lease.beat(self._database):
                    break
                del lease
        finally:
            with contextlib.suppress(Exception):
                self._database.close()
