"""Start and stop real clustered topologies from the Debian packages, for the cluster tests.

* ``start_pgbouncer``: PgBouncer (package ``pgbouncer``) in front of the local PostgreSQL on
  127.0.0.1:5432, trust auth, one pool mode per instance, ``* = host=127.0.0.1 port=5432`` so every
  database is reachable, the admin console open to ``postgres``.
* ``start_galera``: 3 MariaDB nodes (``mariadb-server`` + ``galera-4``, rsync SST), a user ``apidb``
  without password and with all privileges, database ``test``.
* ``start_patroni``: 3 Patroni members (``patroni``, PostgreSQL 15 of ``postgresql-15``) with one etcd
  (``etcd-server``), run as the ``postgres`` OS user.

Each topology lives in a private directory under /tmp, listens on free loopback ports chosen at
start (two runs on one machine never collide), is stopped when its context manager exits, and is
stopped by ``atexit`` as a backstop. A start that fails raises ``ClusterStartError`` naming the log
file (and quoting its tail). ``START_TIMES`` records how long each start took.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ALL_CLUSTERS = ("pgbouncer", "galera", "patroni")
UPSTREAM_POSTGRES = ("127.0.0.1", 5432)
PG_BIN = Path("/usr/lib/postgresql/15/bin")
GALERA_PROVIDER = Path("/usr/lib/galera/libgalera_smm.so")
DB_PREFIX = "apidb_c_"

# What each topology needs on the machine: (executable or file, Debian package).
REQUIREMENTS: dict[str, list[tuple[str, str]]] = {
    "pgbouncer": [("/usr/sbin/pgbouncer", "pgbouncer")],
    "galera": [
        ("/usr/sbin/mariadbd", "mariadb-server"),
        ("/usr/bin/mariadb-install-db", "mariadb-server"),
        (str(GALERA_PROVIDER), "galera-4"),
        ("/usr/bin/rsync", "rsync"),
    ],
    "patroni": [
        ("/usr/bin/patroni", "patroni"),
        ("/usr/bin/etcd", "etcd-server"),
        (str(PG_BIN / "postgres"), "postgresql-15"),
    ],
}

START_TIMES: dict[str, float] = {}


class ClusterStartError(RuntimeError):
    """A topology did not start; the message names the log file to read."""


# --------------------------------------------------------------------------- helpers


def missing_packages(name: str) -> list[str]:
    """Debian packages that ``name`` needs and that are not installed (judged by their files)."""
    return sorted({pkg for path, pkg in REQUIREMENTS[name] if not os.path.exists(path)})


def required_clusters() -> set[str]:
    """Topologies named in ``$REQUIRE_CLUSTERS``: for these, cannot start is a failure, not a skip."""
    raw = os.environ.get("REQUIRE_CLUSTERS", "")
    names = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = names - set(ALL_CLUSTERS)
    if unknown:
        raise ValueError(f"REQUIRE_CLUSTERS names unknown clusters {sorted(unknown)}; "
                         f"known: {', '.join(ALL_CLUSTERS)}")
    return names


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports, found by binding port 0 (all held until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def private_dir(kind: str) -> Path:
    """A fresh directory under /tmp, traversable by the server users (postgres, mysql)."""
    path = Path(tempfile.mkdtemp(prefix=f"apidb-{kind}-", dir="/tmp"))
    path.chmod(0o755)
    return path


def owned_dir(path: Path, user: str, mode: int = 0o700) -> Path:
    """Create ``path`` owned by OS user ``user`` with ``mode``."""
    path.mkdir(parents=True, exist_ok=True)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)
    return path


def write_owned(path: Path, text: str, user: str) -> Path:
    """Write ``text`` to ``path`` and give it to ``user``."""
    path.write_text(text)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({exc})"


def start_error(what: str, log: Path, *more_logs: Path) -> ClusterStartError:
    """The error for a failed start: what failed, the log file(s), the tail of those that exist."""
    logs = [log, *more_logs]
    tails = "".join(f"\n--- last lines of {path} ---\n{log_tail(path)}" for path in logs
                    if path.exists() and path.stat().st_size)
    return ClusterStartError(f"{what}; see {' and '.join(map(str, logs))}{tails}")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(argv: Sequence[str], log: Path, user: str | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """Start ``argv`` in its own session (as ``user`` if given), output to ``log``.

    The Popen pid is the server's own pid (no runuser in between); the child gets SIGTERM
    if the test process dies without cleaning up.
    """
    env = dict(os.environ)
    if user:
        env.update(HOME=str(cwd or log.parent), USER=user, LOGNAME=user)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, user=user, group=pwd.getpwnam(user).pw_gid if user else None,
            cwd=str(cwd) if cwd else None, env=env, preexec_fn=_die_with_parent,
        )


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a pid that is not our child; False when it is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.2,
               alive: Callable[[], str | None] | None = None) -> Any:
    """Poll ``check`` until it returns a truthy value (returned) or ``timeout`` passes (None).

    ``alive`` returns a reason when the thing waited for has died: the wait stops at once with
    a ``ClusterStartError`` carrying that reason.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        if alive is not None:
            died = alive()
            if died:
                raise ClusterStartError(died)
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


_stoppers: dict[int, Callable[[], None]] = {}


def _stop_all_at_exit() -> None:
    for key in list(_stoppers):
        with contextlib.suppress(Exception):
            _stoppers.pop(key)()


atexit.register(_stop_all_at_exit)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # pytest stops the run and tears the fixtures down


def _sigterm_to_exit() -> None:
    """Turn SIGTERM of the test process into an interrupt: finalizers and atexit stop the clusters."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGTERM, _exit_on_signal)


@contextlib.contextmanager
def managed(kind: str, start: Callable[[], Any], stop: Callable[[Any], None], root: Path) -> Iterator[Any]:
    """Run ``start`` (timed into START_TIMES), yield its topology, always ``stop`` it.

    The private directory is removed afterwards, except when the start failed (its logs are
    named in the error) or ``$KEEP_CLUSTER_DIRS`` is set.
    """
    _sigterm_to_exit()
    holder: dict[str, Any] = {}
    key = id(holder)
    _stoppers[key] = lambda: stop(holder["topology"]) if "topology" in holder else None
    t0 = time.monotonic()
    failed = True
    try:
        holder["topology"] = start()
        holder["topology"].start_seconds = START_TIMES[kind] = round(time.monotonic() - t0, 2)
        failed = False
        yield holder["topology"]
    finally:
        _stoppers.pop(key, None)
        if "topology" in holder:
            stop(holder["topology"])
        if not failed and not os.environ.get("KEEP_CLUSTER_DIRS"):
            shutil.rmtree(root, ignore_errors=True)


def new_database_name() -> str:
    """A database name no other test uses."""
    return DB_PREFIX + uuid.uuid4().hex[:12]


# --------------------------------------------------------------------------- PostgreSQL access


def pg_connect(host: str, port: int, dbname: str = "postgres", autocommit: bool = True,
               **kwargs: Any) -> Any:
    """A psycopg2 connection as ``postgres`` (trust auth)."""
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user="postgres", dbname=dbname, connect_timeout=3,
                            **kwargs)
    conn.autocommit = autocommit
    return conn


def pg_query(host: str, port: int, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
    """Run ``sql`` in autocommit and return its rows (empty for statements without rows)."""
    conn = pg_connect(host, port, dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


# --------------------------------------------------------------------------- PgBouncer


@dataclass
class PgBouncer:
    """One PgBouncer instance in front of 127.0.0.1:5432."""

    pool_mode: str
    port: int
    root: Path
    ignore_startup_parameters: tuple[str, ...]
    default_pool_size: int
    proc: subprocess.Popen | None = None
    start_seconds: float = 0.0
    host: str = "127.0.0.1"

    @property
    def log(self) -> Path:
        return self.root / "pgbouncer.log"

    def url(self, database: str = "postgres") -> str:
        """api.db URL of ``database`` (any database of the upstream server) through this pooler."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres", autocommit: bool = False, **kwargs: Any) -> Any:
        """A psycopg2 connection through the pooler (extra kwargs go to libpq, e.g. ``options``)."""
        return pg_connect(self.host, self.port, database, autocommit=autocommit, **kwargs)

    def show(self, what: str = "POOLS") -> list[dict[str, Any]]:
        """``SHOW <what>`` on the admin console, one dict per row."""
        conn = pg_connect(self.host, self.port, "pgbouncer")
        try:
            with conn.cursor() as cur:
                cur.execute(f"SHOW {what}")
                names = [col[0] for col in cur.description]
                return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            conn.close()

    def create_database(self) -> str:
        """Create a fresh database on the upstream server; returns its name (reachable through ``*``)."""
        name = new_database_name()
        pg_query(*UPSTREAM_POSTGRES, f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database made by ``create_database`` (pooled server connections are cut)."""
        with contextlib.suppress(Exception):
            pg_connect(self.host, self.port, "pgbouncer").cursor().execute(f'KILL "{name}"')
        pg_query(*UPSTREAM_POSTGRES, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pgbouncer_ini(b: PgBouncer) -> str:
    """The configuration file of instance ``b``."""
    host, port = UPSTREAM_POSTGRES
    return f"""[databases]
* = host={host} port={port}
[pgbouncer]
listen_addr = {b.host}
listen_port = {b.port}
unix_socket_dir = {b.root}
auth_type = trust
auth_file = {b.root}/userlist.txt
admin_users = postgres
pool_mode = {b.pool_mode}
max_client_conn = 200
default_pool_size = {b.default_pool_size}
server_reset_query =
ignore_startup_parameters = {",".join(b.ignore_startup_parameters)}
logfile = {b.log}
pidfile = {b.root}/pgbouncer.pid
"""


def _launch_pgbouncer(b: PgBouncer) -> PgBouncer:
    owned_dir(b.root, "postgres", 0o755)
    write_owned(b.root / "userlist.txt", '"postgres" ""\n', "postgres")
    ini = write_owned(b.root / "pgbouncer.ini", pgbouncer_ini(b), "postgres")
    b.proc = spawn(["/usr/sbin/pgbouncer", str(ini)], b.root / "stdout.log", user="postgres", cwd=b.root)

    def died() -> str | None:
        if b.proc is not None and b.proc.poll() is not None:
            return str(start_error(f"pgbouncer ({b.pool_mode}) exited with {b.proc.returncode}", b.log,
                                  b.root / "stdout.log"))
        return None

    if not wait_until(lambda: pg_query(b.host, b.port, "SELECT 1"), 15, 0.05, died):
        raise start_error(f"pgbouncer ({b.pool_mode}) on port {b.port} did not answer in 15 s", b.log,
                          b.root / "stdout.log")
    return b


@contextlib.contextmanager
def start_pgbouncer(pool_mode: str = "transaction",
                    ignore_startup_parameters: Sequence[str] = ("extra_float_digits",),
                    default_pool_size: int = 4) -> Iterator[PgBouncer]:
    """A PgBouncer in ``pool_mode`` (transaction, session, statement) on a free port.

    ``ignore_startup_parameters`` defaults to extra_float_digits only, so a client sending
    ``options`` gets PgBouncer's real refusal; pass ``("extra_float_digits", "options")`` for
    the variant that accepts (and drops) them.
    """
    root = private_dir(f"pgbouncer-{pool_mode}")
    b = PgBouncer(pool_mode, free_ports(1)[0], root, tuple(ignore_startup_parameters), default_pool_size)
    extra = [name for name in b.ignore_startup_parameters if name != "extra_float_digits"]
    kind = f"pgbouncer_{pool_mode}" + "".join(f"+ignore_{name}" for name in extra)
    with managed(kind, lambda: _launch_pgbouncer(b), _stop_pgbouncer, root) as started:
        yield started


def _stop_pgbouncer(b: PgBouncer) -> None:
    stop_process(b.proc, signal.SIGINT, 10)  # SIGINT: immediate shutdown


# --------------------------------------------------------------------------- Galera


@dataclass
class GaleraNode:
    """One MariaDB Galera node."""

    index: int
    port: int
    gcomm_port: int
    ist_port: int
    sst_port: int
    root: Path
    proc: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        return f"n{self.index}"

    @property
    def log(self) -> Path:
        return self.root / "error.log"

    @property
    def socket(self) -> Path:
        return self.root / "mysql.sock"


@dataclass
class Galera:
    """A 3-node Galera cluster; SQL user ``user`` (no password, all privileges)."""

    nodes: list[GaleraNode]
    root: Path
    user: str = "apidb"
    database: str = "test"
    start_seconds: float = 0.0
    host: str = "127.0.0.1"

    def url(self, node: int, database: str | None = None) -> str:
        """``mysql://user@127.0.0.1:PORT/db`` of node ``node`` (1-based)."""
        return f"mysql://{self.user}@{self.host}:{self.nodes[node - 1].port}/{database or self.database}"

    @property
    def urls(self) -> list[str]:
        return [self.url(node.index) for node in self.nodes]

    def urls_for(self, database: str) -> list[str]:
        """The URL of ``database`` on every node."""
        return [self.url(node.index, database) for node in self.nodes]

    def connect(self, node: int, database: str | None = None, **kwargs: Any) -> Any:
        """A pymysql connection (autocommit) to node ``node`` as the cluster's user."""
        import pymysql

        kwargs.setdefault("autocommit", True)
        return pymysql.connect(host=self.host, port=self.nodes[node - 1].port, user=self.user, password="",
                               database=database or self.database, connect_timeout=5, **kwargs)

    def sql(self, node: int, statement: str, database: str | None = None) -> list[tuple[Any, ...]]:
        """Run one statement on node ``node`` as the (all-privileges) user; its rows."""
        conn = self.connect(node, database)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def status(self, node: int, variable: str) -> str:
        """``SHOW STATUS`` value of ``variable`` on node ``node`` (e.g. wsrep_local_state_comment)."""
        rows = self.sql(node, f"SHOW GLOBAL STATUS LIKE '{variable}'")
        return str(rows[0][1]) if rows else ""

    def create_database(self) -> str:
        """A fresh database (created on node 1, replicated to all); returns its name."""
        name = new_database_name()
        self.sql(1, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        return name

    def drop_database(self, name: str) -> None:
        self.sql(1, f"DROP DATABASE IF EXISTS `{name}`")

    def desync(self, node: int) -> None:
        """``SET GLOBAL wsrep_desync=ON`` on node ``node``."""
        self.sql(node, "SET GLOBAL wsrep_desync=ON")

    def resync(self, node: int, timeout: float = 30.0) -> None:
        """``SET GLOBAL wsrep_desync=OFF`` and wait until the node is Synced again."""
        self.sql(node, "SET GLOBAL wsrep_desync=OFF")
        if not wait_until(lambda: self.status(node, "wsrep_local_state_comment") == "Synced", timeout):
            raise RuntimeError(f"node {node} not Synced {timeout} s after wsrep_desync=OFF")


def galera_cnf(node: GaleraNode, cluster: list[GaleraNode]) -> str:
    """my.cnf of ``node``."""
    provider_options = (f"gmcast.listen_addr=tcp://127.0.0.1:{node.gcomm_port};"
                        f"ist.recv_addr=127.0.0.1:{node.ist_port};gcache.size=64M")
    peers = ",".join(f"127.0.0.1:{peer.gcomm_port}" for peer in cluster)
    return f"""[mariadbd]
datadir={node.root}/data
socket={node.socket}
port={node.port}
bind-address=127.0.0.1
pid-file={node.root}/mariadbd.pid
log-error={node.log}
user=mysql
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
wsrep_on=ON
wsrep_provider={GALERA_PROVIDER}
wsrep_cluster_name=apidb_galera
wsrep_cluster_address=gcomm://{peers}
wsrep_node_name={node.name}
wsrep_node_address=127.0.0.1:{node.gcomm_port}
wsrep_node_incoming_address=127.0.0.1:{node.port}
wsrep_provider_options="{provider_options}"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:{node.sst_port}
[client]
socket={node.socket}
"""


def _root_sql(node: GaleraNode, statement: str) -> None:
    """Run SQL as MariaDB root over the node's socket (unix_socket auth: we are OS root)."""
    import pymysql

    conn = pymysql.connect(unix_socket=str(node.socket), user="root", autocommit=True, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            for part in filter(None, (s.strip() for s in statement.split(";"))):
                cur.execute(part)
    finally:
        conn.close()


def _node_state(node: GaleraNode) -> str:
    import pymysql

    conn = pymysql.connect(unix_socket=str(node.socket), user="root", connect_timeout=2)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep_local_state_comment'")
            row = cur.fetchone()
            return str(row[1]) if row else ""
    finally:
        conn.close()


def _start_node(g: Galera, node: GaleraNode, *extra: str) -> None:
    owned_dir(node.root, "mysql", 0o750)
    owned_dir(node.root / "data", "mysql", 0o750)
    cnf = write_owned(node.root / "my.cnf", galera_cnf(node, g.nodes), "mysql")
    node.proc = spawn(["/usr/sbin/mariadbd", f"--defaults-file={cnf}", *extra], node.root / "stdout.log",
                      user="mysql", cwd=node.root)


def _wait_synced(g: Galera, node: GaleraNode, timeout: float) -> None:
    def died() -> str | None:
        if node.proc is not None and node.proc.poll() is not None:
            return str(start_error(f"galera {node.name} exited with {node.proc.returncode}", node.log,
                                  node.root / "stdout.log"))
        return None

    if not wait_until(lambda: _node_state(node) == "Synced", timeout, 0.2, died):
        raise start_error(f"galera {node.name} not Synced after {timeout} s", node.log)


def _launch_galera(g: Galera) -> Galera:
    first = g.nodes[0]
    owned_dir(first.root, "mysql", 0o750)
    owned_dir(first.root / "data", "mysql", 0o750)
    write_owned(first.root / "my.cnf", galera_cnf(first, g.nodes), "mysql")
    install_log = first.root / "install.log"
    with open(install_log, "wb") as out:
        done = subprocess.run(
            ["/usr/bin/mariadb-install-db", f"--defaults-file={first.root}/my.cnf", "--user=mysql",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120,
        )
    if done.returncode != 0:
        raise start_error(f"mariadb-install-db failed with {done.returncode}", install_log)
    _start_node(g, first, "--wsrep-new-cluster")
    _wait_synced(g, first, 60)
    _root_sql(first, f"""CREATE USER '{g.user}'@'%'; CREATE USER '{g.user}'@'localhost';
        GRANT ALL ON *.* TO '{g.user}'@'%' WITH GRANT OPTION;
        GRANT ALL ON *.* TO '{g.user}'@'localhost' WITH GRANT OPTION;
        CREATE DATABASE {g.database}""")
    for node in g.nodes[1:]:  # joiners one at a time: each takes a full rsync SST from a donor
        _start_node(g, node)
        _wait_synced(g, node, 90)
    return g


def _stop_galera(g: Galera) -> None:
    for node in reversed(g.nodes):  # n1 last: it stays safe to bootstrap from
        stop_process(node.proc, signal.SIGTERM, 30)


@contextlib.contextmanager
def start_galera(size: int = 3) -> Iterator[Galera]:
    """A ``size``-node Galera cluster on free ports; node URLs in ``.urls``."""
    root = private_dir("galera")
    ports = free_ports(4 * size)
    nodes = [GaleraNode(i + 1, *ports[4 * i: 4 * i + 4], root=root / f"n{i + 1}") for i in range(size)]
    g = Galera(nodes, root)
    with managed("galera", lambda: _launch_galera(g), _stop_galera, root) as started:
        yield started


# --------------------------------------------------------------------------- Patroni


@dataclass
class PatroniMember:
    """One Patroni member: its PostgreSQL and its REST API."""

    name: str
    port: int
    rest_port: int
    root: Path
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"

    @property
    def config(self) -> Path:
        return self.root / "patroni.yml"

    @property
    def log(self) -> Path:
        return self.root / "patroni.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def rest(self, path: str, payload: dict[str, Any] | None = None,
             timeout: float = 3.0) -> tuple[int, Any]:
        """GET (or POST ``payload`` to) the member's REST API: (status, decoded body)."""
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(f"http://{self.host}:{self.rest_port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def postmaster_pid(self) -> int | None:
        """Pid of this member's postmaster (from postmaster.pid), None when it is not running."""
        try:
            pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def in_recovery(self) -> bool:
        return bool(pg_query(self.host, self.port, "SELECT pg_is_in_recovery()")[0][0])


@dataclass
class Patroni:
    """A Patroni cluster (PostgreSQL 15) with one etcd."""

    members: list[PatroniMember]
    root: Path
    etcd_port: int
    etcd_peer_port: int
    etcd_proc: subprocess.Popen | None = None
    scope: str = "apidb"
    start_seconds: float = 0.0
    host: str = "127.0.0.1"

    @property
    def urls(self) -> list[str]:
        return [member.url() for member in self.members]

    def multi_host_url(self, database: str = "postgres", target_session_attrs: str = "read-write") -> str:
        """``postgresql://postgres@h:p1,h:p2,h:p3/db?target_session_attrs=...`` (libpq multi-host form)."""
        hosts = ",".join(f"{m.host}:{m.port}" for m in self.members)
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs={target_session_attrs}"

    def member(self, name: str) -> PatroniMember:
        return next(m for m in self.members if m.name == name)

    def cluster_state(self) -> list[dict[str, Any]]:
        """Members as Patroni's ``/cluster`` reports them (name, role, state, lag ...)."""
        for member in self.members:
            with contextlib.suppress(Exception):
                status, body = member.rest("/cluster")
                if status == 200 and isinstance(body, dict):
                    return list(body.get("members", []))
        return []

    def leader(self) -> PatroniMember | None:
        """The member whose REST API answers 200 on ``/primary`` (None during an election)."""
        for member in self.members:
            with contextlib.suppress(Exception):
                if member.rest("/primary", timeout=1)[0] == 200:
                    return member
        return None

    def replicas(self) -> list[PatroniMember]:
        """Members streaming from the leader (REST ``/replica`` answers 200)."""
        found = []
        for member in self.members:
            with contextlib.suppress(Exception):
                if member.rest("/replica", timeout=1)[0] == 200:
                    found.append(member)
        return found

    def writable(self) -> PatroniMember | None:
        """The member that accepts a write now (``txid_current()`` needs a primary), or None."""
        for member in self.members:
            with contextlib.suppress(Exception):
                pg_query(member.host, member.port, "SELECT txid_current()")
                return member
        return None

    def wait_writable(self, timeout: float = 60.0, not_on: str | None = None) -> tuple[PatroniMember, float]:
        """Wait until a member (other than ``not_on``, if given) accepts writes: (member, seconds waited)."""
        t0 = time.monotonic()

        def check() -> PatroniMember | None:
            found = self.writable()
            return found if found is not None and found.name != not_on else None

        member = wait_until(check, timeout, 0.1)
        if member is None:
            raise RuntimeError(f"no member accepted writes within {timeout} s; "
                               f"see {self.root}/pg*/patroni.log")
        return member, time.monotonic() - t0

    def wait_ready(self, timeout: float = 90.0) -> PatroniMember:
        """Wait for a leader with every other member streaming from it and reported running."""
        def check() -> PatroniMember | None:
            leader = self.leader()
            if leader is None:
                return None
            rows = pg_query(leader.host, leader.port,
                            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
            others = len(self.members) - 1
            return leader if rows[0][0] == others and len(self.replicas()) == others else None

        leader = wait_until(check, timeout, 0.3, self._died)
        if leader is None:
            raise start_error(f"patroni: no leader with {len(self.members) - 1} streaming replicas "
                              f"after {timeout} s", self.members[0].log)
        return leader

    def switchover(self, candidate: str | None = None, timeout: float = 60.0) -> tuple[PatroniMember, float]:
        """Move the leader (to ``candidate`` or Patroni's choice); wait for writes on the new one.

        Returns the new leader and the seconds from the request to the first accepted write.
        """
        old = self.leader()
        if old is None:
            raise RuntimeError("switchover: no leader now")
        payload: dict[str, Any] = {"leader": old.name}
        if candidate:
            payload["candidate"] = candidate
        t0 = time.monotonic()
        status, body = old.rest("/switchover", payload, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"switchover refused ({status}): {body}")
        member, _ = self.wait_writable(timeout, not_on=old.name)
        return member, time.monotonic() - t0

    def kill_leader(self, patroni_too: bool = False) -> PatroniMember:
        """SIGKILL the leader's postmaster; returns the member that was leader.

        Patroni usually restarts the crashed postmaster in place and keeps the leader key, so the
        leader after ``wait_writable()`` may be the same member (3.4 s measured on 2 cores).
        ``patroni_too`` first SIGKILLs the member's Patroni as well: a real leader loss, the leader
        key expires (ttl 10 s) and a replica is promoted; bring the member back with ``restart()``.
        """
        old = self.leader()
        pid = old.postmaster_pid() if old else None
        if old is None or pid is None:
            raise RuntimeError("kill_leader: no leader postmaster running")
        if patroni_too and old.proc is not None:
            old.proc.kill()
            old.proc.wait(10)
        kill_pid(pid, signal.SIGKILL)
        return old

    def restart(self, member: PatroniMember, timeout: float = 90.0) -> None:
        """Start the Patroni of a member ``kill_leader(patroni_too=True)`` stopped; wait for the cluster."""
        if member.proc is not None and member.proc.poll() is None:
            return
        pid = member.postmaster_pid()
        if pid is not None:  # a postmaster the killed Patroni left behind
            kill_pid(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), 10)
        _start_member(self, member)
        self.wait_ready(timeout)

    def set_maintenance(self, paused: bool, timeout: float = 20.0) -> None:
        """Patroni's maintenance mode (``pause``): PostgreSQL is left alone (a paused replay stays paused)."""
        leader = self.leader() or self.members[0]
        req = urllib.request.Request(f"http://{leader.host}:{leader.rest_port}/config", method="PATCH",
                                     data=json.dumps({"pause": paused}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5):
            pass

        def applied() -> bool:
            states = [member.rest("/patroni", timeout=1)[1] for member in self.members]
            return all(isinstance(st, dict) and bool(st.get("pause", False)) == paused for st in states)

        if not wait_until(applied, timeout, 0.2):
            raise RuntimeError(f"patroni maintenance mode {paused} not applied within {timeout} s")

    def create_database(self) -> str:
        """A fresh database, created on the leader (replicated); returns its name."""
        name = new_database_name()
        member, _ = self.wait_writable(30)
        pg_query(member.host, member.port, f'CREATE DATABASE "{name}"')
        # libpq stops at the first host of a list that says "database does not exist": wait for every
        # member that answers to have it (a replica that just rejoined may be a moment behind).
        wait_until(lambda: all(self._has_database(m, name) for m in self.members), 30, 0.1)
        return name

    def _has_database(self, member: PatroniMember, name: str) -> bool:
        """``name`` exists on ``member``, or the member does not answer (it cannot be waited for)."""
        try:
            return (name,) in pg_query(member.host, member.port, "SELECT datname FROM pg_database")
        except Exception:  # a member down or restarting is not waited for
            return True

    def drop_database(self, name: str) -> None:
        member, _ = self.wait_writable(30)
        pg_query(member.host, member.port, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _died(self) -> str | None:
        for member in self.members:
            if member.proc is not None and member.proc.poll() is not None:
                what = f"patroni {member.name} exited with {member.proc.returncode}"
                return str(start_error(what, member.log,
                                      member.root / "patroni.out"))
        if self.etcd_proc is not None and self.etcd_proc.poll() is not None:
            return str(start_error("etcd exited", self.root / "etcd" / "etcd.log"))
        return None


def patroni_yml(p: Patroni, m: PatroniMember) -> str:
    """patroni.yml of member ``m``."""
    return f"""scope: {p.scope}
namespace: /service/
name: {m.name}
log:
  level: INFO
  dir: {m.root}
restapi:
  listen: 127.0.0.1:{m.rest_port}
  connect_address: 127.0.0.1:{m.rest_port}
etcd3:
  hosts: 127.0.0.1:{p.etcd_port}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        max_connections: 100
        max_wal_senders: 10
        max_replication_slots: 10
        wal_log_hints: "on"
        shared_buffers: 64MB
  initdb:
  - encoding: UTF8
  - auth: trust
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 trust
  - host all all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{m.port}
  connect_address: 127.0.0.1:{m.port}
  data_dir: {m.root}/data
  bin_dir: {PG_BIN}
  pgpass: {m.root}/pgpass
  authentication:
    replication: {{username: replicator, password: rep}}
    superuser: {{username: postgres, password: pg}}
    rewind: {{username: rewind_user, password: rw}}
  parameters:
    unix_socket_directories: {m.root}
    logging_collector: "off"
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
"""


def _etcd_healthy(p: Patroni) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{p.etcd_port}/health", timeout=1) as resp:
        return bool(json.loads(resp.read()).get("health") in ("true", True))


def _start_etcd(p: Patroni) -> None:
    d = owned_dir(p.root / "etcd", "postgres")
    client, peer = f"http://127.0.0.1:{p.etcd_port}", f"http://127.0.0.1:{p.etcd_peer_port}"
    p.etcd_proc = spawn(
        ["/usr/bin/etcd", "--name", "apidb", "--data-dir", str(d / "data"),
         "--listen-client-urls", client, "--advertise-client-urls", client,
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"apidb={peer}", "--initial-cluster-state", "new",
         "--initial-cluster-token", p.root.name],
        d / "etcd.log", user="postgres", cwd=d)
    if not wait_until(lambda: _etcd_healthy(p), 20, 0.1, p._died):
        raise start_error("etcd not healthy after 20 s", d / "etcd.log")


def _start_member(p: Patroni, m: PatroniMember) -> None:
    owned_dir(m.root, "postgres")
    write_owned(m.config, patroni_yml(p, m), "postgres")
    m.proc = spawn(["/usr/bin/patroni", str(m.config)], m.root / "patroni.out", user="postgres", cwd=m.root)


def _launch_patroni(p: Patroni) -> Patroni:
    owned_dir(p.root, "postgres", 0o755)
    _start_etcd(p)
    first = p.members[0]
    _start_member(p, first)
    # let the first member initialise alone so that it becomes the first leader
    if not wait_until(lambda: first.rest("/primary", timeout=1)[0] == 200, 60, 0.2, p._died):
        raise start_error(f"patroni {first.name} did not become leader in 60 s", first.log)
    for member in p.members[1:]:
        _start_member(p, member)
    p.wait_ready(90)
    return p


def _stop_patroni(p: Patroni) -> None:
    for member in reversed(p.members):
        if member.proc is not None and member.proc.poll() is None:
            member.proc.send_signal(signal.SIGTERM)
    for member in reversed(p.members):
        stop_process(member.proc, signal.SIGTERM, 30)
        pid = member.postmaster_pid()  # a postgres left behind by a killed patroni
        if pid is not None:
            kill_pid(pid, signal.SIGQUIT)
            wait_until(lambda pid=pid: not pid_alive(pid), 10)
            kill_pid(pid, signal.SIGKILL)
    stop_process(p.etcd_proc, signal.SIGTERM, 10)


@contextlib.contextmanager
def start_patroni(size: int = 3) -> Iterator[Patroni]:
    """A ``size``-member Patroni cluster with one etcd, on free ports."""
    root = private_dir("patroni")
    ports = free_ports(2 + 2 * size)
    members = [PatroniMember(f"pg{i + 1}", ports[2 + 2 * i], ports[3 + 2 * i], root / f"pg{i + 1}")
               for i in range(size)]
    p = Patroni(members, root, ports[0], ports[1])
    with managed("patroni", lambda: _launch_patroni(p), _stop_patroni, root) as started:
        yield started


STARTERS: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "pgbouncer_transaction": lambda: start_pgbouncer("transaction"),
    "pgbouncer_session": lambda: start_pgbouncer("session"),
    "galera": start_galera,
    "patroni": start_patroni,
}
