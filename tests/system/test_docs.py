"""Every code example in the documentation runs, and does what the page around it says.

Examples are the fenced ``python`` and ``pycon`` blocks of docs/*.md, README.md and
SECURITY.md (which docs/security.md includes). Each is named by an HTML comment on the line
before its fence, ``<!-- example: NAME -->``, which neither GitHub nor Sphinx shows:

- a ``pycon`` block is a doctest and checks itself;
- a ``python`` block is run as a module (``__name__`` is not ``"__main__"``); a module-level
  ``web.run_app(app)`` hands over the application instead of serving it forever. The
  application gets one more route, ``/_probe`` (a session counter), and is served on a
  loopback port; the check in CHECKS under the block's name then drives it with real
  requests. A server URL in the example can be swapped for one of the suite's throwaway
  servers (``servers=``); an example whose servers cannot exist here (``serve=False``) is
  run and checked without serving.

A new example needs a name, and a ``python`` example a check here: an example that is
only run proves little more than that it imports.

Files of the reader's own project that cannot run here (an Alembic ``env.py`` and
migration, a store skeleton for an imaginary server, a test module using the contract kit)
are shown with MyST's ``{code-block}`` directive and are not collected; the contract kit's
use by a third party is exercised by tests/stores/test_testing_kit.py and
tests/stores/test_store_sql.py.
"""

from __future__ import annotations

import ast
import doctest
import json
import re
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import aiohttp_sessionkit
from tests.harness import REPO_ROOT

ROOT = REPO_ROOT
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", ROOT / "SECURITY.md"]
FENCE = re.compile(
    r"^(?:<!-- example: (?P<name>[\w-]+) -->\n)?```(?P<lang>python|pycon)\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    name: str | None
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def collect() -> list[Example]:
    found = []
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            found.append(
                Example(
                    page=str(path.relative_to(ROOT)),
                    line=text.count("\n", 0, match.start("code")) + 1,
                    name=match["name"],
                    lang=match["lang"],
                    code=match["code"],
                )
            )
    return found


EXAMPLES = collect()
CheckFn = Callable[[TestClient[Any, Any] | None, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Check:
    fn: CheckFn
    serve: bool
    servers: dict[str, str]


CHECKS: dict[str, Check] = {}

#: The signing key of the issuer whose JWKS the JWT verifier example reads.
DOCS_ISSUER_KEY = Ed25519PrivateKey.generate()


def docs_issuer_jwks() -> dict[str, Any]:
    from aiohttp_sessionkit import JWTStore

    jwks: dict[str, Any] = JWTStore(DOCS_ISSUER_KEY, algorithm="EdDSA").jwks()
    return jwks


def check(
    *names: str, serve: bool = True, servers: dict[str, str] | None = None
) -> Callable[[CheckFn], CheckFn]:
    """Register a check for the examples ``names``; ``servers`` maps a URL to a fixture."""

    def register(fn: CheckFn) -> CheckFn:
        for name in names:
            CHECKS[name] = Check(fn, serve, servers or {})
        return fn

    return register


async def probe(request: web.Request) -> web.Response:
    session = await aiohttp_sessionkit.get_session(request)
    session["probe"] = session.get("probe", 0) + 1
    return web.Response(text=str(session["probe"]))


def cookie_of(response: Any, name: str = "AIOHTTP_SESSION") -> Any:
    assert name in response.cookies, f"no {name} cookie set"
    return response.cookies[name]


# ------------------------------------------------------------------ the checks


@check("counter", "readme-quickstart")
async def counter(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    assert [await (await client.get("/")).text() for _ in range(3)] == ["1", "2", "3"]
    client.session.cookie_jar.clear()
    assert await (await client.get("/")).text() == "1"


@check("login")
async def login(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    before = await client.get("/")
    assert await before.text() == "Hello, stranger."
    assert "Set-Cookie" not in before.headers  # a read of a new session writes nothing
    response = await client.post("/login", data={"user": "ada"})
    assert await response.text() == "Hello, ada. Welcome back!"
    assert await (await client.get("/")).text() == "Hello, ada."  # the flash showed once
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["AIOHTTP_SESSION"]
    logout = await client.post("/logout", allow_redirects=False)
    expired = cookie_of(logout)
    assert expired.value == "" and expired["max-age"] == "0"  # the browser forgets it
    assert await (await client.get("/")).text() == "Hello, stranger."
    # The signed-out session's cookie opens nothing any more.
    client.session.cookie_jar.clear()
    replay = await client.get("/", headers={"Cookie": f"AIOHTTP_SESSION={cookie.value}"})
    assert await replay.text() == "Hello, stranger."


@check("users-app")
async def users_app(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    phone, laptop = {"User-Agent": "phone"}, {"User-Agent": "laptop"}
    tokens = {}
    for headers in (phone, laptop):
        client.session.cookie_jar.clear()
        response = await client.post("/login?user=ada", headers=headers)
        tokens[headers["User-Agent"]] = cookie_of(response).value
    client.session.cookie_jar.clear()

    def as_(device: str) -> dict[str, str]:
        return {"Cookie": f"AIOHTTP_SESSION={tokens[device]}", "User-Agent": device}

    listed = await (await client.get("/devices", headers=as_("laptop"))).json()
    assert [(d["browser"], d["this device"]) for d in listed] == [
        ("laptop", True),
        ("phone", False),
    ]
    changed = await client.post("/password", headers=as_("laptop"))
    assert await changed.json() == {"other sessions ended": 1}
    assert len(await (await client.get("/devices", headers=as_("laptop"))).json()) == 1
    gone = await client.post(
        "/devices/sign-out", data={"handle": listed[1]["handle"]}, headers=as_("laptop")
    )
    assert await gone.json() == {"ended": False}  # the phone's session already ended
    mine = await client.post(
        "/devices/sign-out", data={"handle": listed[0]["handle"]}, headers=as_("laptop")
    )
    assert await mine.json() == {"ended": True}
    assert cookie_of(mine).value == ""  # this device signed out too


@check("remember-me")
async def remember_me(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    for form, max_age in (
        ({"user": "ada", "remember": "on"}, str(14 * 24 * 3600)),
        ({"user": "bo"}, ""),
    ):
        client.session.cookie_jar.clear()
        response = await client.post("/login", data=form, allow_redirects=False)
        assert response.status == 302
        # With "remember me": a 14-day cookie; without: no Max-Age, a browser-session cookie.
        assert cookie_of(response)["max-age"] == max_age
        assert await (await client.get("/")).text() == f"Hello, {form['user']}."


@check("testing-handlers", serve=False)
async def handler_tests(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    # The example's test, run as pytest-aiohttp would run it.
    clients: list[TestClient[Any, Any]] = []

    async def aiohttp_client(app: web.Application) -> TestClient[Any, Any]:
        started = TestClient(TestServer(app, host="127.0.0.1"))
        await started.start_server()
        clients.append(started)
        return started

    try:
        await ns["test_a_signed_in_user_adds_to_the_cart"](aiohttp_client)
        assert len(clients) == 1
        # The next request sees what the example's test read: the session lives on.
        response = await clients[0].post("/cart/pear")
        assert await response.text() == "2 items"
    finally:
        for started in clients:
            await started.close()


@check("store-url")
async def store_url(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    first = await client.get("/_probe")
    assert await first.text() == "1" and len(cookie_of(first).value) == 43  # an id
    assert await (await client.get("/_probe")).text() == "2"


@check("cookie-store")
async def cookie_store(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    first = await client.get("/_probe")
    sealed = cookie_of(first)
    assert await first.text() == "1" and len(sealed.value) > 43  # the session itself
    assert sealed["max-age"] == str(7 * 24 * 3600)
    assert await (await client.get("/_probe")).text() == "2"


@check("cookie-deny-list", servers={"redis://127.0.0.1:6379/0": "redis_server"})
async def cookie_deny_list(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    first = await client.get("/_probe")
    sealed = cookie_of(first).value
    assert await first.text() == "1" and len(sealed) > 43  # the session itself
    assert await (await client.get("/_probe")).text() == "2"
    # A logout with that copy (the store's part of it), then a replay of the copy.
    await ns["store"].delete(sealed, namespace="AIOHTTP_SESSION")
    client.session.cookie_jar.clear()
    replay = await client.get("/_probe", headers={"Cookie": f"AIOHTTP_SESSION={sealed}"})
    assert await replay.text() == "1"  # a fresh session: the deny list refused it


@check("borrowed-client", servers={"redis://127.0.0.1:6379/0": "redis_server"})
async def borrowed_client(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    assert await (await client.get("/_probe")).text() == "1"
    assert await (await client.get("/_probe")).text() == "2"
    assert await ns["client"].keys("myapp:session:*")  # the prefix is the example's
    await ns["client"].aclose()


@check("two-apps-one-store", servers={"redis://127.0.0.1:6379/0": "redis_server"})
async def two_apps_one_store(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None  # admin
    shop: web.Application = ns["shop"]
    shop.router.add_get("/_probe", probe)
    # The trap the page warns about: another app on shop's prefix with the default name.
    trap = web.Application()
    aiohttp_sessionkit.setup(
        trap, aiohttp_sessionkit.RedisStore(ns["REDIS_URL"], key_prefix="shop:session:")
    )
    trap.router.add_get("/_probe", probe)
    async with (
        TestClient(TestServer(shop, host="127.0.0.1")) as shop_client,
        TestClient(TestServer(trap, host="127.0.0.1")) as trap_client,
    ):
        first = await shop_client.get("/_probe")
        assert await first.text() == "1"
        shop_id = cookie_of(first).value
        for name in ("AIOHTTP_SESSION", "ADMIN_SESSION"):  # admin opens nothing of shop's
            client.session.cookie_jar.clear()
            response = await client.get("/_probe", headers={"Cookie": f"{name}={shop_id}"})
            assert await response.text() == "1"
        shared = await trap_client.get("/_probe", headers={"Cookie": f"AIOHTTP_SESSION={shop_id}"})
        assert await shared.text() == "2"  # shop's session, read and written by another app


@check("memcached-store", servers={"memcached://127.0.0.1:11211": "memcached_server"})
async def memcached_store(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    from aiohttp_sessionkit.ids import record_key

    assert client is not None
    first = await client.get("/_probe")
    assert await first.text() == "1"
    assert await (await client.get("/_probe")).text() == "2"
    # The item carries the example's prefix and a hash of the id, read with the store's client.
    item = b"myapp:session:" + record_key("AIOHTTP_SESSION", cookie_of(first).value).encode()
    assert await ns["store"].client.get(item) is not None


@check("production-settings", serve=False)
async def production_settings(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    # Built and validated (a __Host- cookie demands Secure and no Domain); redis.internal
    # does not exist here, and constructors do no I/O, so nothing is served.
    assert isinstance(ns["app"], web.Application) and ns["app"].middlewares


@check("jwt-verifier-jwks-url", serve=False)
async def jwt_verifier_jwks_url(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    # Built without I/O (the set is fetched when the application starts); a verifier.
    verifier = ns["verifier"]
    assert isinstance(verifier, aiohttp_sessionkit.JWTStore) and verifier.read_only
    assert verifier._follower is not None
    assert verifier._follower.endpoint.min_refetch_interval == 60


@check("two-sessions")
async def two_sessions(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    response = await client.get("/")
    assert len(cookie_of(response).value) == 43  # an id for the memory store
    assert len(cookie_of(response, "prefs").value) > 43  # the sealed session itself


async def header_probe(client: TestClient[Any, Any]) -> str:
    """Two /_probe requests over the header transport; returns the token."""
    first = await client.get("/_probe")
    assert await first.text() == "1" and "Set-Cookie" not in first.headers
    token = first.headers["Session-Token"]
    again = await client.get("/_probe", headers={"Authorization": f"Bearer {token}"})
    assert await again.text() == "2"
    return token


@check("api-clients-login")
async def api_clients_login(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    token = (await (await client.post("/login")).json())["token"]
    me = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert await me.json() == {"user": "alice"} and me.headers["Vary"] == "Authorization"
    assert await (await client.get("/me")).json() == {"user": None}


@check("api-clients-both")
async def api_clients_both(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    browser = await client.get("/_probe")  # no token: answered on the first, the cookie
    assert len(cookie_of(browser).value) == 43 and "Session-Token" not in browser.headers
    client.session.cookie_jar.clear()
    api = await client.get("/_probe", headers={"Authorization": "Bearer " + "x" * 43})
    assert await api.text() == "1"  # the header wins (and this one opens nothing)


@check("api-clients-cors")
async def api_clients_cors(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    origin = {"Origin": "https://app.example"}
    preflight = await client.options("/_probe", headers=origin)
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    response = await client.get("/_probe", headers=origin)
    assert response.headers["Access-Control-Expose-Headers"] == "Session-Token"
    assert response.headers["Session-Token"]
    other = await client.get("/_probe", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


@check("jwt-issuer", servers={"redis://127.0.0.1:6379/0": "redis_server"})
async def jwt_issuer(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    import jwt

    assert client is not None
    token = (await (await client.post("/login")).json())["token"]
    keys = await (await client.get("/.well-known/jwks.json")).json()
    [jwk] = keys["keys"]
    assert jwt.get_unverified_header(token)["kid"] == jwk["kid"]
    public = jwt.PyJWK(jwk).key
    claims = jwt.decode(
        token, public, algorithms=["EdDSA"], audience="api", issuer="https://auth.example"
    )
    assert claims["sub"] == "ada" and claims["roles"] == ["admin"]
    auth = {"Authorization": f"Bearer {token}"}
    assert await (await client.get("/me", headers=auth)).json() == {
        "sub": "ada",
        "roles": ["admin"],
    }
    await client.post("/logout", headers=auth)
    assert await (await client.get("/me", headers=auth)).json() == {"sub": None, "roles": None}


@check("jwt-verifier", serve=False)
async def jwt_verifier(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    from aiohttp_sessionkit import JSONSerializer, JWTStore

    verifier = ns["verifier"]
    assert verifier.read_only and not verifier.revocable
    issuer = JWTStore(
        ns["issuer_key"], algorithm="EdDSA", issuer="https://auth.example", audience="api"
    )
    session = issuer.session_class()
    session["sub"] = "ada"
    token = await issuer.save(
        None,
        issuer.dump(session, JSONSerializer(), session.created),
        ttl=60,
        namespace="AIOHTTP_SESSION",
    )
    assert token is not None
    opened = await verifier.load(token, namespace="AIOHTTP_SESSION")
    restored = verifier.restore(
        opened,
        JSONSerializer(),
        identity=None,
        idle_timeout=60,
        absolute_timeout=60,
    )
    assert restored is not None and restored["sub"] == "ada"


@check("jwt-verifier-jwks", serve=False, servers={"redis://127.0.0.1:6379/0": "redis_server"})
async def jwt_verifier_jwks(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    from aiohttp_sessionkit import JSONSerializer

    verifier = ns["verifier"]
    # The issuer whose JWKS the runner put in ISSUER_JWKS, sharing the verifier's deny list.
    issuer = aiohttp_sessionkit.JWTStore(
        DOCS_ISSUER_KEY,
        algorithm="EdDSA",
        issuer="https://auth.example",
        audience="api",
        revocation=verifier.revocation,
    )
    assert verifier.read_only and verifier.revocable
    session = issuer.session_class()
    session["sub"] = "ada"
    token = await issuer.save(
        None, issuer.dump(session, JSONSerializer(), session.created), ttl=60, namespace="S"
    )
    assert token is not None
    assert (await verifier.load(token, namespace="S")) is not None
    await issuer.delete(token, namespace="S")  # the issuer's logout
    assert (await verifier.load(token, namespace="S")) is None  # seen by the verifier
    await verifier.close()


@check("migration-before", serve=False)
async def migration_before(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert ns["app"].middlewares  # aiohttp-session's middleware, as the site had it
    await ns["redis"].aclose()


@check("migration-after", servers={"redis://127.0.0.1:6379/0": "redis_server"})
async def migration_after(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    first = await client.get("/_probe")
    assert await first.text() == "1" and len(cookie_of(first).value) == 43
    assert cookie_of(first)["max-age"] == str(7 * 24 * 3600)  # not a browser-session cookie
    assert await (await client.get("/_probe")).text() == "2"
    await ns["redis"].aclose()


@check("migration-cookie")
async def migration_cookie(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    from aiohttp_session.cookie_storage import EncryptedCookieStorage

    assert client is not None
    # A cookie the old site sealed with OLD_KEY opens, and moves over to our format.
    old_app = web.Application()
    import aiohttp_session

    async def write(request: web.Request) -> web.Response:
        session = await aiohttp_session.get_session(request)
        session["probe"] = 41
        return web.Response(text="old")

    aiohttp_session.setup(old_app, EncryptedCookieStorage(ns["OLD_KEY"], max_age=60))
    old_app.router.add_get("/", write)
    # aiohttp-session keys requests with plain strings, which aiohttp 3.14 warns about; under
    # this suite's filterwarnings=error the old app would answer 500 (see
    # tests/interop/test_legacy.py).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        async with TestClient(TestServer(old_app, host="127.0.0.1")) as old:
            legacy = cookie_of(await old.get("/")).value
    client.session.cookie_jar.clear()
    response = await client.get("/_probe", headers={"Cookie": f"AIOHTTP_SESSION={legacy}"})
    assert await response.text() == "42"
    assert cookie_of(response).value != legacy
    # The migrated user's cookie keeps the old lifetime, not a browser-session one.
    assert cookie_of(response)["max-age"] == str(7 * 24 * 3600)


@check("migration-security", serve=False)
async def migration_security(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    policy = ns["MyAuthorizationPolicy"]()
    assert await policy.authorized_userid("ada") == "ada"
    assert await policy.permits("ada", "admin") and not await policy.permits("grace", "admin")
    assert len(ns["app"].middlewares) == 1  # the session middleware; security adds none


@check("deployment-cluster", serve=False)
async def deployment_cluster(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    # The hosts are the reader's; constructors do no I/O, so the setup is built and checked.
    assert ns["app"].middlewares
    assert ns["cluster"].get_connection_kwargs()["socket_timeout"] == 1.0
    await ns["cluster"].aclose()


@check("deployment-sentinel", serve=False)
async def deployment_sentinel(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert ns["app"].middlewares and ns["other_app"].middlewares


@check("sql-setup", serve=False)
async def sql_setup(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    from aiohttp_sessionkit import SQLAlchemyStore

    # Constructors do no I/O: nothing is created or connected until the app starts.
    for name in ("app", "mysql_app", "own_app"):
        assert ns[name].middlewares
    assert isinstance(SQLAlchemyStore(ns["engine"]), SQLAlchemyStore)
    await ns["engine"].dispose()


@check("sql-models", serve=False)
async def sql_models(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    tables = ns["metadata"].tables
    assert set(tables) == {"users", "aiohttp_sessions"}
    assert [c.name for c in ns["sessions"].columns] == ["key", "data", "expires_at"]


@check("sql-no-ddl", serve=False)
async def sql_no_ddl(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert ns["app"].middlewares
    await ns["engine"].dispose()


@check("deployment-gunicorn")
async def deployment_gunicorn(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    # Served here in one process; tests/system/test_deployment.py runs the same app under gunicorn.
    assert client is not None
    first = await client.get("/")
    assert (await first.json())["visits"] == 1
    assert cookie_of(first)["max-age"] == str(14 * 24 * 3600)
    assert (await (await client.get("/")).json())["visits"] == 2


@check("observability-listeners")
async def observability_listeners(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    response = await client.post("/login")
    token = cookie_of(response).value
    await client.post("/logout")
    audit = ns["audit"]
    # Each line ends with the session's handle: the same record key for both events.
    assert [line.rsplit(" ", 1)[0] for line in audit] == ["created", "ended logout"]
    assert len({line.rsplit(" ", 1)[1] for line in audit}) == 1
    assert not [line for line in audit if token in line]  # handles, never tokens


@check("websockets-echo")
async def websockets_echo(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    assert client is not None
    await client.post("/login")
    ws = await client.ws_connect("/chat")
    await ws.send_str("hello")
    assert (await ws.receive(timeout=2)).data == "ada: hello"
    await ws.close()


@check("deployment-proxy", serve=False)
async def deployment_proxy(client: TestClient[Any, Any] | None, ns: dict[str, Any]) -> None:
    app = await ns["make_app"]()

    async def scheme(request: web.Request) -> web.Response:
        session = await aiohttp_sessionkit.get_session(request)
        session["seen"] = True
        return web.Response(text=request.scheme)

    app.router.add_get("/", scheme)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for forwarded, seen in (("https", "https"), (None, "http")):
            headers = {} if forwarded is None else {"X-Forwarded-Proto": forwarded}
            client.session.cookie_jar.clear()
            response = await client.get("/", headers=headers)
            assert await response.text() == seen
            # secure=True: Secure whatever the proxy said, or forgot to say.
            assert cookie_of(response)["secure"] is True


def test_no_example_generates_a_key_per_process() -> None:
    """A key generated at startup differs per worker and per restart: users are logged out
    whenever a request reaches another process. No example a reader might copy does it."""
    sources = [(e.where, e.code) for e in EXAMPLES if e.lang == "python"]
    sources += [
        (str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
        for path in sorted((ROOT / "examples").glob("*.py"))
    ]
    offenders = [where for where, code in sources if re.search(r"generate_key\(\)", code)]
    assert not offenders, f"examples that generate a key at startup: {offenders}"


# ------------------------------------------------------------------ the runner


def test_every_example_is_named_and_every_check_has_its_example() -> None:
    unnamed = [e.where for e in EXAMPLES if e.name is None]
    assert not unnamed, f"examples without <!-- example: NAME --> before the fence: {unnamed}"
    names = [e.name for e in EXAMPLES]
    assert len(names) == len(set(names)), "two examples share a name"
    programs = {e.name or "" for e in EXAMPLES if e.lang == "python"}
    assert programs <= CHECKS.keys(), f"no check for {sorted(programs - CHECKS.keys())}"
    assert CHECKS.keys() <= programs, f"checks without examples: {CHECKS.keys() - programs}"


def test_choosing_a_store_covers_every_store_and_url_scheme() -> None:
    from aiohttp_sessionkit.stores.url import SCHEMES

    page = (ROOT / "docs" / "stores.md").read_text(encoding="utf-8")
    stores = [n for n in aiohttp_sessionkit.__all__ if n.endswith("Store") and "Abstract" not in n]
    stores.remove("ServerStore")  # the base class for writing one
    missing = [f"`{n}(" for n in stores if f"`{n}(" not in page]
    missing += [scheme for scheme in SCHEMES if f"`{scheme}" not in page]
    assert not missing, f"docs/stores.md does not cover {missing}"


def test_the_api_reference_reads_on_github_too() -> None:
    """Sphinx fills the {eval-rst} blocks; GitHub shows them raw. The Markdown table of
    api.md names every documented name, so the page is a reference without Sphinx."""
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = re.findall(r"^\.\. auto\w+:: aiohttp_sessionkit\.([\w.]+)$", api, re.M)
    table = "\n".join(line for line in api.splitlines() if line.startswith("| `"))
    missing = [name for name in documented if not re.search(rf"`{re.escape(name)}\b", table)]
    assert not missing, f"docs/api.md's table of every public name lacks {missing}"


def test_the_api_reference_documents_every_public_name() -> None:
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. auto\w+:: aiohttp_sessionkit\.(\w+)$", api, re.M))
    assert documented == set(aiohttp_sessionkit.__all__)


def _servers_of(example: Example) -> dict[str, str]:
    """The test servers an example's check needs (url in the example -> fixture name)."""
    checker = CHECKS.get(example.name or "")
    return checker.servers if checker is not None else {}


def run_app_capture(captured: list[web.Application]) -> Callable[..., None]:
    def run_app(app: web.Application, **_: Any) -> None:
        captured.append(app)

    return run_app


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if e.lang == "pycon"], ids=lambda e: e.name or e.where
)
def test_doctest_example(example: Example) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(example.code, {}, example.name or "", example.page, example.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{example.where} failed, see above"


@pytest.mark.parametrize(
    "example",
    [
        pytest.param(e, marks=[pytest.mark.servers] if _servers_of(e) else [])
        for e in EXAMPLES
        if e.lang == "python"
    ],
    ids=lambda e: e.name or e.where,
)
async def test_program_example(
    example: Example, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    assert example.name in CHECKS, f"{example.where}: no check named {example.name!r}"
    checker = CHECKS[example.name]
    source = example.code
    for url, fixture in checker.servers.items():
        assert url in source, f"{example.where} no longer mentions {url}"
        source = source.replace(url, request.getfixturevalue(fixture).url)
    captured: list[web.Application] = []
    monkeypatch.setattr(web, "run_app", run_app_capture(captured))
    # What the examples read from the environment, as a deployment would provide it.
    monkeypatch.setenv("SESSION_KEY", aiohttp_sessionkit.generate_key())
    monkeypatch.setenv("AIOHTTP_SESSION_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("ISSUER_JWKS", json.dumps(docs_issuer_jwks()))
    namespace: dict[str, Any] = {"__name__": f"docs_example_{example.name}"}
    code = compile(
        "\n" * (example.line - 1) + source,
        str(ROOT / example.page),
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
    )
    result = eval(code, namespace)  # noqa: S307 - our own documentation, by design
    if result is not None:
        await result
    if not checker.serve:  # its check decides what the example must have built
        await checker.fn(None, namespace)
        return
    app = captured[0] if captured else namespace.get("app")
    assert isinstance(app, web.Application), f"{example.where} builds no application"
    app.router.add_get("/_probe", probe)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        await checker.fn(client, namespace)
