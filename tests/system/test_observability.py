"""Lifecycle events, OpenTelemetry spans and metrics: once per cause, and never a token."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiohttp_sessionkit import (
    MemoryStore,
    SessionEvent,
    end_session,
    end_user_sessions,
    get_session,
    new_session,
    setup,
)
from aiohttp_sessionkit.api import _APP_REGISTRY
from aiohttp_sessionkit.ids import record_key
from aiohttp_sessionkit.middleware import Handler
from aiohttp_sessionkit.observe import END_REASONS, emit_event
from tests.conftest import FakeClock, StoreFactory, _factory
from tests.harness.servers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME = "OBS"


class Telemetry:
    """The SDK's in-memory span exporter and metric reader, installed as global providers."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.spans.get_finished_spans()

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of every point of the metric ``name``."""
        found: list[tuple[dict[str, Any], Any]] = []
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend((dict(p.attributes or {}), p) for p in metric.data.data_points)
        return found

    def total(self, name: str, **attributes: str) -> int:
        return sum(
            int(point.value)
            for attrs, point in self.points(name)
            if all(attrs.get(k) == v for k, v in attributes.items())
        )

    def strings(self) -> list[str]:
        """Every string a collector would receive: span names, attributes, events, metrics."""
        out: list[str] = []
        for span in self.finished():
            out.append(span.name)
            out.extend(str(v) for v in (span.attributes or {}).values())
            out.append(str(span.status.description))
            for event in span.events:
                out.extend(str(v) for v in (event.attributes or {}).values())
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        out.extend(f"{k}={v!s}" for k, v in (point.attributes or {}).items())
        return out


def _reset_globals() -> None:
    # The API lets a process set its providers once; tests need a fresh pair each, and must
    # leave the process as they found it (no SDK) for every other test file.
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    _reset_globals()
    trace.set_tracer_provider(telemetry.tracer_provider)
    metrics.set_meter_provider(telemetry.meter_provider)
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()
    _reset_globals()


@pytest.fixture(params=["memory", "cookie", "redis", "postgres"])
async def observed_store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    async for factory in _factory(request, request.param):
        yield factory


def _app(store: Any, events: list[SessionEvent], **options: Any) -> web.Application:
    tracer = trace.get_tracer("test")

    @web.middleware
    async def request_span(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Where opentelemetry-instrumentation-aiohttp-server puts its SERVER span: outermost.
        with tracer.start_as_current_span("request", kind=trace.SpanKind.SERVER):
            return await handler(request)

    async def write(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = session.get("n", 0) + 1
        return web.Response(text="ok")

    async def read(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.Response(text=str(session.get("n")))

    async def login(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.regenerate()
        session["user"] = "alice"
        return web.Response(text="in")

    async def fresh(request: web.Request) -> web.Response:
        session = await new_session(request)
        session["user"] = "bob"
        return web.Response(text="fresh")

    async def logout(request: web.Request) -> web.Response:
        (await get_session(request)).invalidate()
        return web.Response(text="out")

    async def clear(request: web.Request) -> web.Response:
        (await get_session(request)).clear()
        return web.Response(text="cleared")

    app = web.Application(middlewares=[request_span])
    setup(app, store, cookie_name=NAME, listeners=[events.append], **options)
    for path, handler in {
        "/write": write, "/read": read, "/login": login, "/fresh": fresh, "/logout": logout,
        "/clear": clear,
    }.items():  # fmt: skip
        app.router.add_get(path, handler)
    return app


def _summary(events: list[SessionEvent]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.reason) for e in events]


async def test_every_lifecycle_event_fires_once_per_cause_with_its_reason_and_no_token(
    observed_store_factory: StoreFactory,
    otel: Telemetry,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[SessionEvent] = []
    store = observed_store_factory()
    app = _app(store, events, idle_timeout=600)
    tokens: list[str] = []
    client_side = observed_store_factory.client_side
    async with TestClient(TestServer(app)) as client:

        async def get(path: str) -> None:
            response = await client.get(path)
            assert response.status == 200, await response.text()
            morsel = response.cookies.get(NAME)
            if morsel is not None and morsel.value:
                tokens.append(morsel.value)

        def handle_now() -> str | None:
            if client_side:
                return None
            return record_key(NAME, tokens[-1])

        await get("/write")
        assert _summary(events) == [("created", None)]
        if not client_side:
            assert events[0].handle == handle_now()
        else:
            assert events[0].handle is not None  # the lineage id
        await get("/read")
        await get("/write")  # an update: no event
        assert len(events) == 1
        await get("/login")
        assert _summary(events)[1:] == [("regenerated", None)]
        if not client_side:
            assert events[1].handle == handle_now() != events[0].handle
        await get("/logout")
        assert _summary(events)[2:] == [("ended", "logout")]
        await get("/read")  # the logout expired the cookie: a fresh, unsaved session
        await get("/fresh")  # new_session() with no session before: a creation
        await get("/clear")  # emptied: its record goes
        assert _summary(events)[3:] == [("created", None), ("ended", "logout")]
        await get("/write")
        clock.advance(601)
        await get("/read")
        await get("/read")  # the same dead token again: reported once
        assert _summary(events)[5:] == [("created", None), ("ended", "expired")]
        if not client_side:
            assert events[6].handle == record_key(NAME, tokens[-1])
        await get("/write")
        if not client_side:
            # The record gone before its time (deleted elsewhere, or the server's own TTL).
            await store.delete(tokens[-1], namespace=NAME)
            await get("/read")
            assert _summary(events)[7:] == [("created", None), ("ended", "expired")]

    assert tokens
    assert all(e.reason is None or e.reason in END_REASONS for e in events)
    assert {e.cookie_name for e in events} == {NAME}
    # Metrics count the same events.
    assert otel.total("session.created") == sum(e.kind == "created" for e in events)
    assert otel.total("session.regenerated") == 1
    assert otel.total("session.ended", **{"session.end.reason": "logout"}) == 2
    expired = sum(e.reason == "expired" for e in events)
    assert otel.total("session.ended", **{"session.end.reason": "expired"}) == expired
    # Store calls are spans under the request span, with kind, operation and outcome.
    spans = otel.finished()
    requests = {s.context.span_id for s in spans if s.name == "request"}
    store_spans = [s for s in spans if s.name.startswith("session.store.")]
    assert store_spans and all(s.parent is not None for s in store_spans)
    assert all(s.parent.span_id in requests for s in store_spans if s.parent is not None)
    outcomes = {
        (s.attributes["session.store.operation"], s.attributes["session.store.outcome"])
        for s in store_spans
        if s.attributes is not None
    }
    assert ("load", "hit") in outcomes
    assert ("save", "written") in outcomes
    if not client_side:
        assert ("load", "miss") in outcomes
    kinds = {s.attributes["session.store.kind"] for s in store_spans if s.attributes}
    assert kinds == {type(store).__name__}
    durations = otel.points("session.store.duration")
    assert {a["session.store.operation"] for a, _ in durations} >= {"load", "save"}
    assert all(point.count >= 1 for _, point in durations)
    # No token anywhere: spans, metrics, events, log lines.
    seen = [*otel.strings(), *(repr(e) for e in events), caplog.text]
    for token in tokens:
        assert not [text for text in seen if token in text]


async def test_a_failing_listener_is_logged_without_tokens_and_never_fails_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got: list[SessionEvent] = []
    later: list[SessionEvent] = []

    def broken(event: SessionEvent) -> None:
        raise RuntimeError(f"cannot audit {event!r}")

    async def slow_audit(event: SessionEvent) -> None:
        await asyncio.sleep(0)
        later.append(event)

    async def broken_async(event: SessionEvent) -> None:
        raise RuntimeError("audit log down")

    async def write(request: web.Request) -> web.Response:
        (await get_session(request))["n"] = 1
        return web.Response(text="ok")

    app = web.Application()
    setup(app, MemoryStore(), listeners=[broken, broken_async, got.append, slow_audit])
    app.router.add_get("/write", write)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/write")
        assert response.status == 200
        token = response.cookies["AIOHTTP_SESSION"].value
        await asyncio.sleep(0.05)
    assert [e.kind for e in got] == ["created"]
    assert [e.kind for e in later] == ["created"]
    failures = [r for r in caplog.records if "listener" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.levelno == logging.ERROR for r in failures)
    assert token not in caplog.text
    assert "RuntimeError" in failures[0].getMessage()


async def test_an_unreachable_store_is_counted_as_unavailable_with_a_failed_span(
    otel: Telemetry,
) -> None:
    from aiohttp_sessionkit.stores.redis import RedisStore

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")

    async def read(request: web.Request) -> web.Response:
        await get_session(request)
        return web.Response(text="ok")

    app = web.Application()
    setup(app, store, store_timeout=2)
    app.router.add_get("/read", read)
    # A well-formed id, so that the store is really asked.
    token = "A" * 42 + "A"
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/read", cookies={"AIOHTTP_SESSION": token})
        assert response.status == 503
    await store.close()
    assert otel.total("session.store.unavailable", **{"session.store.operation": "load"}) == 1
    [span] = [s for s in otel.finished() if s.name == "session.store.load"]
    assert span.attributes is not None
    assert span.attributes["session.store.outcome"] == "unavailable"
    assert span.status.status_code is trace.StatusCode.ERROR
    assert not [text for text in otel.strings() if token in text]


async def test_a_store_that_hangs_is_counted_as_a_timeout(
    otel: Telemetry, redis_server: Any
) -> None:
    from aiohttp_sessionkit.stores.redis import RedisStore

    store = RedisStore(redis_server.url, key_prefix=f"obs-{uuid.uuid4().hex[:8]}:")

    async def write(request: web.Request) -> web.Response:
        (await get_session(request))["n"] = 1
        return web.Response(text="ok")

    app = web.Application()
    setup(app, store, store_timeout=0.5)
    app.router.add_get("/write", write)
    async with TestClient(TestServer(app)) as client:
        first = await client.get("/write")
        assert first.status == 200
        token = first.cookies["AIOHTTP_SESSION"].value
        redis_server.pause()
        try:
            hung = await client.get("/write")
        finally:
            redis_server.resume()
        assert hung.status == 503
    timeouts = [
        s for s in otel.finished()
        if s.attributes and s.attributes.get("session.store.outcome") == "timeout"
    ]  # fmt: skip
    assert [s.name for s in timeouts] == ["session.store.load"]
    assert otel.total("session.store.unavailable", **{"session.store.outcome": "timeout"}) == 1
    assert not [text for text in otel.strings() if token in text]


async def test_purge_reports_the_expired_records_it_removed_as_one_counted_event() -> None:
    events: list[SessionEvent] = []
    store = MemoryStore()
    app = web.Application()
    setup(app, store, listeners=[events.append], purge_interval=0.05)
    for _ in range(3):
        await store.save(None, b"x", ttl=1, namespace="AIOHTTP_SESSION")
    async with TestClient(TestServer(app)):
        await asyncio.sleep(1.3)
    purged = [e for e in events if e.reason == "expired"]
    assert [(e.kind, e.count, e.handle) for e in purged] == [("ended", 3, None)]


@pytest.fixture(params=["memory", "redis", "postgres"])
async def indexed_store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    async for factory in _factory(request, request.param):
        yield factory


async def test_evictions_and_ends_by_the_application_are_reported_with_the_user_and_no_token(
    otel: Telemetry, indexed_store_factory: StoreFactory
) -> None:
    events: list[SessionEvent] = []
    app = _app(indexed_store_factory(), events, user_key="user", max_sessions_per_user=2)

    async def end_one(request: web.Request) -> web.Response:
        ended = await end_session(request.app, request.query["handle"])
        return web.Response(text=str(ended))

    async def end_all(request: web.Request) -> web.Response:
        return web.Response(text=str(await end_user_sessions(request.app, "alice")))

    app.router.add_get("/end-one", end_one)
    app.router.add_get("/end-all", end_all)
    server = TestServer(app)
    admin = TestClient(server)
    await admin.start_server()
    devices = [admin] + [TestClient(server) for _ in range(3)]
    tokens = []
    try:
        for device in devices:  # alice signs in four times: the cap of 2 ends the two oldest
            assert (await device.get("/login")).status == 200
            tokens.append(
                device.session.cookie_jar.filter_cookies(server.make_url("/"))[NAME].value
            )
        evicted = [e for e in events if e.reason == "evicted"]
        assert [(e.user_id, e.count, e.handle) for e in evicted] == [("alice", 1, None)] * 2
        created = [e for e in events if e.kind == "created"]
        assert [e.user_id for e in created] == ["alice"] * 4
        handle = record_key(NAME, tokens[3])
        assert await (await admin.get("/end-one", params={"handle": handle})).text() == "True"
        ended = [e for e in events if e.reason == "ended_by_user"]
        assert [(e.handle, e.user_id, e.count) for e in ended] == [(handle, "alice", 1)]
        assert await (await admin.get("/end-all")).text() == "1"  # the one left: tokens[2]
        ended = [e for e in events if e.reason == "ended_by_user"]
        assert [(e.handle, e.user_id, e.count) for e in ended[1:]] == [(None, "alice", 1)]
        assert otel.total("session.ended", **{"session.end.reason": "evicted"}) == 2
        assert otel.total("session.ended", **{"session.end.reason": "ended_by_user"}) == 2
        for event in events:  # never a token, in any field
            assert not any(token in repr(event) for token in tokens)
        with pytest.raises(ValueError, match="reason"):
            emit_event(app[_APP_REGISTRY].get(NAME).observer, "ended", handle="k", reason="bored")
    finally:
        for device in devices[1:]:
            await device.close()
        await admin.close()


def test_nobody_listening_and_no_sdk_means_no_observer_at_all() -> None:
    app = web.Application()
    setup(app, MemoryStore())
    assert app[_APP_REGISTRY].default.observer is None
    assert app[_APP_REGISTRY].default.load_nowait is not None  # the fast path stays


def test_telemetry_false_turns_it_off_with_an_sdk_configured(otel: Telemetry) -> None:
    on, off = web.Application(), web.Application()
    setup(on, MemoryStore())
    setup(off, MemoryStore(), telemetry=False)
    observer = on[_APP_REGISTRY].default.observer
    assert observer is not None and observer.telemetry is not None
    assert off[_APP_REGISTRY].default.observer is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"listeners": "print"}, "listeners="),
        ({"listeners": [print, 3]}, "not callable"),
        ({"telemetry": "yes"}, "telemetry="),
    ],
)
def test_bad_observability_options_fail_at_setup(options: dict[str, Any], message: str) -> None:
    from aiohttp_sessionkit import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        setup(web.Application(), MemoryStore(), **options)


def test_importing_and_setting_up_without_an_sdk_imports_no_opentelemetry_sdk() -> None:
    code = (
        "import sys, aiohttp_sessionkit; assert 'opentelemetry' not in sys.modules;"
        "from aiohttp import web; aiohttp_sessionkit.setup(web.Application(),"
        " aiohttp_sessionkit.MemoryStore());"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert out.stdout.strip() == "[]"
