"""setup() validation, cookie attributes on the wire, several sessions per app, entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import make_mocked_request
from pytest_aiohttp import AiohttpClient

import aiohttp_sessionkit
from aiohttp_sessionkit import (
    ConfigurationError,
    EncryptedCookieStore,
    MemoryStore,
    get_session,
    session_middleware,
    setup,
    store_from_url,
)
from aiohttp_sessionkit.crypto import parse_key
from tests.conftest import FakeClock

COOKIE = "AIOHTTP_SESSION"
REPO = Path(aiohttp_sessionkit.__file__).resolve().parent.parent


# -- validation at setup ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "hint"),
    [
        pytest.param({"cookie_name": "a;b"}, 'cookie_name="AIOHTTP_SESSION"', id="name-semicolon"),
        pytest.param({"cookie_name": "a,b"}, 'cookie_name="AIOHTTP_SESSION"', id="name-comma"),
        pytest.param({"cookie_name": "a b"}, 'cookie_name="AIOHTTP_SESSION"', id="name-space"),
        pytest.param({"cookie_name": "a=b"}, 'cookie_name="AIOHTTP_SESSION"', id="name-equals"),
        pytest.param({"cookie_name": "a\r\nb"}, "letters, digits", id="name-crlf"),
        pytest.param({"cookie_name": "a\nSet-Cookie"}, "letters, digits", id="name-lf"),
        pytest.param({"cookie_name": ""}, 'cookie_name="AIOHTTP_SESSION"', id="name-empty"),
        pytest.param({"cookie_name": 'a"b'}, "quotes", id="name-quote"),
        pytest.param({"path": "/a;b"}, "no whitespace, ';'", id="path-semicolon"),
        pytest.param({"path": "/a b"}, "no whitespace", id="path-space"),
        pytest.param({"path": "app"}, "must start with '/'", id="path-relative"),
        pytest.param({"path": ""}, "path=''", id="path-empty"),
        pytest.param({"domain": "example .com"}, "no whitespace", id="domain-space"),
        pytest.param({"domain": "example.com\t"}, "no whitespace", id="domain-tab"),
        pytest.param({"domain": "a.com;b"}, "';'", id="domain-semicolon"),
        pytest.param({"samesite": "bogus"}, "'Lax' (the default), 'Strict', 'None'", id="samesite"),
        pytest.param(
            {"samesite": "None", "secure": False}, "set secure=True", id="samesite-none-insecure"
        ),
        pytest.param({"samesite": "None"}, "set secure=True", id="samesite-none-auto-secure"),
        pytest.param(
            {"samesite": "none", "secure": None},
            "set secure=True",
            id="samesite-none-explicit-auto",
        ),
        pytest.param({"secure": "yes"}, "True, False or None", id="secure-not-bool"),
        pytest.param(
            {"cookie_name": "__Host-sid", "domain": "example.com"},
            "remove domain=",
            id="host-with-domain",
        ),
        pytest.param(
            {"cookie_name": "__Host-sid", "path": "/app"}, "path='/'", id="host-with-path"
        ),
        pytest.param(
            {"cookie_name": "__Host-sid", "secure": False}, "drop secure=False", id="host-insecure"
        ),
        pytest.param(
            {"cookie_name": "__Secure-sid", "secure": False},
            "drop secure=False",
            id="secure-prefix-insecure",
        ),
        pytest.param({"max_age": 0}, "positive number of seconds", id="max-age-zero"),
        pytest.param({"max_age": -5}, "positive number of seconds", id="max-age-negative"),
        pytest.param({"max_age": True}, "positive number of seconds", id="max-age-bool"),
        pytest.param({"max_age": 1.5}, "positive number of seconds", id="max-age-float"),
        pytest.param(
            {"idle_timeout": 60, "touch_interval": 60}, "must be shorter", id="touch-equals-idle"
        ),
        pytest.param(
            {"idle_timeout": 60, "touch_interval": 120}, "must be shorter", id="touch-above-idle"
        ),
        pytest.param({"max_age": 30, "touch_interval": 30}, "must be shorter", id="touch-max-age"),
        pytest.param({"idle_timeout": 0}, "positive whole number", id="idle-zero"),
        pytest.param({"absolute_timeout": -1}, "positive whole number", id="absolute-negative"),
        pytest.param({"store_timeout": 0}, "positive number of seconds", id="store-timeout-zero"),
        pytest.param({"store_timeout": -1.0}, "positive number", id="store-timeout-negative"),
        pytest.param({"store_timeout": True}, "positive number", id="store-timeout-bool"),
        pytest.param({"purge_interval": 0}, "positive seconds", id="purge-interval-zero"),
        pytest.param({"serializer": object()}, "dumps(value)", id="serializer"),
    ],
)
def test_misconfiguration_fails_at_setup_saying_how_to_fix_it(
    options: dict[str, Any], hint: str
) -> None:
    app = web.Application()
    with pytest.raises(ConfigurationError) as info:
        setup(app, MemoryStore(), **options)
    assert hint in str(info.value)
    assert not app.middlewares  # nothing half-installed


@pytest.mark.parametrize("key", [b"0" * 32, "a" * 43, "short"])
def test_weak_cookie_store_key_fails_before_the_app_runs(key: str | bytes) -> None:
    app = web.Application()
    with pytest.raises(ConfigurationError, match="python -m aiohttp_sessionkit keygen"):
        setup(app, EncryptedCookieStore(key))


@pytest.mark.parametrize("store", [object(), {"kind": "memory"}, None])
def test_store_that_is_not_a_store_is_a_type_error(store: Any) -> None:
    with pytest.raises(TypeError, match="AbstractStore"):
        setup(web.Application(), store)


@pytest.mark.parametrize("url", ["ftp://host/x", "sqlite:///tmp/db", "no-scheme-at-all"])
def test_unknown_store_url_scheme_fails_listing_the_known_ones(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        setup(web.Application(), url)
    message = str(info.value)
    assert "memory://" in message
    assert "redis://" in message


def test_memory_url_with_bad_max_entries_fails() -> None:
    with pytest.raises(ConfigurationError, match="max_entries"):
        store_from_url("memory://?max_entries=lots")
    with pytest.raises(ConfigurationError, match="max_entries"):
        store_from_url("memory://?max_entries=0")


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        pytest.param("memory://?max_entry=5", "did you mean 'max_entries'", id="memory-typo"),
        pytest.param("memory://?size=5", "the options are max_entries", id="memory-unknown"),
        pytest.param("memory://?max_entries=5&max_entries=9", "twice", id="memory-repeated"),
        pytest.param("memory://?max_entries", "malformed", id="memory-no-equals"),
        pytest.param("memory://?&&", "malformed", id="memory-empty-pairs"),
        pytest.param("memory://cache/sessions", "no host or path", id="memory-host-path"),
        pytest.param("memory:///sessions", "no host or path", id="memory-path"),
        pytest.param("redis://127.0.0.1/abc", "database number", id="redis-db-name"),
        pytest.param("redis://127.0.0.1:6379/0/1", "database number", id="redis-two-segments"),
        pytest.param("rediss://127.0.0.1/0?max_entries=5", "'max_entries'", id="rediss-option"),
        pytest.param("redis://127.0.0.1/0?socket_timout=1", "socket_timeout", id="redis-typo"),
        pytest.param("unix:///run/redis.sock?dbb=1", "'dbb'", id="unix-option"),
        pytest.param("redis+sentinel://h:26379/main/0?x=1", "'x'", id="sentinel-option"),
        pytest.param("postgresql://127.0.0.1/app/sessions", "one path segment", id="pg-path"),
        pytest.param("postgres://127.0.0.1/a/b/c", "one path segment", id="pg-three-segments"),
        pytest.param("mongodb://127.0.0.1/app/sessions", "one path segment", id="mongo-path"),
        pytest.param("mongodb://127.0.0.1/app?maxPoolSze=5", "'maxPoolSze'", id="mongo-option"),
        pytest.param("mysql+asyncmy://127.0.0.1/app/x", "one path segment", id="mysql-path"),
    ],
)
def test_store_url_with_an_unknown_option_or_path_fails_at_setup(url: str, hint: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        setup(web.Application(), url)
    assert hint in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "memory://?max_entries=5",
        "redis://127.0.0.1",
        "redis://127.0.0.1:6379/",
        "rediss://user:pw@127.0.0.1:6380/3?socket_timeout=1&ssl_cert_reqs=none",
        "unix:///run/redis.sock?db=2",
        "postgresql://app@127.0.0.1/app?sslmode=disable",
        "mongodb://127.0.0.1/app?maxPoolSize=5&authSource=admin",
        "mysql+asyncmy://root@127.0.0.1/app",
    ],
)
def test_store_urls_with_documented_options_still_build(url: str) -> None:
    assert isinstance(store_from_url(url), aiohttp_sessionkit.AbstractStore)


def test_same_cookie_name_twice_on_one_app_fails() -> None:
    app = web.Application()
    setup(app, MemoryStore())
    with pytest.raises(ConfigurationError, match="another cookie_name"):
        setup(app, MemoryStore())
    with pytest.raises(ConfigurationError, match="another cookie_name"):
        setup(app, MemoryStore(), cookie_name=COOKIE)


# -- cookie attributes on the wire -------------------------------------------------------------


def session_app(*, middleware_only: bool = False, **options: Any) -> web.Application:
    """An app that writes to the session on POST /login and invalidates it on POST /logout."""
    routes = web.RouteTableDef()

    @routes.post("/login")
    async def login(request: web.Request) -> web.Response:
        session = await get_session(request)
        session["user"] = "alice"
        return web.Response(text="in")

    @routes.get("/whoami")
    async def whoami(request: web.Request) -> web.Response:
        session = await get_session(request)
        return web.Response(text=str(session.get("user")))

    @routes.post("/logout")
    async def logout(request: web.Request) -> web.Response:
        session = await get_session(request)
        session.invalidate()
        return web.Response(text="out")

    if middleware_only:
        app = web.Application(middlewares=[session_middleware(MemoryStore(), **options)])
    else:
        app = web.Application()
        setup(app, options.pop("store", MemoryStore()), **options)
    app.add_routes(routes)
    return app


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """(name, value, attributes) of a Set-Cookie header; attribute names lowercased."""
    first, *rest = header.split(";")
    name, _, value = first.strip().partition("=")
    attrs: dict[str, str] = {}
    for part in rest:
        key, _, val = part.strip().partition("=")
        attrs[key.lower()] = val
    return name, value, attrs


async def post_login(aiohttp_client: AiohttpClient, app: web.Application) -> Any:
    client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
    response = await client.post("/login")
    assert response.status == 200
    return client, response


def only_set_cookie(response: Any) -> tuple[str, str, dict[str, str]]:
    headers = response.headers.getall("Set-Cookie", [])
    assert len(headers) == 1, headers
    return parse_set_cookie(headers[0])


async def test_default_cookie_on_plain_http_is_not_secure(aiohttp_client: AiohttpClient) -> None:
    _, response = await post_login(aiohttp_client, session_app())
    name, _, attrs = only_set_cookie(response)
    assert name == COOKIE
    assert "secure" not in attrs
    assert attrs["path"] == "/"
    assert attrs["samesite"] == "Lax"
    assert "httponly" in attrs


@pytest.mark.parametrize(
    ("given", "sent"), [("strict", "Strict"), ("NONE", "None"), ("lAx", "Lax")]
)
async def test_samesite_is_case_insensitive_and_normalised(
    aiohttp_client: AiohttpClient, given: str, sent: str
) -> None:
    _, response = await post_login(aiohttp_client, session_app(samesite=given, secure=True))
    _, _, attrs = only_set_cookie(response)
    assert attrs["samesite"] == sent


async def test_samesite_none_leaves_the_attribute_out(aiohttp_client: AiohttpClient) -> None:
    _, response = await post_login(aiohttp_client, session_app(samesite=None))
    _, _, attrs = only_set_cookie(response)
    assert "samesite" not in attrs


async def test_host_prefix_forces_secure_even_on_plain_http(
    aiohttp_client: AiohttpClient,
) -> None:
    _, response = await post_login(aiohttp_client, session_app(cookie_name="__Host-sid"))
    name, _, attrs = only_set_cookie(response)
    assert name == "__Host-sid"
    assert "secure" in attrs
    assert attrs["path"] == "/"
    assert "domain" not in attrs


async def test_secure_prefix_forces_secure_even_on_plain_http(
    aiohttp_client: AiohttpClient,
) -> None:
    _, response = await post_login(aiohttp_client, session_app(cookie_name="__Secure-sid"))
    _, _, attrs = only_set_cookie(response)
    assert "secure" in attrs


async def test_secure_true_adds_secure(aiohttp_client: AiohttpClient) -> None:
    _, response = await post_login(aiohttp_client, session_app(secure=True))
    _, _, attrs = only_set_cookie(response)
    assert "secure" in attrs


async def test_httponly_false_leaves_the_attribute_out(aiohttp_client: AiohttpClient) -> None:
    _, response = await post_login(aiohttp_client, session_app(httponly=False))
    _, _, attrs = only_set_cookie(response)
    assert "httponly" not in attrs


async def test_domain_path_and_max_age_appear_in_the_cookie(
    aiohttp_client: AiohttpClient,
) -> None:
    app = session_app(domain="example.com", path="/", max_age=600)
    _, response = await post_login(aiohttp_client, app)
    _, _, attrs = only_set_cookie(response)
    assert attrs["domain"] == "example.com"
    assert attrs["max-age"] == "600"


async def test_deletion_cookie_repeats_every_attribute_of_the_setting_cookie(
    aiohttp_client: AiohttpClient,
) -> None:
    app = session_app(
        cookie_name="sid", domain="example.com", path="/", secure=True, samesite="strict"
    )
    client, response = await post_login(aiohttp_client, app)
    name, value, set_attrs = only_set_cookie(response)

    logout = await client.post("/logout", headers={"Cookie": f"{name}={value}"})
    assert logout.status == 200
    del_name, del_value, del_attrs = only_set_cookie(logout)
    assert del_name == name
    assert del_value in ("", '""')
    assert del_attrs.pop("max-age") == "0"
    del_attrs.pop("expires", None)
    set_attrs.pop("max-age", None)
    assert del_attrs == set_attrs
    assert set(set_attrs) == {"domain", "path", "secure", "samesite", "httponly"}


async def test_deletion_cookie_of_a_custom_path_matches_it(
    aiohttp_client: AiohttpClient,
) -> None:
    app = session_app(path="/login", max_age=300)
    client, response = await post_login(aiohttp_client, app)
    name, value, set_attrs = only_set_cookie(response)
    logout = await client.post("/logout", headers={"Cookie": f"{name}={value}"})
    _, _, del_attrs = only_set_cookie(logout)
    assert del_attrs["path"] == set_attrs["path"] == "/login"
    assert del_attrs["max-age"] == "0"


# -- several sessions, lookup errors ---------------------------------------------------------------


def two_session_app() -> web.Application:
    app = web.Application()
    setup(app, MemoryStore())
    setup(app, MemoryStore(), cookie_name="other")

    async def write(request: web.Request) -> web.Response:
        main = await get_session(request)
        other = await get_session(request, "other")
        main["where"] = "main"
        other["where"] = "other"
        return web.Response(text=str(main is other))

    async def read(request: web.Request) -> web.Response:
        main = await get_session(request)
        other = await get_session(request, "other")
        return web.json_response({"main": main.get("where"), "other": other.get("where")})

    async def unknown(request: web.Request) -> web.Response:
        try:
            await get_session(request, "nope")
        except KeyError as exc:
            return web.Response(text=str(exc))
        return web.Response(text="no error")

    app.router.add_post("/write", write)
    app.router.add_get("/read", read)
    app.router.add_get("/unknown", unknown)
    return app


async def test_two_setups_give_two_independent_sessions(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(two_session_app(), cookie_jar=DummyCookieJar())
    response = await client.post("/write")
    assert await response.text() == "False"
    cookies = dict(parse_set_cookie(h)[:2] for h in response.headers.getall("Set-Cookie"))
    assert set(cookies) == {COOKIE, "other"}
    assert cookies[COOKIE] != cookies["other"]

    both_cookies = "; ".join(f"{k}={v}" for k, v in cookies.items())
    both = await client.get("/read", headers={"Cookie": both_cookies})
    assert await both.json() == {"main": "main", "other": "other"}
    main_only = await client.get("/read", headers={"Cookie": f"{COOKIE}={cookies[COOKIE]}"})
    assert await main_only.json() == {"main": "main", "other": None}
    other_only = await client.get("/read", headers={"Cookie": f"other={cookies['other']}"})
    assert await other_only.json() == {"main": None, "other": "other"}


async def test_unknown_session_name_is_a_key_error_naming_the_configured_ones(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(two_session_app())
    text = await (await client.get("/unknown")).text()
    assert "'nope'" in text
    assert COOKIE in text
    assert "other" in text


async def test_get_session_without_setup_is_a_runtime_error_mentioning_setup() -> None:
    request = make_mocked_request("GET", "/")
    with pytest.raises(RuntimeError, match=r"setup\(app"):
        await get_session(request)


# -- other ways in ------------------------------------------------------------------------------


async def test_session_middleware_alone_keeps_a_session(aiohttp_client: AiohttpClient) -> None:
    client, response = await post_login(aiohttp_client, session_app(middleware_only=True))
    name, value, _ = only_set_cookie(response)
    whoami = await client.get("/whoami", headers={"Cookie": f"{name}={value}"})
    assert await whoami.text() == "alice"
    stranger = await client.get("/whoami")
    assert await stranger.text() == "None"


async def test_store_from_memory_url_honours_max_entries() -> None:
    store = store_from_url("memory://?max_entries=5")
    assert isinstance(store, MemoryStore)
    tokens = [await store.save(None, b"x", ttl=60, namespace=COOKIE) for _ in range(7)]
    assert len(store) == 5
    # The two oldest were evicted to make room; the five newest are all there.
    assert [await store.load(t, namespace=COOKIE) for t in tokens if t] == [None] * 2 + [b"x"] * 5


async def test_setup_with_a_store_url_works(aiohttp_client: AiohttpClient) -> None:
    client, response = await post_login(aiohttp_client, session_app(store="memory://"))
    name, value, _ = only_set_cookie(response)
    whoami = await client.get("/whoami", headers={"Cookie": f"{name}={value}"})
    assert await whoami.text() == "alice"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_import_does_not_import_optional_drivers() -> None:
    result = run_python(
        "import sys, aiohttp_sessionkit\n"
        "drivers = ('redis', 'asyncpg', 'pymongo', 'motor', 'jwt')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in drivers))\n"
        "print(aiohttp_sessionkit.MemoryStore.__name__)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "MemoryStore"]


def test_keygen_prints_a_key_that_parse_key_accepts() -> None:
    keys = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "aiohttp_sessionkit", "keygen"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip()
        assert result.stdout == key + "\n"
        assert len(parse_key(key)) == 32
        keys.append(key)
    assert keys[0] != keys[1]


@pytest.mark.parametrize("name", ["__host-sid", "__HOST-sid", "__secure-sid"])
def test_cookie_prefixes_are_matched_case_insensitively(name: str) -> None:
    with pytest.raises(ConfigurationError, match="Secure"):
        setup(web.Application(), MemoryStore(), cookie_name=name, secure=False)


@pytest.mark.parametrize("max_age", [1, 2, 59])
async def test_short_max_age_works_with_the_derived_touch_interval(
    aiohttp_client: AiohttpClient, clock: FakeClock, max_age: int
) -> None:
    # The derived refresh interval must fit every valid max_age: a read within max_age of the
    # last one keeps the session alive, however short max_age is.
    client, response = await post_login(aiohttp_client, session_app(max_age=max_age))
    _, cookie, _ = only_set_cookie(response)
    for _ in range(3):
        clock.advance(max_age)
        response = await client.get("/whoami", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert await response.text() == "alice"
        renewed = response.headers.getall("Set-Cookie", [])
        if renewed:
            _, cookie, _ = parse_set_cookie(renewed[0])
    clock.advance(max_age + 1)
    response = await client.get("/whoami", headers={"Cookie": f"{COOKIE}={cookie}"})
    assert await response.text() != "alice"


def test_explicit_touch_interval_of_zero_refreshes_on_every_read() -> None:
    app = web.Application()
    setup(app, MemoryStore(), idle_timeout=1, touch_interval=0)
    with pytest.raises(ConfigurationError, match="0 or a positive"):
        setup(web.Application(), MemoryStore(), touch_interval=-1)
