"""OpenTelemetry spans and metrics for the store calls the session layer makes.

Imported only by ``setup()`` when telemetry is on, ``opentelemetry-api`` is installed (the
``otel`` extra) and an SDK is configured: ``import aiohttp_sessionkit`` never imports it.
Names and attributes are documented in docs/observability.md; none carries a token or an id.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "aiohttp_sessionkit.telemetry needs opentelemetry-api: "
        'pip install "aiohttp-sessionkit[otel]"'
    ) from exc

from .exceptions import StoreUnavailable
from .observe import CREATED, ENDED, REGENERATED, SessionEvent

if TYPE_CHECKING:
    from .middleware import SessionConfig

__all__ = ["Telemetry", "configured"]

_T = TypeVar("_T")

#: The instrumentation scope: the library's import name.
SCOPE = "aiohttp_sessionkit"


def configured() -> bool:
    """True when the application installed an SDK's tracer or meter provider (the API alone
    hands out no-op ones, and the session layer then skips telemetry altogether)."""
    tracing = trace.get_tracer_provider()
    metering = metrics.get_meter_provider()
    # The API's stand-in meter provider is a private class: known by name, not imported.
    return not (
        isinstance(tracing, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
        and (
            isinstance(metering, metrics.NoOpMeterProvider)
            or type(metering).__name__ == "_ProxyMeterProvider"
        )
    )


class Telemetry:
    """The spans and instruments of one session configuration (one store, one cookie name)."""

    __slots__ = ("created", "duration", "ended", "kind", "regenerated", "tracer", "unavailable")

    def __init__(self, store_kind: str) -> None:
        from . import __version__

        self.kind = store_kind
        self.tracer = trace.get_tracer(SCOPE, __version__)
        meter = metrics.get_meter(SCOPE, __version__)
        self.duration = meter.create_histogram(
            "session.store.duration",
            unit="s",
            description="Duration of the session store calls the session layer makes",
        )
        self.unavailable = meter.create_counter(
            "session.store.unavailable",
            unit="{call}",
            description="Store calls that failed as unreachable or timed out (the request got 503)",
        )
        self.created = meter.create_counter(
            "session.created", unit="{session}", description="Sessions created"
        )
        self.regenerated = meter.create_counter(
            "session.regenerated",
            unit="{session}",
            description="Sessions moved to a new id (a login)",
        )
        self.ended = meter.create_counter(
            "session.ended", unit="{session}", description="Sessions ended, by reason"
        )

    async def call(self, config: SessionConfig, operation: Awaitable[_T]) -> _T:
        """Run one store ``operation`` (guarded as ``SessionConfig.call`` would) in a span."""
        # A coroutine is named after the store method that made it: load, save, delete, ...
        name = getattr(operation, "__name__", "call")
        attributes: dict[str, Any] = {
            "session.store.kind": self.kind,
            "session.store.operation": name,
            "session.cookie.name": config.namespace,
        }
        outcome = "error"
        with self.tracer.start_as_current_span(
            f"session.store.{name}", kind=SpanKind.CLIENT, record_exception=False,
            set_status_on_exception=False,
        ) as span:  # fmt: skip
            start = time.perf_counter()
            try:
                result = await (operation if config.store.local else config.guarded(operation))
            except StoreUnavailable as exc:
                outcome = "timeout" if isinstance(exc.__cause__, TimeoutError) else "unavailable"
                self.unavailable.add(1, {**attributes, "session.store.outcome": outcome})
                raise
            else:
                if name == "load":
                    outcome = "miss" if result is None else "hit"
                elif name == "save" or name == "replace":
                    outcome = "miss" if result is None or result is False else "written"
                else:
                    outcome = "ok"
                return result
            finally:
                attributes["session.store.outcome"] = outcome
                self.duration.record(time.perf_counter() - start, attributes)
                span.set_attributes(attributes)
                if outcome in ("timeout", "unavailable", "error"):
                    # The outcome, never the exception's text (a driver may quote its input).
                    span.set_status(Status(StatusCode.ERROR, outcome))

    def count(self, event: SessionEvent) -> None:
        """Count a lifecycle event in the ``session.*`` counters."""
        attributes = {"session.cookie.name": event.cookie_name, "session.store.kind": self.kind}
        if event.kind == CREATED:
            self.created.add(event.count, attributes)
        elif event.kind == REGENERATED:
            self.regenerated.add(event.count, attributes)
        elif event.kind == ENDED:
            attributes["session.end.reason"] = event.reason or "unknown"
            self.ended.add(event.count, attributes)
