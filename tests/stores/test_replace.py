"""``ServerStore.replace``: the compare-and-swap that merging saves stand on, per server store.

Each body runs against every server-store kind, on the real server. Records are written
and read through the record operations themselves (create, get, remove), so what a test
checks is what the store holds afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import pytest

from aiohttp_sessionkit import StoreUnavailable
from aiohttp_sessionkit.abc import ServerStore
from tests.conftest import StoreFactory
from tests.harness.servers import ServerHandle
from tests.stores.test_faults import FAULT_KINDS, server, stopped  # noqa: F401 - fixture

#: Payloads are binary and the size of a session with a few values in it.
PAYLOAD = b"\x00\x01session\xff" + bytes(range(256)) * 2
#: The shortest TTL a store takes; records that must expire get it, and the tests poll.
SHORT_TTL = 1
#: The longest a record of SHORT_TTL may take to go (memcached counts whole seconds).
EXPIRY_WAIT = 3.0


def new_key() -> str:
    return secrets.token_hex(32)


def server_store(factory: StoreFactory) -> ServerStore:
    return cast(ServerStore, factory())


async def created(store: ServerStore, data: bytes = PAYLOAD, ttl: int = 60) -> str:
    key = new_key()
    assert await store.create(key, data, ttl)
    return key


async def wait_until_gone(store: ServerStore, key: str) -> None:
    """Poll until ``key`` reads as absent: its record's TTL has run out for this store."""
    deadline = time.monotonic() + EXPIRY_WAIT
    while await store.get(key) is not None:
        assert time.monotonic() < deadline, "a record with a 1 s TTL did not expire"
        await asyncio.sleep(0.1)


async def test_replace_writes_when_the_payload_matches_and_resets_the_ttl(
    server_store_factory: StoreFactory,
) -> None:
    store = server_store(server_store_factory)
    key = await created(store, ttl=SHORT_TTL)
    witness = await created(store, ttl=SHORT_TTL)  # written with it, never replaced
    assert await store.replace(key, PAYLOAD, b"new payload", 60)
    assert await store.get(key) == b"new payload"
    # Once the witness has expired, the replaced record would have too without its new TTL.
    await wait_until_gone(store, witness)
    assert await store.get(key) == b"new payload"


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _flip_first(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x80]) + data[1:]


NEAR_MISSES: dict[str, Callable[[bytes], bytes]] = {
    "last-byte-flipped": _flip_last,
    "first-byte-flipped": _flip_first,
    "one-byte-short": lambda data: data[:-1],
    "one-byte-longer": lambda data: data + b"\x00",
    "empty": lambda data: b"",
}


@pytest.mark.parametrize("near_miss", NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
async def test_replace_writes_nothing_when_the_payload_differs_by_one_byte(
    server_store_factory: StoreFactory, near_miss: Callable[[bytes], bytes]
) -> None:
    store = server_store(server_store_factory)
    key = await created(store)
    assert not await store.replace(key, near_miss(PAYLOAD), b"lost", 60)
    assert await store.get(key) == PAYLOAD


async def test_replace_from_a_payload_read_before_another_write_writes_nothing(
    server_store_factory: StoreFactory,
) -> None:
    # Two app processes: this one loaded the record, the other saved over it since.
    mine, theirs = server_store(server_store_factory), server_store(server_store_factory)
    key = await created(mine)
    assert await mine.get(key) == PAYLOAD
    assert await theirs.replace(key, PAYLOAD, b"theirs", 60)
    assert not await mine.replace(key, PAYLOAD, b"mine", 60)
    assert await mine.get(key) == b"theirs"
    # The same bytes written back by the other: exact again, so the swap goes through.
    assert await theirs.replace(key, b"theirs", PAYLOAD, 60)
    assert await mine.replace(key, PAYLOAD, b"mine", 60)
    assert await theirs.get(key) == b"mine"


async def test_replace_writes_nothing_when_the_record_is_gone(
    server_store_factory: StoreFactory,
) -> None:
    store = server_store(server_store_factory)
    never = new_key()
    assert not await store.replace(never, PAYLOAD, b"lost", 60)
    removed = await created(store)
    await store.remove(removed)
    assert not await store.replace(removed, PAYLOAD, b"lost", 60)
    # Nothing was created in their place: a logged-out session stays logged out.
    assert await store.get(never) is None
    assert await store.get(removed) is None
    assert await store.create(removed, b"fresh", 60)  # the key is free, not taken by a write


async def test_replace_writes_nothing_when_the_record_has_expired(
    server_store_factory: StoreFactory,
) -> None:
    store = server_store(server_store_factory)
    key = await created(store, ttl=SHORT_TTL)
    await wait_until_gone(store, key)
    # Stores whose native expiry lags (PostgreSQL rows, Mongo's TTL monitor) may still hold
    # the record: the swap must see it as the reads do, dead.
    assert not await store.replace(key, PAYLOAD, b"revived", 60)
    assert await store.get(key) is None


async def test_of_concurrent_replaces_from_one_payload_exactly_one_wins(
    server_store_factory: StoreFactory,
) -> None:
    # Several store objects (several pools or clients, as several app processes have) and
    # several swaps on each (which a store may batch): the server decides.
    stores = [server_store(server_store_factory) for _ in range(4)]
    key = await created(stores[0])
    for store in stores:
        assert await store.get(key) == PAYLOAD  # each connected before the race
    attempts = [b"winner?%02d" % n for n in range(20)]
    results = await asyncio.gather(
        *(
            stores[n % len(stores)].replace(key, PAYLOAD, data, 60)
            for n, data in enumerate(attempts)
        )
    )
    winners = [data for data, won in zip(attempts, results, strict=True) if won]
    assert len(winners) == 1
    assert await stores[1].get(key) == winners[0]


async def test_concurrent_replaces_of_different_records_each_get_their_own_answer(
    server_store_factory: StoreFactory,
) -> None:
    # Issued together, so a store that batches sends them in one statement or pipeline:
    # matching, stale and removed records side by side, each answered and written alone.
    store = server_store(server_store_factory)
    payloads = [PAYLOAD + b"%02d" % n for n in range(12)]
    keys = [await created(store, payload) for payload in payloads]
    for key in keys[9:]:
        await store.remove(key)
    stale = {0, 3, 6}  # these swaps expect a payload one byte off
    results = await asyncio.gather(
        *(
            store.replace(key, _flip_last(payload) if n in stale else payload, b"new%02d" % n, 60)
            for n, (key, payload) in enumerate(zip(keys, payloads, strict=True))
        )
    )
    assert results == [n not in stale and n < 9 for n in range(12)]
    for n, (key, payload) in enumerate(zip(keys, payloads, strict=True)):
        held = await store.get(key)
        assert held == (None if n >= 9 else payload if n in stale else b"new%02d" % n)


async def test_replace_of_identical_bytes_counts_as_written(
    server_store_factory: StoreFactory,
) -> None:
    # MySQL/MariaDB report rows changed, not matched, unless the client asks otherwise;
    # Mongo has matched and modified counts. A write of the same bytes whose new expiry
    # falls in the same millisecond changes nothing: repeated back to back, some do.
    store = server_store(server_store_factory)
    key = await created(store)
    for _ in range(40):
        assert await store.replace(key, PAYLOAD, PAYLOAD, 60)
    assert await store.get(key) == PAYLOAD
    # And it was a write that keeps the compare exact: a different expectation still fails.
    assert not await store.replace(key, _flip_last(PAYLOAD), b"lost", 60)
    assert await store.get(key) == PAYLOAD


@pytest.mark.slow
@pytest.mark.parametrize("server_store_factory", FAULT_KINDS, indirect=True)
async def test_replace_on_a_store_that_is_down_raises_store_unavailable(
    server_store_factory: StoreFactory,
    server: ServerHandle,  # noqa: F811 - the fixture imported above
) -> None:
    store = server_store(server_store_factory)
    key = await created(store)
    async with stopped(server):
        with pytest.raises(StoreUnavailable):
            await store.replace(key, PAYLOAD, b"never", 60)


# -- a crash in the middle of a swap, on PostgreSQL ---------------------------------------------

#: Large enough that a write is on the wire for a while, so kills land mid-statement.
CRASH_PAYLOAD_SIZE = 256 * 1024
#: The writer: a chain of swaps, each from the payload the last one wrote, until killed.
#: Payload i is its number and bytes that only i gives, so a whole one is recognisable.
WRITER = f"""
import asyncio, hashlib, sys
from aiohttp_sessionkit import StoreUnavailable
from aiohttp_sessionkit.stores.postgres import PostgresStore

def payload(i):
    return b"%08d" % i + hashlib.shake_256(b"%d" % i).digest({CRASH_PAYLOAD_SIZE})

async def main(dsn, table, key):
    store = PostgresStore(dsn, table=table)
    current = await store.get(key)
    announced = False
    while True:
        new = payload(int(current[:8]) + 1)
        try:
            if await store.replace(key, current, new, 600):
                current = new
                if not announced:
                    print("writing", flush=True)
                    announced = True
                continue
        except StoreUnavailable:
            await asyncio.sleep(0.05)
        try:
            current = await store.get(key) or current
        except StoreUnavailable:
            pass

asyncio.run(main(*sys.argv[1:]))
"""
#: The writer runs this checkout's package.
CHECKOUT = Path(__file__).resolve().parents[2]


def crash_payload(number: int) -> bytes:
    return b"%08d" % number + hashlib.shake_256(b"%d" % number).digest(CRASH_PAYLOAD_SIZE)


async def start_writer(dsn: str, table: str, key: str) -> asyncio.subprocess.Process:
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        dsn,
        table,
        key,
        cwd=CHECKOUT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert writer.stdout is not None
    async with asyncio.timeout(20):
        assert await writer.stdout.readline() == b"writing\n"
    return writer


async def whole_payload(store: ServerStore, key: str) -> int:
    """The number of the payload the record holds, checked whole, byte for byte."""
    held = await store.get(key)
    assert held is not None
    number = int(held[:8])
    assert held == crash_payload(number)
    return number


@pytest.mark.slow
@pytest.mark.parametrize("crash", ["app-killed", "server-crashed"])
async def test_a_crash_mid_replace_leaves_a_whole_payload_on_postgres(
    postgres_server: ServerHandle, crash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiohttp_sessionkit.stores.postgres import PostgresStore

    if crash == "server-crashed" and postgres_server.external:
        pytest.skip("an external server cannot be crashed")
    table = f"crash_{secrets.token_hex(6)}"
    store = PostgresStore(postgres_server.url, table=table)
    key = new_key()
    assert await store.create(key, crash_payload(0), 600)
    rounds = 2 if crash == "app-killed" else 1
    try:
        for _ in range(rounds):
            writer = await start_writer(postgres_server.url, table, key)
            try:
                await asyncio.sleep(random.uniform(0.05, 0.3))
                if crash == "app-killed":
                    writer.kill()  # SIGKILL: no cleanup, the connection just drops
                else:
                    # SIGQUIT is PostgreSQL's immediate shutdown: no checkpoint, and crash
                    # recovery from the WAL on the next start, as after a power cut.
                    monkeypatch.setattr(postgres_server, "stop_signal", signal.SIGQUIT)
                    await asyncio.to_thread(postgres_server.restart)
                    await store.close()  # its pooled connections died with the server
                    before = await whole_payload(store, key)
                    # The writer got 503s while the server was down and writes again now.
                    for _ in range(300):
                        if await whole_payload(store, key) != before:
                            break
                        await asyncio.sleep(0.05)
                    else:
                        pytest.fail("the writer did not write again after the restart")
                    writer.kill()
            finally:
                if writer.returncode is None:
                    writer.kill()
                await writer.wait()
            # Nothing of the dead writer holds the row for long: a swap from what the row
            # holds goes through. (The statement the writer had sent when it died may still
            # commit, once: PostgreSQL finishes it before noticing the client is gone.)
            for _ in range(100):
                number = await whole_payload(store, key)
                if await store.replace(key, crash_payload(number), crash_payload(number + 1), 600):
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the row stayed held after its writer died")
            assert number > 0
            assert await whole_payload(store, key) == number + 1
    finally:
        if not postgres_server.is_running:
            await asyncio.to_thread(postgres_server.start)
        await store.close()


# -- an answer lost on the way back ------------------------------------------------------------


class AnswerCutter:
    """A TCP proxy to a real server that, once armed, drops the server's next answer and
    closes that client connection: the statement ran, its caller never hears so."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._armed = False
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> AnswerCutter:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()  # whatever the store left open
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    def arm(self) -> None:
        self._armed = True

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._writers.add(client_w)
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.add(server_w)

        async def upstream() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if self._armed:
                    self._armed = False
                    self.cuts += 1
                    client_w.transport.abort()  # the answer is dropped, the connection gone
                    server_w.close()
                    return
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        pipes = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        self._pipes.update(pipes)
        with contextlib.suppress(OSError):
            await asyncio.gather(*pipes)
        for writer in (client_w, server_w):
            writer.transport.abort()


def _through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by 127.0.0.1:``port``."""
    scheme, rest = url.split("://", 1)
    credentials, _, location = rest.rpartition("@")
    path = location.split("/", 1)[1]
    return f"{scheme}://{credentials + '@' if credentials else ''}127.0.0.1:{port}/{path}"


@pytest.mark.parametrize("kind", ["postgres", "sql-postgres", "sql-mariadb"])
async def test_a_replace_whose_answer_was_lost_reports_its_own_write(
    kind: str, request: pytest.FixtureRequest
) -> None:
    # The connection dies after the server committed the swap and before the answer
    # arrived. The store sends the swap again on a fresh connection; that one finds the
    # record holding the new payload. Reporting "lost" would make the session layer merge
    # this request's changes onto its own save (flash messages added twice).
    from aiohttp_sessionkit.stores.postgres import PostgresStore
    from aiohttp_sessionkit.stores.sql import SQLAlchemyStore

    fixture = "mariadb_server" if kind == "sql-mariadb" else "postgres_server"
    url = request.getfixturevalue(fixture).url
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    table = f"cut_{secrets.token_hex(6)}"
    async with AnswerCutter((parts.hostname, parts.port)) as cutter:
        proxied = _through(url, cutter.port)
        store: ServerStore
        if kind == "postgres":
            store = PostgresStore(proxied, table=table)
        elif kind == "sql-postgres":
            store = SQLAlchemyStore(
                "postgresql+asyncpg://" + proxied.split("://", 1)[1], table=table
            )
        else:
            store = SQLAlchemyStore(proxied, table=table)
        try:
            key = await created(store)
            assert await store.replace(key, PAYLOAD, b"first", 60)  # connected, prepared
            cutter.arm()
            assert await store.replace(key, b"first", b"second", 60)
            assert cutter.cuts == 1
            assert await store.get(key) == b"second"
            # The retry's leniency is for its own write only: a stale swap still fails.
            assert not await store.replace(key, b"first", b"third", 60)
        finally:
            await store.close()
