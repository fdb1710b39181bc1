"""Run inside a fresh virtual environment by scripts/check-package.sh (stdlib and aiohttp only).

``python package_probe.py quickstart`` serves the README's quick start on a loopback port
and makes real requests to it. ``python package_probe.py imports`` reports, as JSON, what
``import aiohttp_sessionkit`` loaded, which of the package's modules and public names import
in this environment, and the ImportError of each one that does not.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import sys

OPTIONAL_DRIVERS = (
    "redis", "asyncpg", "pymongo", "motor", "sqlalchemy", "jwt", "aiohttp_security", "aiomcache",
)  # fmt: skip


def imports() -> dict[str, object]:
    import aiohttp_sessionkit

    loaded = sorted(d for d in OPTIONAL_DRIVERS if d in sys.modules)
    modules: dict[str, str | None] = {}
    for info in pkgutil.walk_packages(aiohttp_sessionkit.__path__, "aiohttp_sessionkit."):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            modules[info.name] = str(exc)
        else:
            modules[info.name] = None
    names: dict[str, str | None] = {}
    for name in aiohttp_sessionkit.__all__:
        try:
            getattr(aiohttp_sessionkit, name)
        except ImportError as exc:
            names[name] = str(exc)
        else:
            names[name] = None
    return {
        "file": aiohttp_sessionkit.__file__,
        "drivers_loaded_by_import": loaded,
        "modules": modules,
        "names": names,
    }


async def quickstart() -> None:
    from aiohttp import ClientSession, CookieJar, web

    from aiohttp_sessionkit import MemoryStore, get_session, setup

    async def counter(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["visits"] = session.get("visits", 0) + 1
        return web.Response(text=str(session["visits"]))

    app = web.Application()
    setup(app, MemoryStore())
    app.router.add_get("/", counter)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        # unsafe=True: the jar otherwise drops cookies set by an IP address such as 127.0.0.1.
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as client:
            seen = [await (await client.get(f"http://{host}:{port}/")).text() for _ in range(3)]
    finally:
        await runner.cleanup()
    if seen != ["1", "2", "3"]:
        raise SystemExit(f"quick start: expected visits 1, 2, 3, got {seen}")
    print("quick start: visits 1, 2, 3 over a real connection")


if __name__ == "__main__":
    if sys.argv[1:] == ["imports"]:
        json.dump(imports(), sys.stdout)
    elif sys.argv[1:] == ["quickstart"]:
        asyncio.run(quickstart())
    else:
        raise SystemExit("usage: package_probe.py imports|quickstart")
