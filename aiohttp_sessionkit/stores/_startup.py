"""The one rule for server stores at application startup: start anyway.

A store whose server cannot be reached when the application starts must not stop the
application: routes that never touch a session keep working, requests that need one get
a 503 (the middleware's answer to :class:`~aiohttp_sessionkit.StoreUnavailable`), and the
store connects, and runs its table or index setup, on the first request after the server
is back. Startup logs the outage once. Misconfiguration (a missing table with
``create_table=False``, bad credentials reported as a query error) still fails startup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..exceptions import StoreUnavailable

log = logging.getLogger("aiohttp_sessionkit")

#: The longest ``open()`` waits for a server at startup before carrying on without it. A
#: blackholed host would otherwise hold startup for the driver's own connect timeout
#: (60 s for asyncpg, 30 s for PyMongo's server selection).
OPEN_TIMEOUT = 10.0


async def open_or_defer(store: object, prepare: Callable[[], Awaitable[object]]) -> bool:
    """Run ``prepare()``; if the server is unreachable, log once and return False.

    ``prepare`` must leave the store able to retry on first use (nothing half-done marked
    as ready). Returns True when the store is ready.
    """
    try:
        async with asyncio.timeout(OPEN_TIMEOUT):
            await prepare()
    except StoreUnavailable as exc:
        reason = str(exc)
    except TimeoutError:
        reason = f"no answer within {OPEN_TIMEOUT:g} s"
    else:
        return True
    log.warning(
        "%r cannot reach its server at startup (%s); starting anyway: requests that need "
        "a session get 503 until the server is back, and the store connects on first use",
        store,
        reason,
    )
    return False
