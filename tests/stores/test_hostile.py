"""Hostile cookies and hostile payloads: every one is a fresh, empty session, on every store.

Each case is one cookie (or pair of cookies) an attacker or a broken client can present:
garbage, truncated or bit-flipped copies of a real cookie, odd ids, oversize and non-UTF-8
values, duplicates, a cookie issued for another cookie name, and valid tokens whose stored
payload is hostile (not a JSON object, deeply nested, huge numbers, pickle, from the future).
For every case the read route answers 200 with an empty new session (aiohttp's own 400 for
an oversize header), the store sees no write, the logs hold neither the cookie nor a full
id, and a write request gets a fresh cookie instead of adopting what was presented.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import pickle
import secrets
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any, Literal

import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aiohttp_sessionkit import (
    AbstractStore,
    CookieTooLarge,
    EncryptedCookieStore,
    MemoryStore,
    SerializationError,
    generate_key,
    get_session,
    setup,
)
from aiohttp_sessionkit.ids import is_valid_session_id
from aiohttp_sessionkit.serializers import MAX_DEPTH, JSONSerializer, check_depth
from aiohttp_sessionkit.session import Session, decode_payload, encode_payload
from aiohttp_sessionkit.stores.jwt import MAX_TOKEN_BYTES, SESSION_TYPE, JWTStore
from tests.conftest import CountingStore, StoreFactory, set_cookies
from tests.stores.test_contract import (
    COOKIE,
    COOKIE_WIRE,
    build_app,
    client_for,
    login,
    read,
    with_cookie,
)

OTHER = "OTHER_SESSION"
NAMESPACE = COOKIE  # stores file sessions under the cookie name
FRESH = {"data": {}, "new": True}
HEADER = struct.Struct(">BIIi")  # session.py's payload header: version, created, accessed, max_age
DAY = 24 * 3600
#: Shorter values are too likely to occur in a log line by chance to be checked for.
MIN_SECRET_LEN = 9
#: aiohttp's default limit for one header line is 8190 bytes.
UNDER_HEADER_LIMIT = 8000
OVER_HEADER_LIMIT = 10 * 1024

Layout = Literal["single", "one_header", "two_headers"]


# -- the app under attack -------------------------------------------------------------------


class RecordingStore(CountingStore):
    """Counts calls like CountingStore and records the token each save was asked to update."""

    def __init__(self, inner: AbstractStore) -> None:
        super().__init__(inner)
        self.save_tokens: list[str | None] = []

    async def save(self, token: str | None, data: bytes, *, ttl: int, namespace: str) -> str | None:
        self.save_tokens.append(token)
        return await super().save(token, data, ttl=ttl, namespace=namespace)


@dataclass
class Ctx:
    """One app (two session setups sharing one store) and the genuine cookies it issued."""

    client: Any
    store: AbstractStore  # the real store, for planting payloads through its public API
    counting: RecordingStore
    kind: str
    issued: str  # a valid AIOHTTP_SESSION cookie, holding {"user": "alice"}
    other: str  # a valid cookie issued under the cookie name OTHER

    async def plant(self, payload: bytes) -> str:
        """A valid token under our cookie name whose stored payload is ``payload``."""
        if isinstance(self.store, JWTStore):
            # A JWT carries its payload itself: a genuine signature over the hostile bytes.
            signed = jwt_for_payload(self.store, payload)
            if len(signed) > MAX_TOKEN_BYTES:
                # Refused unread, like any token over 8 KB: this one never reaches a decoder.
                pytest.skip("a JWT over 8 KB is refused before its payload is read")
            return signed
        try:
            token = await self.store.save(None, payload, ttl=600, namespace=NAMESPACE)
        except CookieTooLarge:
            # It also refuses to open a token that long: such a payload never reaches decode.
            pytest.skip("the cookie store cannot carry this payload (over 4096 bytes)")
        assert token is not None
        return token


def jwt_for_payload(store: JWTStore, payload: bytes) -> str:
    """The JWT counterpart of a planted binary payload, signed with the store's key.

    A payload in the session layer's binary format whose body parses becomes the same
    session as claims (times, max_age and flashes in the private claim, data at the top
    level), so timing and shape cases keep their meaning; anything else is signed as the
    JWS payload exactly as it is.
    """
    if len(payload) >= HEADER.size:
        version, created, accessed, max_age = HEADER.unpack_from(payload)
        try:
            body = json.loads(payload[HEADER.size :].decode())  # str: a BOM stays an error
        except (ValueError, RecursionError):
            body = None
        if (
            version == 1
            and isinstance(body, list)
            and 1 <= len(body) <= 2
            and isinstance(body[0], dict)
        ):
            t = int(time.time())
            private: dict[str, Any] = {"s": "planted", "c": created, "a": accessed}
            if max_age != -1:
                private["m"] = max_age
            if len(body) > 1:
                private["f"] = body[1]
            claims = {"exp": t + 600, "iat": t, "jti": "planted", "_sk": private, **body[0]}
            return signed_jwt(store, json.dumps(claims).encode())
    return signed_jwt(store, payload)


def signed_jwt(store: JWTStore, payload: bytes) -> str:
    """A compact JWS over exactly ``payload``, signed with the store's signing key (and its
    signer: an ES256 signature in the low-S form the store requires)."""
    key = store._keys[0]
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": store.algorithm, "kid": key.kid, "typ": SESSION_TYPE}).encode()
    ).rstrip(b"=")
    signing_input = header + b"." + base64.urlsafe_b64encode(payload).rstrip(b"=")
    assert store._sign is not None
    signature = store._sign(signing_input)
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


async def other_login(request: web.Request) -> web.Response:
    (await get_session(request, OTHER))["user"] = "alice"
    return web.Response(text="in")


async def make_ctx(aiohttp_client: Any, store: AbstractStore, kind: str) -> Ctx:
    counting = RecordingStore(store)
    app = build_app(counting, COOKIE_WIRE)
    setup(app, counting, cookie_name=OTHER)
    app.router.add_post("/other/login", other_login)
    client = await client_for(aiohttp_client, app)
    issued = await login(client, COOKIE_WIRE, user="alice")
    # Control: the genuine cookie opens, so a fresh session below means the case was refused.
    assert await read(client, COOKIE_WIRE, issued) == {"data": {"user": "alice"}, "new": False}
    response = await client.post("/other/login")
    other = str(set_cookies(response)[OTHER].value)
    return Ctx(client, store, counting, kind, issued, other)


# -- sending exact bytes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Presented:
    """The cookie values to send under our cookie name, and how to lay them out."""

    values: tuple[bytes, ...]
    layout: Layout = "single"

    def header_lines(self) -> list[bytes]:
        pairs = [COOKIE.encode() + b"=" + value for value in self.values]
        if self.layout == "two_headers":
            return pairs
        return [b"; ".join(pairs)]

    def secrets(self, ctx: Ctx) -> set[str]:
        """Strings no log line may contain: each long cookie value and every issued id."""
        found = {ctx.issued, ctx.other}
        for value in self.values:
            if len(value) >= MIN_SECRET_LEN:
                found.add(value.decode("utf-8", "surrogateescape"))
                found.add(value.decode("latin-1"))
            found.update(ascii_runs(value))
        return found


def ascii_runs(value: bytes) -> set[str]:
    """Runs of printable ASCII long enough to be secrets (what survives any decoding)."""
    runs, current = set(), bytearray()
    for byte in value + b"\x00":
        if 0x21 <= byte <= 0x7E:
            current.append(byte)
            continue
        if len(current) >= MIN_SECRET_LEN:
            runs.add(current.decode())
        current.clear()
    return runs


def is_plain(value: bytes) -> bool:
    return all(0x21 <= byte <= 0x7E for byte in value)


@dataclass
class Reply:
    status: int
    body: bytes
    cookies: dict[str, str]  # Set-Cookie values by cookie name

    def json(self) -> Any:
        return json.loads(self.body)


async def send(client: Any, method: str, path: str, presented: Presented) -> Reply:
    """Send ``presented`` with the aiohttp client when it can carry it, else over a socket."""
    if presented.layout == "single" and all(is_plain(v) for v in presented.values):
        headers = {"Cookie": presented.header_lines()[0].decode()}
        response = await client.request(method, path, headers=headers)
        cookies = {name: str(morsel.value) for name, morsel in set_cookies(response).items()}
        return Reply(response.status, await response.read(), cookies)
    return await send_raw(client, method, path, presented.header_lines())


async def send_raw(client: Any, method: str, path: str, cookie_lines: list[bytes]) -> Reply:
    """One HTTP/1.1 request with exactly these Cookie header lines; parse the answer by hand."""
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
            "Content-Length: 0\r\n"
        ).encode()
        for cookie_line in cookie_lines:
            head += b"Cookie: " + cookie_line + b"\r\n"
        writer.write(head + b"\r\n")
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ")[1])
    cookies: dict[str, str] = {}
    length: int | None = None
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "set-cookie":
            jar: SimpleCookie = SimpleCookie()
            jar.load(value.strip())
            cookies.update({key: morsel.value for key, morsel in jar.items()})
        elif name.strip().lower() == "content-length":
            length = int(value)
    assert length is not None, "expected a Content-Length response"
    assert len(body) == length
    return Reply(status, body, cookies)


# -- the cases ------------------------------------------------------------------------------

Build = Callable[[Ctx], Awaitable[Presented]]


@dataclass(frozen=True)
class Case:
    id: str
    build: Build
    bug: str | None = None  # a known library bug: the case is expected to fail
    oversize: bool = False  # aiohttp refuses the request line itself with a 400

    def param(self) -> Any:
        marks = [] if self.bug is None else [pytest.mark.xfail(strict=True, reason=self.bug)]
        return pytest.param(self, id=self.id, marks=marks)


def sent(*values: bytes | str, layout: Layout = "single") -> Build:
    """A case whose cookie values do not depend on the app."""
    encoded = tuple(v.encode() if isinstance(v, str) else v for v in values)

    async def build(ctx: Ctx) -> Presented:
        return Presented(encoded, layout)

    return build


def derived(change: Callable[[str], str]) -> Build:
    """A case made from the genuine cookie the app issued for this store."""

    async def build(ctx: Ctx) -> Presented:
        value = change(ctx.issued)
        assert value != ctx.issued
        return Presented((value.encode(),))

    return build


def planted(payload: Callable[[], bytes]) -> Build:
    """A case whose token is genuine but whose stored (or sealed) payload is hostile."""

    async def build(ctx: Ctx) -> Presented:
        return Presented(((await ctx.plant(payload())).encode(),))

    return build


async def other_name(ctx: Ctx) -> Presented:
    return Presented((ctx.other.encode(),))


def header(*, created: int = 0, accessed: int = 0, version: int = 1, max_age: int = -1) -> bytes:
    """A payload header like session.py's, with times as offsets from now."""
    t = int(time.time())
    return HEADER.pack(version, t + created, t + accessed, max_age)


def body(text: str | bytes) -> Callable[[], bytes]:
    raw = text.encode() if isinstance(text, str) else text
    return lambda: header() + raw


def truncate(length: int) -> Callable[[str], str]:
    return lambda value: value[:length]


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def flip_char(position: int) -> Callable[[str], str]:
    """Change one base64 character so that the bytes it encodes change (top bit of 6)."""

    def change(value: str) -> str:
        i = position % len(value)
        return value[:i] + B64[B64.index(value[i]) ^ 32] + value[i + 1 :]

    return change


def flip_bit(byte: int, bit: int) -> Callable[[str], str]:
    """Decode the token, flip one bit of one byte, encode it again the same way.

    A JWT is three base64url segments: the bytes are counted across them, in order.
    """

    def change(value: str) -> str:
        segments = [
            bytearray(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            for part in value.split(".")
        ]
        index = byte % sum(len(segment) for segment in segments)
        for segment in segments:
            if index < len(segment):
                segment[index] ^= 1 << bit
                break
            index -= len(segment)
        return ".".join(
            base64.urlsafe_b64encode(bytes(segment)).rstrip(b"=").decode() for segment in segments
        )

    return change


def has_unused_bits(token: str) -> bool:
    # Base64 of a length that is not a multiple of 4 ends in a character whose low 2 or 4
    # bits encode nothing (for a JWT: its signature segment).
    return len(token.rpartition(".")[2]) % 4 != 0


async def respelled(ctx: Ctx) -> Presented:
    """A genuine token spelled another way: one unused low bit of its last character set.

    Same bytes, so a lenient decoder opens it; RFC 4648 section 3.5 wants those bits zero.
    """
    token = ctx.issued
    padding = 0
    while not has_unused_bits(token):  # a genuine token of a length that has unused bits
        padding += 1
        token = await ctx.plant(header(created=-60) + b'[{"pad":"%s"}]' % (b"x" * padding))
        assert (await read(ctx.client, COOKIE_WIRE, token))["new"] is False  # control: opens
    return Presented(((token[:-1] + B64[B64.index(token[-1]) ^ 1]).encode(),))


def header_safe(value: bytes) -> bytes:
    """Drop the bytes HTTP forbids in a field value (controls) and the cookie separator."""
    return bytes(b for b in value if b >= 0x20 and b != 0x7F and b != ord(";"))


def nested_in_data(levels: int) -> str:
    """A session body whose data hold one value nested ``levels`` lists deep."""
    return '[{"a":' + "[" * levels + "]" * levels + "}]"


PICKLE = pickle.dumps({"user": "admin"}, protocol=pickle.HIGHEST_PROTOCOL)
DEEP = 10_000

CLIENT_CASES = [
    Case("garbage", sent("not-a-session-cookie-at-all")),
    Case("garbage-base64", sent(base64.urlsafe_b64encode(bytes(range(80))).rstrip(b"="))),
    Case("empty", sent(b"")),
    Case("just-under-header-limit", sent(b"Q" * UNDER_HEADER_LIMIT)),
    Case("oversize-10kb", sent(b"Q" * OVER_HEADER_LIMIT), oversize=True),
    Case("non-utf8", sent(b"\xff\xfe\xfdMARKERnonutf8\xc3\x28\x80")),
    Case("high-bytes", sent(bytes(range(0x80, 0x100)))),
    Case("quoted", sent('"quoted-cookie-value"')),
    Case("pickle-base64", sent(base64.urlsafe_b64encode(PICKLE))),
    Case("pickle-bytes", sent(header_safe(PICKLE))),
    Case("json-object", sent('{"$ne":null,"user":"admin"}')),
    Case("path-traversal", sent("../../etc/passwd")),
    Case("star", sent("*")),
    Case("one-char", sent("a")),
    Case("thousand-chars", sent("A" * 1000)),
    Case("id-shaped-never-issued", sent("A" * 43)),
    Case("id-shape-42", sent("B" * 42)),
    Case("id-shape-44", sent("C" * 44)),
    Case("percent-nul", sent("%00")),
    Case("percent-encoded-traversal", sent("..%2F..%2Fetc%2Fpasswd%00")),
    Case("sql", sent("'%20OR%20'1'='1")),
    Case("unicode", sent("セッション-ß-é-🍪".encode())),
    Case("unicode-id-length", sent(("é" * 43).encode())),
    Case("duplicate-in-one-header", sent("first-garbage-value", "A" * 43, layout="one_header")),
    Case("duplicate-headers", sent("first-garbage-value", "A" * 43, layout="two_headers")),
]

DERIVED_CASES = [
    Case("truncated-1", derived(truncate(1))),
    Case("truncated-8", derived(truncate(8))),
    Case("truncated-half", derived(lambda v: v[: len(v) // 2])),
    Case("truncated-minus-4", derived(truncate(-4))),
    Case("truncated-minus-1", derived(truncate(-1))),
    Case("extended", derived(lambda v: v + "A")),
    Case("swapcase", derived(str.swapcase)),
    *[Case(f"flipped-char-{p}", derived(flip_char(p))) for p in (0, 1, 4, 20, -2, -1)],
    *[
        Case(f"flipped-bit-{byte}-{bit}", derived(flip_bit(byte, bit)))
        for byte, bit in ((0, 0), (1, 7), (5, 3), (17, 1), (-17, 4), (-1, 0))
    ],
    Case("other-cookie-name", other_name),
    Case("other-spelling-of-the-last-character", respelled),
]

PAYLOAD_CASES = [
    Case("body-list-empty", planted(body("[]"))),
    Case("body-list-of-number", planted(body("[1]"))),
    Case("body-list-too-long", planted(body("[{},[],[]]"))),
    Case("body-list-of-list", planted(body("[[]]"))),
    Case("body-flashes-not-list", planted(body('[{},"flash"]'))),
    Case("body-object", planted(body('{"user":"admin"}'))),
    Case("body-string", planted(body('"admin"'))),
    Case("body-number", planted(body("42"))),
    Case("body-null", planted(body("null"))),
    Case("body-true", planted(body("true"))),
    Case("body-nan", planted(body('[{"n":NaN}]'))),
    Case("body-deep-lists", planted(body("[" * DEEP + "]" * DEEP))),
    # deep enough for RecursionError, small enough for the cookie store to seal
    Case("body-deep-lists-1200", planted(body("[" * 1200 + "]" * 1200))),
    Case("body-deep-in-data", planted(body('[{"a":' + "[" * DEEP + "]" * DEEP + "}]"))),
    Case("body-deep-objects", planted(body('{"a":' * DEEP + "1" + "}" * DEEP))),
    # Past the library's depth limit, on every store and every Python: one level past it as
    # a JWT's claims, two as a record (its list and data object wrap the value); then deep
    # enough that only Python 3.11's parser gives up by itself.
    *[
        Case(f"body-nested-{levels}-in-data", planted(body(nested_in_data(levels))))
        for levels in (MAX_DEPTH, 1200)
    ],
    Case("body-5000-digit-number", planted(body("7" * 5000))),
    Case("body-5000-digit-number-in-data", planted(body('[{"n":' + "7" * 5000 + "}]"))),
    Case("body-5000-digit-float-in-data", planted(body('[{"n":' + "7" * 5000 + ".0}]"))),
    Case("body-float-overflow", planted(body('[{"n":1e999}]'))),
    Case("body-pickle", planted(body(PICKLE))),
    Case("body-not-utf8", planted(body(b'[{"a":"\xff\xfe"}]'))),
    Case("body-utf8-bom", planted(body(b'\xef\xbb\xbf[{"a":1}]'))),
    Case("body-empty", planted(body(b""))),
    Case("payload-pickle-without-header", planted(lambda: PICKLE)),
    Case("payload-json-without-header", planted(lambda: b'[{"user":"admin"}]')),
    Case("payload-empty", planted(lambda: b"")),
    Case("payload-short-header", planted(lambda: header()[:7])),
    Case("header-version-2", planted(lambda: header(version=2) + b"[{}]")),
    Case("header-max-age-0", planted(lambda: header(max_age=0) + b'[{"a":1}]')),
    Case("header-max-age-negative", planted(lambda: header(max_age=-5) + b'[{"a":1}]')),
    Case("issued-in-the-future", planted(lambda: header(created=DAY, accessed=DAY) + b'[{"a":1}]')),
    Case("accessed-in-the-future", planted(lambda: header(accessed=DAY) + b'[{"a":1}]')),
    Case("accessed-before-created", planted(lambda: header(accessed=-60) + b'[{"a":1}]')),
    Case("idle-expired", planted(lambda: header(created=-15 * DAY, accessed=-15 * DAY) + b"[{}]")),
    Case("absolute-expired", planted(lambda: header(created=-31 * DAY, accessed=-1) + b"[{}]")),
]

CASES = [case.param() for case in CLIENT_CASES + DERIVED_CASES + PAYLOAD_CASES]


# -- checks ---------------------------------------------------------------------------------


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture everything our logger and aiohttp's loggers say, down to DEBUG."""
    caplog.set_level(logging.DEBUG, logger="aiohttp_sessionkit")
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    return caplog


def assert_logs_hold_no_secret(
    logs: pytest.LogCaptureFixture, secrets: set[str], *, oversize: bool = False
) -> None:
    text = logs.text
    messages = [record.getMessage() for record in logs.records]
    for secret in secrets:
        assert secret not in text, f"a log line holds the cookie or an id: {secret[:12]!r}..."
        assert not any(secret in message for message in messages)
    errors = [r for r in logs.records if r.levelno >= logging.ERROR]
    if oversize:
        # aiohttp logs its own 400 at ERROR (with the first ~100 bytes of the line); only that.
        errors = [r for r in errors if r.name != "aiohttp.server"]
    assert not errors, "an error was logged"


@pytest.mark.parametrize("case", CASES)
async def test_hostile_cookie_reads_as_a_fresh_session_without_store_writes(
    aiohttp_client: Any, store_factory: StoreFactory, logs: pytest.LogCaptureFixture, case: Case
) -> None:
    ctx = await make_ctx(aiohttp_client, store_factory(), store_factory.kind)
    presented = await case.build(ctx)
    counting = ctx.counting
    loads, saves, deletes = counting.loads, counting.saves, counting.deletes

    reply = await send(ctx.client, "GET", "/read", presented)

    if case.oversize:
        assert reply.status == 400
        assert counting.loads == loads  # aiohttp refused it before any handler ran
    else:
        assert reply.status == 200, reply.body[:200]
        assert reply.json() == FRESH
        assert counting.loads - loads <= 1
        if counting.loads > loads:  # a cookie reached the session layer and was refused
            assert any(r.name == "aiohttp_sessionkit" for r in logs.records)
    assert (counting.saves - saves, counting.deletes - deletes) == (0, 0)
    assert reply.cookies == {}
    assert_logs_hold_no_secret(logs, presented.secrets(ctx), oversize=case.oversize)


@pytest.mark.parametrize("case", CASES)
async def test_write_with_hostile_cookie_gets_a_fresh_cookie_and_never_adopts_it(
    aiohttp_client: Any, store_factory: StoreFactory, logs: pytest.LogCaptureFixture, case: Case
) -> None:
    ctx = await make_ctx(aiohttp_client, store_factory(), store_factory.kind)
    presented = await case.build(ctx)
    counting = ctx.counting
    counting.save_tokens.clear()
    saves, deletes = counting.saves, counting.deletes

    reply = await send(ctx.client, "POST", "/set/user/mallory", presented)

    if case.oversize:
        assert reply.status == 400
        assert (counting.saves, counting.deletes) == (saves, deletes)
        assert reply.cookies == {}
        assert_logs_hold_no_secret(logs, presented.secrets(ctx), oversize=True)
        return
    assert reply.status == 200, reply.body[:200]
    assert counting.save_tokens == [None]  # created a new record, never updated the presented one
    assert counting.deletes == deletes
    fresh = reply.cookies[COOKIE]
    assert fresh.encode() not in presented.values
    assert fresh not in (ctx.issued, ctx.other)
    if not store_factory.client_side:
        assert is_valid_session_id(fresh)
    assert await read(ctx.client, COOKIE_WIRE, fresh) == {"data": {"user": "mallory"}, "new": False}
    # The presented cookie still opens nothing, and the genuine session was left alone.
    again = await send(ctx.client, "GET", "/read", presented)
    assert again.status == 200 and again.json() == FRESH
    assert await read(ctx.client, COOKIE_WIRE, ctx.issued) == {
        "data": {"user": "alice"},
        "new": False,
    }
    assert_logs_hold_no_secret(logs, presented.secrets(ctx) | {fresh})


async def test_a_lone_surrogate_in_a_stored_string_survives_the_next_write(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    """JSON escapes can carry a lone surrogate; it must round-trip, not fail the next save."""
    ctx = await make_ctx(aiohttp_client, store_factory(), store_factory.kind)
    token = await ctx.plant(header(created=-60, accessed=-30) + b'[{"a":"\\ud800"}]')
    assert await read(ctx.client, COOKIE_WIRE, token) == {"data": {"a": "\ud800"}, "new": False}
    response = await ctx.client.post("/incr", headers=with_cookie(token))
    assert response.status == 200
    cookie = str(set_cookies(response)[COOKIE].value) if COOKIE in set_cookies(response) else token
    assert (await read(ctx.client, COOKIE_WIRE, cookie))["data"] == {"a": "\ud800", "n": 1}


async def test_a_payload_planted_like_the_hostile_ones_but_valid_does_open(
    aiohttp_client: Any, store_factory: StoreFactory
) -> None:
    """Control for the planted cases: the way they are built is right, only the content is not."""
    ctx = await make_ctx(aiohttp_client, store_factory(), store_factory.kind)
    token = await ctx.plant(header(created=-60, accessed=-30) + b'[{"user":"bob"},["hi"]]')
    assert await read(ctx.client, COOKIE_WIRE, token) == {"data": {"user": "bob"}, "new": False}


@pytest.mark.parametrize(
    ("genuine_first", "layout"),
    [
        pytest.param(True, "one_header", id="genuine-first-one-header"),
        pytest.param(
            False,
            "one_header",
            id="genuine-last-one-header",
        ),
        pytest.param(
            True,
            "two_headers",
            id="genuine-first-two-headers",
        ),
        pytest.param(False, "two_headers", id="genuine-last-two-headers"),
    ],
)
async def test_two_session_cookies_one_genuine_read_as_a_fresh_session(
    aiohttp_client: Any,
    store_factory: StoreFactory,
    logs: pytest.LogCaptureFixture,
    genuine_first: bool,
    layout: Layout,
) -> None:
    """Two cookies of one name are ambiguous (cookie tossing): trust neither."""
    ctx = await make_ctx(aiohttp_client, store_factory(), store_factory.kind)
    planted_value = "A" * 43 if genuine_first else "tossed-by-a-sibling-domain"
    values = (ctx.issued.encode(), planted_value.encode())
    presented = Presented(values if genuine_first else values[::-1], layout)
    saves, deletes = ctx.counting.saves, ctx.counting.deletes
    reply = await send(ctx.client, "GET", "/read", presented)
    assert reply.status == 200
    assert (ctx.counting.saves, ctx.counting.deletes) == (saves, deletes)
    assert_logs_hold_no_secret(logs, presented.secrets(ctx))
    assert reply.json() == FRESH


# -- property tests (memory and cookie stores, to stay fast) ---------------------------------


def make_store(kind: str) -> AbstractStore:
    return MemoryStore() if kind == "memory" else EncryptedCookieStore(generate_key())


@pytest.fixture(params=["memory", "cookie"])
async def quick_ctx(request: pytest.FixtureRequest, aiohttp_client: Any) -> AsyncIterator[Ctx]:
    kind: str = request.param
    yield await make_ctx(aiohttp_client, make_store(kind), kind)


# -- cookie smuggling: our name inside another cookie's value ----------------------------------
#
# A sibling subdomain can set a cookie whose value holds spaces, tabs, quotes or commas, so
# that the Cookie header reads "tossed=x AIOHTTP_SESSION=<the attacker's valid token>" while
# the victim holds no session cookie. A cookie-string splits on ";" only (RFC 6265 section
# 5.4): all of that is one cookie called "tossed", and our name must never be found inside
# it (a __Host- name would otherwise be bypassed: fixation, login CSRF). {token} is a genuine
# token of the app, so a case that is not refused opens alice's session.

SMUGGLED = {
    "space-in-value": "tossed=x {name}={token}",
    "tab-in-value": "tossed=x\t{name}={token}",
    "space-in-value-between-pairs": "a=1; tossed=x {name}={token}; b=2",
    "two-spaces-in-value": "tossed=x  {name}={token}",
    "dollar-version-comma": "$Version=1, {name}={token}",
    "dollar-version-space": '$Version="1" {name}={token}; $Path=/',
    "quoted-value-then-space": 'tossed="x" {name}={token}',
    "quoted-value-with-space-inside": 'tossed="x {name}={token} y"',
    "comma-separated": "tossed=x,{name}={token}",
    "name-as-a-value": "tossed={name}={token}",
    "suffix-of-our-name": "x{name}={token}",
    "suffix-of-our-name-after-a-pair": "a=1; x{name}={token}",
    "suffix-and-prefix-of-our-name": "x{name}={token}; {name}x={token}",
    "space-before-equals": "{name} ={token}",
    "duplicate-names": "{name}={token}; {name}={token}",
    "duplicate-names-no-space": "{name}={token};{name}={token}",
}

#: Controls: the genuine cookie laid out in ways browsers and proxies do send; each opens.
GENUINE_LAYOUTS = {
    "alone": "{name}={token}",
    "no-space-after-semicolon": "a=1;{name}={token}",
    "two-spaces-after-semicolon": "a=1;  {name}={token}",
    "tab-after-semicolon": "a=1;\t{name}={token}",
    "trailing-semicolon": "{name}={token};",
    "between-pairs": "a=1; {name}={token}; b=2",
    "after-a-smuggled-copy": "tossed=x {name}=junk; {name}={token}",
    "before-a-suffixed-name": "{name}={token}; x{name}=junk",
}


def cookie_line(template: str, token: str) -> bytes:
    return template.format(name=COOKIE, token=token).encode()


@pytest.mark.parametrize("template", SMUGGLED.values(), ids=SMUGGLED.keys())
async def test_our_cookie_name_smuggled_inside_another_cookie_is_not_read(
    quick_ctx: Ctx, logs: pytest.LogCaptureFixture, template: str
) -> None:
    ctx = quick_ctx
    line = cookie_line(template, ctx.issued)
    saves, deletes = ctx.counting.saves, ctx.counting.deletes

    reply = await send_raw(ctx.client, "GET", "/read", [line])
    assert reply.status == 200
    assert reply.json() == FRESH, "the smuggled token opened a session"
    assert (ctx.counting.saves, ctx.counting.deletes) == (saves, deletes)
    assert reply.cookies == {}

    # A write starts a fresh session and never adopts the smuggled token.
    ctx.counting.save_tokens.clear()
    reply = await send_raw(ctx.client, "POST", "/set/user/mallory", [line])
    assert reply.status == 200
    assert ctx.counting.save_tokens == [None]
    assert reply.cookies[COOKIE] != ctx.issued
    assert await read(ctx.client, COOKIE_WIRE, ctx.issued) == {
        "data": {"user": "alice"},
        "new": False,
    }
    assert_logs_hold_no_secret(logs, {ctx.issued})


@pytest.mark.parametrize("template", GENUINE_LAYOUTS.values(), ids=GENUINE_LAYOUTS.keys())
async def test_the_genuine_cookie_opens_wherever_a_cookie_pair_may_start(
    quick_ctx: Ctx, template: str
) -> None:
    reply = await send_raw(
        quick_ctx.client, "GET", "/read", [cookie_line(template, quick_ctx.issued)]
    )
    assert reply.status == 200
    assert reply.json() == {"data": {"user": "alice"}, "new": False}


@pytest.mark.parametrize("template", SMUGGLED.values(), ids=SMUGGLED.keys())
async def test_a_smuggled_name_in_a_second_cookie_header_is_not_read(
    quick_ctx: Ctx, template: str
) -> None:
    """The same family over two Cookie header lines (HTTP/2 splits cookies so): the slow path."""
    line = cookie_line(template, quick_ctx.issued)
    reply = await send_raw(quick_ctx.client, "GET", "/read", [b"a=1", line])
    assert reply.status == 200
    assert reply.json() == FRESH


PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# What an HTTP header value can carry: no control characters; non-ASCII goes out as UTF-8.
header_text = st.text(
    st.characters(min_codepoint=0x20, exclude_categories=("Cc", "Cs"), exclude_characters="\x7f"),
    max_size=300,
).map(str.strip)


@PROPERTY_SETTINGS
@given(value=header_text)
async def test_any_text_cookie_reads_as_a_fresh_session(
    quick_ctx: Ctx, logs: pytest.LogCaptureFixture, value: str
) -> None:
    ctx = quick_ctx
    logs.clear()
    saves, deletes = ctx.counting.saves, ctx.counting.deletes
    response = await ctx.client.get("/read", headers=with_cookie(value))
    assert response.status == 200
    assert await response.json() == FRESH
    assert "Set-Cookie" not in response.headers
    assert (ctx.counting.saves, ctx.counting.deletes) == (saves, deletes)
    if len(value) >= MIN_SECRET_LEN:
        for record in logs.records:
            # Fixed text (the template, the cookie names) may happen to contain the value.
            fixed = f"{record.msg} {NAMESPACE} {OTHER}"
            assert value not in record.getMessage() or value in fixed


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
payload_bodies = st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())


@PROPERTY_SETTINGS
@example(payload_body=b"\xb5", with_header=False)  # the cookie store's frame marker
@given(payload_body=payload_bodies, with_header=st.booleans())
async def test_any_stored_payload_decodes_without_raising(
    quick_ctx: Ctx, payload_body: bytes, with_header: bool
) -> None:
    ctx = quick_ctx
    payload = header() + payload_body if with_header else payload_body
    token = await ctx.plant(payload)
    assert await ctx.store.load(token, namespace=NAMESPACE) == payload
    session = decode_payload(
        payload,
        JSONSerializer(),
        identity=None,
        idle_timeout=DAY,
        absolute_timeout=30 * DAY,
    )
    saves = ctx.counting.saves
    response = await ctx.client.get("/read", headers=with_cookie(token))
    assert response.status == 200
    answer = await response.json()
    if session is None:
        assert answer == FRESH
    else:
        assert answer["new"] is False and isinstance(answer["data"], dict)
    assert ctx.counting.saves == saves


# -- one nesting limit for every decoder ------------------------------------------------------


def deep_data(levels: int, kind: str = "lists") -> str:
    """A JSON value nested ``levels`` deep: lists, objects, or the two alternating."""
    is_list = [kind == "lists" or (kind == "mixed" and i % 2 == 0) for i in range(levels)]
    opening = "".join("[" if lst else '{"a":' for lst in is_list[:-1])
    closing = "".join("]" if lst else "}" for lst in reversed(is_list[:-1]))
    return opening + ("[]" if is_list[-1] else "{}") + closing


async def opens_as_server_record(value: str) -> bool:
    # The session layer's record: [data, flashes]; the value sits inside the data object.
    payload = header() + f'[{{"v":{value}}}]'.encode()
    opened = decode_payload(
        payload, JSONSerializer(), identity=None, idle_timeout=DAY, absolute_timeout=DAY
    )
    return opened is not None


async def opens_as_sealed_cookie(value: str) -> bool:
    store = EncryptedCookieStore(generate_key())
    payload = header() + f'[{{"v":{value}}}]'.encode()
    token = await store.save(None, payload, ttl=600, namespace=NAMESPACE)
    assert token is not None
    loaded = await store.load(token, namespace=NAMESPACE)
    if loaded is None:
        return False
    opened = decode_payload(
        loaded, JSONSerializer(), identity=None, idle_timeout=DAY, absolute_timeout=DAY
    )
    return opened is not None


async def opens_as_jwt_claims(value: str) -> bool:
    store = JWTStore(secrets.token_bytes(32))
    t = int(time.time())
    claims = f'{{"exp":{t + 600},"iat":{t},"v":{value}}}'.encode()
    return await store.load(signed_jwt(store, claims), namespace=NAMESPACE) is not None


async def opens_as_jwt_header(value: str) -> bool:
    store = JWTStore(secrets.token_bytes(32))
    t = int(time.time())
    raw_header = f'{{"alg":"HS256","typ":"{SESSION_TYPE}","v":{value}}}'.encode()
    signing_input = (
        base64.urlsafe_b64encode(raw_header).rstrip(b"=")
        + b"."
        + base64.urlsafe_b64encode(f'{{"exp":{t + 600},"iat":{t}}}'.encode()).rstrip(b"=")
    )
    assert store._sign is not None
    signature = base64.urlsafe_b64encode(store._sign(signing_input)).rstrip(b"=")
    return (
        await store.load((signing_input + b"." + signature).decode(), namespace=NAMESPACE)
        is not None
    )


async def opens_as_legacy_record(value: str) -> bool:
    from cryptography.fernet import Fernet

    from aiohttp_sessionkit import AiohttpSessionCookie

    key = Fernet.generate_key()
    record = f'{{"created":{int(time.time())},"session":{{"v":{value}}}}}'
    cookie = Fernet(key).encrypt(record.encode()).decode()
    return await AiohttpSessionCookie(key.decode()).load(cookie, namespace=NAMESPACE) is not None


#: decoder -> (how it opens a text holding the value, how deep its own wrapping is)
DECODERS: dict[str, tuple[Callable[[str], Awaitable[bool]], int]] = {
    "server-record": (opens_as_server_record, 2),
    "sealed-cookie": (opens_as_sealed_cookie, 2),
    "jwt-claims": (opens_as_jwt_claims, 1),
    "jwt-header": (opens_as_jwt_header, 1),
    "legacy-record": (opens_as_legacy_record, 2),
}


@pytest.mark.parametrize("kind", ["lists", "objects", "mixed"])
@pytest.mark.parametrize("decoder", sorted(DECODERS))
async def test_every_decoder_opens_a_payload_at_the_depth_limit_and_refuses_one_level_more(
    decoder: str, kind: str
) -> None:
    opens, wrapping = DECODERS[decoder]
    assert await opens(deep_data(30, kind))
    assert await opens(deep_data(MAX_DEPTH - wrapping, kind))
    assert not await opens(deep_data(MAX_DEPTH - wrapping + 1, kind))


@pytest.mark.parametrize("levels", [1000, 1500])
@pytest.mark.parametrize("decoder", sorted(DECODERS))
async def test_every_decoder_refuses_deep_nesting_on_every_python(
    decoder: str, levels: int
) -> None:
    """1,000 levels: the parser of Python 3.11 gives up by itself, that of 3.12+ does not."""
    opens, _ = DECODERS[decoder]
    assert not await opens(deep_data(levels))


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 1000, 20_000, 100_000])
def test_deep_json_is_refused_before_the_parser_runs(levels: int) -> None:
    text = deep_data(levels)
    with pytest.raises(ValueError, match="nested deeper than 64"):
        check_depth(text)
    with pytest.raises(ValueError, match="nested deeper than 64"):
        JSONSerializer().loads(text.encode())


def test_brackets_inside_strings_do_not_count_towards_the_depth() -> None:
    for text in (
        json.dumps(["[" * 5000, "{" * 5000]),
        json.dumps({"a": '\\"[[[' * 2000}),
        json.dumps([{"k[": "]]]" * 3000, "v": "\\" * 99}]),
    ):
        assert check_depth(text) == text
        assert JSONSerializer().loads(text.encode()) == json.loads(text)


def test_a_session_nested_past_the_limit_fails_to_save_with_a_serialization_error() -> None:
    session = Session()
    session["v"] = json.loads(deep_data(MAX_DEPTH - 1))  # plus the record's list and dict
    with pytest.raises(SerializationError, match="nested deeper than 64"):
        encode_payload(session, JSONSerializer(), int(time.time()))
    session["v"] = json.loads(deep_data(MAX_DEPTH - 2))
    assert (
        decode_payload(
            encode_payload(session, JSONSerializer(), int(time.time())),
            JSONSerializer(),
            identity=None,
            idle_timeout=DAY,
            absolute_timeout=DAY,
        )
        == session
    )
