"""Throwaway distributed topologies for the scale-out tests, built from the same binaries.

- ``redis_cluster_servers``: a six-node Redis Cluster, three primaries and three replicas
  (``redis-server --cluster-enabled yes``, joined by ``redis-cli --cluster create``), with a
  low ``cluster-node-timeout`` so a failover takes seconds.
- ``redis_sentinel_servers``: one primary, one replica and three sentinels.
- ``postgres_pair_factory``: a PostgreSQL primary and a streaming replica made with
  ``pg_basebackup -R``, asynchronous or synchronous; each call builds a fresh pair.

Every process runs on a free 127.0.0.1 port in a fresh temp dir and is torn down after; the
helpers of servers.py next door (free ports, start/stop/pause, the leftover cleanup) do the work.
A missing binary is a failure, not a skip: these tests are the only proof of failover.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from tests.harness.servers import (
    HOST,
    INSTALL_HINT,
    PostgresServer,
    RedisServer,
    ServerBinaryMissing,
    _children,
    free_port,
    run_async,
)

#: Milliseconds without an answer before a node is suspected; a primary is then failed over
#: in about 2-3 s (see /work/shared/anchors/redis-topologies.md).
CLUSTER_NODE_TIMEOUT_MS = 1000
SLOTS = 16384


def _admin(port: int, timeout: float = 2.0) -> redis.Redis:
    """A blocking admin connection that never retries (a retry would hide a dead node)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _command(admin: redis.Redis, *args: Any) -> Any:
    """A raw command (redis-py leaves ``execute_command`` unannotated)."""
    return admin.execute_command(*args)  # type: ignore[no-untyped-call]


def _wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not reached within {timeout:.0f} s (last error: {last!r})")


class _KillableRedis(RedisServer):
    """A redis-server that can also be crashed (SIGKILL), not only stopped."""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to replicas or to the cluster bus."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.resume()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=self.stop_timeout)
        self.stop()  # reaps and closes the log

    def admin(self, timeout: float = 2.0) -> redis.Redis:
        return _admin(self.port, timeout)


class ClusterNode(_KillableRedis):
    """One node of a Redis Cluster: its bus on a second free port, its config in its dir."""

    name = "redis-cluster-node"

    def __init__(self) -> None:
        super().__init__()
        self.bus_port = free_port()

    def choose_ports(self) -> None:
        # Either port may be the one taken: the bus port too (seen with three test workers).
        super().choose_ports()
        self.bus_port = free_port()

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled", "yes",
            "--cluster-port", str(self.bus_port),
            "--cluster-config-file", str(self.base_dir / "nodes.conf"),
            "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
            # A shard without a primary must not take the healthy shards down with it.
            "--cluster-require-full-coverage", "no",
            "--enable-debug-command", "local",
            # A restarted node resyncs at once (the default waits 5 s for more replicas).
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip

    def probe(self) -> None:
        # A restarted node answers PING while it still loads; INFO says when it is done.
        admin = self.admin(1.0)
        try:
            if admin.info("persistence").get("loading") not in (0, None):
                raise ConnectionError("still loading")
        finally:
            admin.close()

    @property
    def node_id(self) -> str:
        admin = self.admin()
        try:
            return str(_command(admin, "CLUSTER", "MYID").decode())
        finally:
            admin.close()


class OneNodeCluster(ClusterNode):
    """A Redis Cluster of one node that owns all 16384 slots: the real cluster protocol,
    for tests of the store's cluster code paths that need no failover."""

    name = "redis-cluster"

    def after_first_start(self) -> None:
        admin = self.admin()
        try:
            _command(admin, "CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            _wait_until(
                "cluster_state ok", lambda: admin.cluster("INFO").get("cluster_state") == "ok", 10
            )
        finally:
            admin.close()


@dataclass(frozen=True)
class Shard:
    """One primary, its replicas and its slot ranges, as the cluster sees them now."""

    primary: ClusterNode
    replicas: tuple[ClusterNode, ...]
    ranges: tuple[tuple[int, int], ...]
    primary_online: bool

    def owns(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.ranges)


class RedisClusterServers:
    """Six ``ClusterNode``s joined into three shards of one primary and one replica."""

    def __init__(self, primaries: int = 3, replicas_per_primary: int = 1) -> None:
        self.nodes = [ClusterNode() for _ in range(primaries * (1 + replicas_per_primary))]
        self.replicas_per_primary = replicas_per_primary

    # -- lifecycle

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = self.nodes[0].executable.parent / "redis-cli"
        if not cli.exists():
            raise ServerBinaryMissing(f"{cli} not found (Debian package redis-tools)")
        result = subprocess.run(
            [
                str(cli), "--cluster", "create",
                *(f"{HOST}:{node.port}" for node in self.nodes),
                "--cluster-replicas", str(self.replicas_per_primary),
                "--cluster-yes",
            ],
            capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({result.returncode}):\n"
                f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
            )
        self.wait_healthy()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(HOST, node.port) for node in self.nodes]

    def node_at(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    # -- what the cluster looks like

    def shards(self) -> list[Shard]:
        """The shards as a running node reports them (CLUSTER SHARDS)."""
        for node in self.nodes:
            if not node.is_running:
                continue
            admin = node.admin()
            try:
                reply = _command(admin, "CLUSTER", "SHARDS")
            except redis.RedisError:
                continue
            finally:
                admin.close()
            return [self._shard(raw) for raw in reply]
        raise RuntimeError("no cluster node is running")

    def _shard(self, raw: Any) -> Shard:
        fields = _pairs(raw)
        slots = [int(x) for x in fields[b"slots"]]
        primary: ClusterNode | None = None
        replicas: list[ClusterNode] = []
        online = False
        for raw_node in fields[b"nodes"]:
            info = _pairs(raw_node)
            node = self.node_at(int(info[b"port"]))
            if info[b"role"] == b"master" and (primary is None or info[b"health"] == b"online"):
                primary, online = node, info[b"health"] == b"online"
            elif info[b"role"] != b"master":
                replicas.append(node)
        assert primary is not None, f"shard without a primary: {fields}"
        ranges = tuple(zip(slots[::2], slots[1::2], strict=True))
        return Shard(primary, tuple(replicas), ranges, online)

    def serving_shards(self) -> list[Shard]:
        return [shard for shard in self.shards() if shard.ranges]

    def shard_of(self, key: str | bytes) -> Shard:
        from redis.crc import key_slot

        slot = key_slot(key.encode() if isinstance(key, str) else key)
        return next(shard for shard in self.serving_shards() if shard.owns(slot))

    # -- waiting for states

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Every node up and agreeing: state ok, all slots served, each primary replicated."""

        def healthy() -> bool:
            for node in self.nodes:
                admin = node.admin()
                try:
                    info = admin.cluster("INFO")
                    if info.get("cluster_state") != "ok":
                        return False
                    if int(info.get("cluster_slots_ok", 0)) != SLOTS:
                        return False
                    if int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                        return False
                    role = admin.info("replication")
                    if role["role"] == "slave" and role.get("master_link_status") != "up":
                        return False
                finally:
                    admin.close()
            shards = self.serving_shards()
            per_shard = self.replicas_per_primary
            return len(shards) == len(self.nodes) // (1 + per_shard) and all(
                len(shard.replicas) == per_shard for shard in shards
            )

        _wait_until("cluster healthy", healthy, timeout)

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Each replica has received everything its primary had when this was called."""
        targets: list[tuple[ClusterNode, int]] = []
        for shard in self.serving_shards():
            admin = shard.primary.admin()
            try:
                offset = int(admin.info("replication")["master_repl_offset"])
            finally:
                admin.close()
            targets += [(replica, offset) for replica in shard.replicas]

        def caught_up() -> bool:
            for replica, offset in targets:
                admin = replica.admin()
                try:
                    if int(admin.info("replication").get("slave_repl_offset", -1)) < offset:
                        return False
                finally:
                    admin.close()
            return True

        _wait_until("replicas caught up", caught_up, timeout)

    def wait_promoted(self, shard: Shard, timeout: float = 30.0) -> ClusterNode:
        """Wait until a node other than ``shard.primary`` serves the shard's slots, online."""
        found: list[ClusterNode] = []

        def promoted() -> bool:
            for now in self.shards():
                if now.ranges == shard.ranges and now.primary is not shard.primary:
                    if not now.primary_online:
                        return False
                    admin = now.primary.admin(0.5)
                    try:
                        if admin.info("replication")["role"] == "master":
                            found.append(now.primary)
                            return True
                    finally:
                        admin.close()
            return False

        _wait_until("replica promoted", promoted, timeout)
        return found[-1]

    def shard_by_ranges(self, ranges: tuple[tuple[int, int], ...]) -> Shard:
        return next(shard for shard in self.serving_shards() if shard.ranges == ranges)


def cluster_client(
    servers: RedisClusterServers,
    *,
    socket_timeout: float = 2.0,
    max_connections: int = 512,
    **options: Any,
) -> Any:
    """A ``redis.asyncio.RedisCluster`` configured as docs/deployment.md recommends.

    ``require_full_coverage=False`` keeps the healthy shards usable while one has no
    primary; ``socket_timeout`` below the session layer's ``store_timeout`` drops a paused
    node's connection instead of waiting for it to wake. ``max_connections`` is per node
    and must exceed the requests in flight, or the client fails at once.
    """
    from redis.asyncio.cluster import ClusterNode as StartupNode
    from redis.asyncio.cluster import RedisCluster

    return RedisCluster(
        startup_nodes=[StartupNode(host, port) for host, port in servers.startup_nodes],
        require_full_coverage=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        max_connections=max_connections,
        **options,
    )


def _pairs(raw: Any) -> dict[bytes, Any]:
    """A RESP2 flat list [k1, v1, k2, v2...] (or a RESP3 map) as a dict."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


# -- Sentinel -------------------------------------------------------------------------------


class SentinelReplica(_KillableRedis):
    """A redis-server replicating ``primary_port`` from its first start."""

    name = "redis-replica"

    def __init__(self, primary_port: int) -> None:
        super().__init__()
        self.primary_port = primary_port

    def command(self) -> list[str]:
        return [*super().command(), "--replicaof", HOST, str(self.primary_port)]


class SentinelServer(RedisServer):
    """``redis-server <conf> --sentinel``; the conf is writable: sentinels rewrite it."""

    name = "redis-sentinel"

    def __init__(self, service: str, primary_port: int, quorum: int) -> None:
        super().__init__()
        self.service = service
        self.primary_port = primary_port
        self.quorum = quorum
        self.conf = self.base_dir / "sentinel.conf"

    def initialize(self) -> None:
        self.conf.write_text(
            f"port {self.port}\n"
            f"bind {HOST}\n"
            f"dir {self.base_dir}\n"
            f"sentinel monitor {self.service} {HOST} {self.primary_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 5000\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )

    def command(self) -> list[str]:
        return [str(self.executable), str(self.conf), "--sentinel"]

    @property
    def url(self) -> str:
        return f"{HOST}:{self.port}"


class RedisSentinelServers:
    """One primary, one replica and three sentinels (quorum 2) watching service ``mymaster``."""

    service = "mymaster"

    def __init__(self) -> None:
        self.primary = _KillableRedis()
        self.replica = SentinelReplica(self.primary.port)
        self.sentinels = [SentinelServer(self.service, self.primary.port, 2) for _ in range(3)]

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_ready()

    def close(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.close()

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of the service."""
        hosts = ",".join(sentinel.url for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(HOST, sentinel.port) for sentinel in self.sentinels]

    def current_primary_port(self) -> int:
        for sentinel in self.sentinels:
            admin = _admin(sentinel.port, 0.5)
            try:
                _host, port = _command(admin, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                return int(port)
            except (redis.RedisError, OSError):
                continue
            finally:
                admin.close()
        raise RuntimeError("no sentinel answers")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every sentinel knows the replica and the other sentinels; the replica is in sync."""

        def ready() -> bool:
            for sentinel in self.sentinels:
                admin = _admin(sentinel.port, 0.5)
                try:
                    raw = _command(admin, "SENTINEL", "MASTER", self.service)
                finally:
                    admin.close()
                info: dict[str, Any] = {
                    (k.decode() if isinstance(k, bytes) else k): (
                        v.decode() if isinstance(v, bytes) else v
                    )
                    for k, v in _pairs(raw).items()
                }
                if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < 2:
                    return False
            admin = self.replica.admin()
            try:
                return bool(admin.info("replication").get("master_link_status") == "up")
            finally:
                admin.close()

        _wait_until("sentinels ready", ready, timeout)

    def wait_replicated(self, timeout: float = 30.0) -> None:
        primary = self.primary.admin()
        try:
            offset = int(primary.info("replication")["master_repl_offset"])
        finally:
            primary.close()

        def caught_up() -> bool:
            admin = self.replica.admin()
            try:
                return int(admin.info("replication").get("slave_repl_offset", -1)) >= offset
            finally:
                admin.close()

        _wait_until("replica caught up", caught_up, timeout)


# -- PostgreSQL streaming replication -------------------------------------------------------


class PostgresPrimary(PostgresServer):
    """A primary that streams WAL to replicas; commits wait for WAL (synchronous_commit=on)."""

    name = "postgres-primary"

    def command(self) -> list[str]:
        # The base class turns synchronous_commit off for speed; a primary whose replica
        # must confirm commits (synchronous_standby_names) needs it on, so it is left at
        # PostgreSQL's default here in both modes.
        command = super().command()
        drop = command.index("synchronous_commit=off")
        return [
            *command[: drop - 1],
            *command[drop + 1 :],
            "-c", "wal_level=replica",
            "-c", "max_wal_senders=5",
            "-c", "wal_sender_timeout=5s",
        ]  # fmt: skip

    def crash(self) -> None:
        """SIGKILL the postmaster and every backend: a host that died, not a shutdown."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self.resume()
        os.kill(proc.pid, signal.SIGSTOP)  # so it forks no new backend meanwhile
        pending, victims = [proc.pid], []
        while pending:
            pid = pending.pop()
            victims.append(pid)
            pending += _children(pid)
        for pid in reversed(victims):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=self.stop_timeout)
        self.stop()


class PostgresReplica(PostgresServer):
    """A hot standby cloned from ``primary`` with ``pg_basebackup -R``; ``promote()`` it."""

    name = "postgres-replica"

    def __init__(self, primary: PostgresPrimary, application_name: str) -> None:
        self.primary = primary
        self.application_name = application_name
        super().__init__()

    def initialize(self) -> None:
        if self.account is not None:
            os.chown(self.base_dir, self.account.pw_uid, self.account.pw_gid)
        self.run_tool(
            [
                str(self.executable.parent / "pg_basebackup"),
                f"--host={HOST}",
                f"--port={self.primary.port}",
                f"--username={self.primary.user}",
                f"--pgdata={self.data_dir}",
                "--write-recovery-conf",  # -R: standby.signal + primary_conninfo
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-sync",
            ]
        )
        # Set in the file, not on the command line, so that ALTER SYSTEM can change it
        # later (cut_replication); application_name is what synchronous_standby_names
        # refers to. The last setting in the file wins over the one -R wrote.
        conninfo = (
            f"host={HOST} port={self.primary.port} user={self.primary.user} "
            f"application_name={self.application_name}"
        )
        with open(self.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\n")

    def command(self) -> list[str]:
        return [*super().command(), "-c", "hot_standby=on"]

    def after_first_start(self) -> None:
        pass  # the database came with the base backup

    def promote(self) -> None:
        """``pg_ctl promote`` and wait until the server accepts writes."""
        result = subprocess.run(
            [str(self.executable.parent / "pg_ctl"), "promote", "-w", "-t", "60",
             f"--pgdata={self.data_dir}"],
            capture_output=True, timeout=90, check=False, stdin=subprocess.DEVNULL,
            **self.popen_kwargs(),
        )  # fmt: skip
        if result.returncode != 0:
            raise self.start_error(f"pg_ctl promote failed: {result.stderr.decode()}")


class PostgresPair:
    """A primary and a streaming replica; ``synchronous`` makes every commit wait for it."""

    def __init__(self, *, synchronous: bool) -> None:
        self.synchronous = synchronous
        self.primary = PostgresPrimary()
        self.replica = PostgresReplica(self.primary, "replica1")

    def start(self) -> None:
        self.primary.start()  # creates the test database
        self.replica.start()
        self._sql(
            self.primary.port,
            "ALTER SYSTEM SET synchronous_standby_names = "
            + ("'replica1'" if self.synchronous else "''"),
        )
        self._sql(self.primary.port, "SELECT pg_reload_conf()")

        def attached() -> bool:
            state = self._fetch(
                self.primary.port,
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'replica1'",
            )
            return bool(state == ("sync" if self.synchronous else "async"))

        _wait_until("replica attached", attached, 60)

    def close(self) -> None:
        self.replica.close()
        self.primary.close()

    def cut_replication(self) -> None:
        """Stop the replica's streaming: from now on the primary commits without it.

        A frozen replica would not do: the kernel keeps receiving WAL into its socket
        buffer and it replays all of it when thawed. Without a ``primary_conninfo`` the
        WAL receiver ends and is not restarted, as in a network partition.
        """
        self._fetch(self.replica.port, "ALTER SYSTEM SET primary_conninfo = ''")
        self._fetch(self.replica.port, "SELECT pg_reload_conf()")

        def detached() -> bool:
            count = self._fetch(self.primary.port, "SELECT count(*) FROM pg_stat_replication")
            return bool(count == 0)

        _wait_until("replica detached", detached, 30)

    @property
    def dsn(self) -> str:
        """A multi-host DSN that only ever connects to the server accepting writes."""
        user, database = self.primary.user, self.primary.database
        return (
            f"postgresql://{user}@{HOST}:{self.primary.port},{HOST}:{self.replica.port}"
            f"/{database}?target_session_attrs=read-write"
        )

    def _sql(self, port: int, sql: str) -> None:
        self._fetch(port, sql)

    def _fetch(self, port: int, sql: str) -> Any:
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

        async def go() -> Any:
            conn = await asyncpg.connect(
                host=HOST, port=port, user=self.primary.user, database="postgres", timeout=5
            )
            try:
                return await conn.fetchval(sql)
            finally:
                await conn.close()

        return run_async(go)

    def replayed_lsn_caught_up(self) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        target = self._fetch(self.primary.port, "SELECT pg_current_wal_lsn()::text")

        def caught_up() -> bool:
            done = self._fetch(
                self.replica.port,
                f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn",
            )
            return bool(done)

        _wait_until("replica replayed", caught_up, 30)


# -- fixtures -------------------------------------------------------------------------------


def _build(factory: Callable[[], Any]) -> Any:
    try:
        return factory()
    except ServerBinaryMissing as exc:
        # The team's rule: a missing server is a failure, in CI and on a laptop alike.
        pytest.fail(f"{exc}: {INSTALL_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def redis_cluster_servers() -> Iterator[RedisClusterServers]:
    """A six-node cluster; failover tests reshape it and leave it healthy again."""
    cluster: RedisClusterServers = _build(RedisClusterServers)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def redis_sentinel_servers() -> Iterator[RedisSentinelServers]:
    sentinels: RedisSentinelServers = _build(RedisSentinelServers)
    try:
        sentinels.start()
        yield sentinels
    finally:
        sentinels.close()


@pytest.fixture
def postgres_pair_factory() -> Iterator[Callable[..., PostgresPair]]:
    """Builds fresh primary + replica pairs (a promoted replica cannot be undone)."""
    built: list[PostgresPair] = []

    def make(*, synchronous: bool) -> PostgresPair:
        pair: PostgresPair = _build(lambda: PostgresPair(synchronous=synchronous))
        built.append(pair)
        pair.start()
        return pair

    try:
        yield make
    finally:
        for pair in built:
            pair.close()
