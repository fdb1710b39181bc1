"""The app the multi-process tests run in several OS processes (run as a script, by path).

Arguments: ``--port P --store redis-cluster --target host:port,host:port[,...] --name X``,
``--store redis --target redis://... --name X`` (X is the key prefix) or
``--store postgres --target postgresql://... --name T`` (T is the table). Every response carries the
serving process id in ``X-Pid``, so a test can see its requests spread over processes.
``--users`` binds sessions to users (``user_key="user_id"``) and adds the routes of a
user's sessions: ``/login/{user}``, ``/sessions/{user}``, ``/end-all/{user}``,
``/handles/{user}``, ``/end/{handle}``. ``--websocket`` binds them with ``user_key="user"``
instead, checks websockets every second (``touch_interval=1``) and adds ``/ws``, an echo
websocket kept by ``session_websocket``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from aiohttp import WSMsgType, web

from aiohttp_sessionkit import (
    AbstractStore,
    end_session,
    end_user_sessions,
    get_session,
    new_session,
    session_websocket,
    setup,
    user_sessions,
)

PID = web.AppKey("pid", str)


def build_store(kind: str, target: str, name: str) -> AbstractStore:
    if kind == "redis-cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        from aiohttp_sessionkit.stores.redis import RedisStore

        nodes = [ClusterNode(host, int(port)) for host, port in
                 (entry.rsplit(":", 1) for entry in target.split(","))]  # fmt: skip
        client: Any = RedisCluster(
            startup_nodes=nodes, require_full_coverage=False, socket_timeout=5.0,
            max_connections=512,
        )  # fmt: skip
        return RedisStore(client, key_prefix=name)
    if kind == "redis":
        from aiohttp_sessionkit.stores.redis import RedisStore

        return RedisStore(target, key_prefix=name)
    if kind == "postgres":
        from aiohttp_sessionkit.stores.postgres import PostgresStore

        return PostgresStore(target, table=name)
    raise SystemExit(f"unknown store kind {kind!r}")


#: The websocket app's check interval, and the idle timeout that traffic must outlast.
WS_TOUCH_INTERVAL = 1
WS_IDLE_TIMEOUT = 3


def build_app(
    store: AbstractStore, *, users: bool = False, websocket: bool = False
) -> web.Application:
    app = web.Application()
    user_key = "user" if websocket else "user_id"
    if websocket:
        setup(
            app, store, store_timeout=30, user_key=user_key, idle_timeout=WS_IDLE_TIMEOUT,
            touch_interval=WS_TOUCH_INTERVAL, absolute_timeout=300,
        )  # fmt: skip
    elif users:
        setup(app, store, store_timeout=30, user_key=user_key)
    else:
        setup(app, store, store_timeout=30)
    app[PID] = str(os.getpid())

    @web.middleware
    async def stamp(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        response.headers["X-Pid"] = request.app[PID]
        return response

    app.middlewares.append(stamp)

    async def incr(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["n"] = session.get("n", 0) + 1
        return web.json_response(session["n"])

    async def read(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.json_response({"data": dict(session), "new": session.new})

    async def mark(request: web.Request) -> web.Response:
        session = await get_session(request)
        session[f"k{request.match_info['i']}"] = 1
        return web.Response(text="marked")

    async def logout(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.invalidate()
        return web.Response(text="bye")

    app.router.add_post("/incr", incr)
    app.router.add_get("/read", read)
    app.router.add_post("/mark/{i}", mark)
    app.router.add_post("/logout", logout)
    if users or websocket:
        add_user_routes(app, user_key)
    if websocket:
        app.router.add_get("/ws", echo)
    return app


async def echo(request: web.Request) -> web.WebSocketResponse:
    session = await get_session(request)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async with session_websocket(request, ws) as live:
        async for message in live:
            if message.type is WSMsgType.TEXT:
                await ws.send_str(f"{session.get('user')}: {message.data}")
    return ws


def add_user_routes(app: web.Application, user_key: str) -> None:
    async def login(request: web.Request) -> web.Response:
        session = await new_session(request)
        session[user_key] = request.match_info["user"]
        return web.Response(text="signed in")

    async def sessions(request: web.Request) -> web.Response:
        listed = await user_sessions(request.app, request.match_info["user"])
        return web.json_response(len(listed))

    async def end_all(request: web.Request) -> web.Response:
        return web.json_response(await end_user_sessions(request.app, request.match_info["user"]))

    async def handles(request: web.Request) -> web.Response:
        listed = await user_sessions(request.app, request.match_info["user"])
        return web.json_response([info.handle for info in listed])

    async def end_one(request: web.Request) -> web.Response:
        return web.json_response(await end_session(request.app, request.match_info["handle"]))

    app.router.add_post("/login/{user}", login)
    app.router.add_get("/sessions/{user}", sessions)
    app.router.add_post("/end-all/{user}", end_all)
    app.router.add_get("/handles/{user}", handles)
    app.router.add_post("/end/{handle}", end_one)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--users", action="store_true")
    parser.add_argument("--websocket", action="store_true")
    args = parser.parse_args()
    store = build_store(args.store, args.target, args.name)
    app = build_app(store, users=args.users, websocket=args.websocket)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
