"""Side-by-side load benchmark: ``python benchmarks/run.py [--quick] [--only NAME,...]``.

Each configuration runs as one aiohttp server process (benchmarks/app.py) on a free loopback
port and is loaded from a second process by ``wrk`` (or benchmarks/loadgen.py when wrk is
missing). Rounds alternate over the configurations so that drift hits all of them alike.
Prints the median req/s per route, the ratios the performance targets use with PASS/MISS,
the cookie size and the memory of a million MemoryStore sessions, and a Markdown table for
the README; writes every figure to benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import benchcommon as bc

RESULTS_DIR = bc.BENCH_DIR / "results"
APP = bc.BENCH_DIR / "app.py"
LOADGEN = bc.BENCH_DIR / "loadgen.py"
MEMTEST = bc.BENCH_DIR / "memtest.py"
HOST = "127.0.0.1"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Pinning:
    """Which CPU the server under test and the load generator run on (``--no-pin``: any).

    With two or more CPUs the measured server gets the last one and wrk the first: left to
    the scheduler, the two migrate between the CPUs and trade places with whatever else
    runs, which moved req/s by up to 20% between identical configurations on a 2-CPU VM.
    """

    cpus = sorted(os.sched_getaffinity(0))
    enabled = len(cpus) >= 2

    @classmethod
    def server(cls, pid: int) -> None:
        if cls.enabled:
            os.sched_setaffinity(pid, {cls.cpus[-1]})

    @classmethod
    def load(cls) -> None:  # a preexec_fn: runs in the load generator's child process
        if cls.enabled:
            os.sched_setaffinity(0, {cls.cpus[0]})


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    label: str
    route: str
    config: str
    reference: str
    threshold: float
    beside: str | None = None  # a configuration whose ratio to the same reference is shown too
    #: Reported, but not judged: "retired" (MongoDB while FerretDB is the only server
    #: here) or "info" (a ratio shown for reference, without a target).
    note: str | None = None


def _targets() -> list[Target]:
    """The targets: ratios to the measured limits, floors and transports (issue 15; the
    session-layer ones as issue 22 restated them, so that clear code passes)."""
    targets = [Target(f"{c}, /untouched", "untouched", c, "untouched-limit", 0.96) for c in bc.OURS]
    for store in ("cookie", "memory"):
        beside = "aiohttp-session-cookie" if store == "cookie" else None
        for route in ("read", "write"):
            label = f"{store}, /{route}"
            targets.append(Target(label, route, store, f"{store}-limit", 0.85, beside, "info"))
            # The adjusted limit: the limit plus the unavoidable prepare signal and
            # Vary (and Cache-Control with a new cookie), measured in the same run.
            targets.append(Target(label, route, store, f"{store}-limit-adj", 0.85, beside))
    # The header transport: within 2% of the cookie transport on the same store and route.
    for store in ("memory", "cookie"):
        for route in ("read", "write"):
            label = f"{store}-header, /{route}"
            targets.append(Target(label, route, f"{store}-header", store, 0.98))
    # A legacy reader configured: costs nothing while our own cookies open (for reference).
    for route in ("read", "write"):
        label = f"cookie-legacy, /{route}"
        targets.append(Target(label, route, "cookie-legacy", "cookie", 1.0, note="info"))
    # The JWT store: against the JWT format's own limit; for reference, against the cookie
    # store, PyJWT called in a handler, and the JWT limit against the cookie limit (what the
    # format costs against AES-GCM cookies whoever implements it).
    for route in ("read", "write"):
        targets.append(Target(f"jwt, /{route}", route, "jwt", "jwt-limit-adj", 0.90))
        targets.append(Target(f"jwt, /{route}", route, "jwt", "cookie", 1.0, note="info"))
        targets.append(Target(f"jwt, /{route}", route, "jwt", "jwt-floor", 0.90, note="info"))
        targets.append(
            Target(
                f"jwt-limit-adj, /{route}", route, "jwt-limit-adj", "cookie-limit-adj", 1.0,
                note="info",
            )
        )  # fmt: skip
    for route in ("read", "write"):
        targets.append(Target(f"redis, /{route}", route, "redis", "redis-floor", 0.95))
        targets.append(Target(f"redis, /{route}", route, "redis", "aiohttp-session-redis", 1.2))
    for route in ("read", "write"):
        targets.append(Target(f"memcached, /{route}", route, "memcached", "memcached-floor", 0.95))
    for route in ("read", "write"):
        for sql in ("sql-sqlite", "sql-mariadb"):
            targets.append(Target(f"{sql}, /{route}", route, sql, f"{sql}-floor", 0.90))
    for backend in ("postgres", "mongo"):
        for route in ("read", "write"):
            targets.append(
                Target(
                    f"{backend}, /{route}", route, backend, f"{backend}-floor", 0.90,
                    note="retired" if backend == "mongo" else None,
                )
            )  # fmt: skip
    return targets


def _reference_for(config: str, route: str) -> str:
    """The configuration each one's ratio is printed against in the per-route tables."""
    spec = bc.CONFIG_BY_NAME[config]
    if spec.family in ("bare", "limit", "floor"):
        return "bare"
    if route == "untouched":
        return "untouched-limit"
    if spec.transport == "header":
        return config.removesuffix("-header")
    if config == "sql-mariadb":
        return "sql-mariadb-floor"
    if spec.backend is not None:
        return f"{spec.backend}-floor"
    if config == "jwt":
        return "jwt-floor"
    if config == "sql-sqlite":
        return "sql-sqlite-floor"
    if config == "cookie-legacy":
        return "cookie"
    if config in ("memory", "cookie"):
        return f"{config}-limit"
    return "bare"


COOKIE_TARGET = 200  # characters in the cookie value, ~100-byte session, our cookie store
MEMORY_TARGET = 500 * 1024 * 1024  # bytes for 1,000,000 sessions in MemoryStore


# --------------------------------------------------------------------------- backing servers


class ServerHandle(Protocol):
    @property
    def url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


_SERVER_CLASSES = {
    "redis": "RedisServer",
    "memcached": "MemcachedServer",
    "postgres": "PostgresServer",
    "mongo": "FerretServer",
    "mysql": "MariaDBServer",
}
_SERVER_ENV = {
    "redis": bc.ENV_REDIS_URL,
    "memcached": bc.ENV_MEMCACHED_URL,
    "postgres": bc.ENV_POSTGRES_DSN,
    "mongo": bc.ENV_MONGO_URL,
    "mysql": bc.ENV_MYSQL_URL,
}


@contextlib.contextmanager
def backing_servers(needed: set[str], problems: dict[str, str]) -> Iterator[dict[str, str]]:
    """Start the Redis/PostgreSQL/FerretDB servers ``needed`` (tests.harness.servers), yield URLs.

    A backend whose ``SESSIONKIT_BENCH_*`` variable is set is used from there instead. A
    server that cannot start is reported in ``problems`` instead of failing the run.
    """
    urls: dict[str, str] = {}
    started: list[ServerHandle] = []
    try:
        if needed:
            bc.use_working_tree()  # the repository root, where the tests package lives
            try:
                servers = importlib.import_module("tests.harness.servers")
            except Exception as exc:
                for backend in needed:
                    problems[backend] = f"cannot import tests/harness/servers.py: {exc!r}"
                needed = set()
        for backend in sorted(needed):
            external = os.environ.get(_SERVER_ENV[backend])
            if external:  # the user's own server, e.g. a real MongoDB: used, never stopped
                urls[backend] = external
                print(f"  {backend}: {_SERVER_ENV[backend]} (external)", flush=True)
                continue
            try:
                server: ServerHandle = getattr(servers, _SERVER_CLASSES[backend])()
                server.start()
            except Exception as exc:
                problems[backend] = f"{_SERVER_CLASSES[backend]} did not start: {exc}"
                continue
            started.append(server)
            urls[backend] = server.url
            print(f"  {backend}: {server.url}", flush=True)
        yield urls
    finally:
        for server in reversed(started):
            close = getattr(server, "close", None)  # also removes its temp dir
            try:
                if callable(close):
                    close()
                else:
                    server.stop()
            except Exception as exc:
                print(f"  stopping {server!r} failed: {exc}", file=sys.stderr)


# --------------------------------------------------------------------------- app processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class AppProcess:
    """``python benchmarks/app.py CONFIG PORT``, with its output in a log file."""

    def __init__(self, config: str, env: dict[str, str], log_dir: Path) -> None:
        self.config = config
        self.port = free_port()
        self.log_path = log_dir / f"{config}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=bc.REPO_ROOT,
        )
        Pinning.server(self.proc.pid)

    def command(self) -> list[str]:
        return [sys.executable, str(APP), self.config, str(self.port)]

    def url(self, route: str) -> str:
        return f"http://{HOST}:{self.port}/{route}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                # S310: always an http:// URL built here.
                with urllib.request.urlopen(self.url("untouched"), timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not answering after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # run_app shuts down cleanly on SIGINT
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def http_get(url: str, header: str = "Cookie", value: str | None = None) -> tuple[int, str, Any]:
    """GET ``url`` with ``header: value``; return the status, body and response headers."""
    # S310: only ever the http:// URLs of our own app processes.
    request = urllib.request.Request(url, headers={header: value} if value else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            body = response.read().decode(errors="replace")
            return response.status, body, response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), exc.headers


def login(app: AppProcess) -> str:
    """Log in once; return the request header value that presents the new session.

    ``NAME=VALUE`` from the Set-Cookie for the cookie transport, ``Bearer TOKEN`` from the
    ``Session-Token`` response header for the header transport.
    """
    status, _, headers = http_get(app.url("login"))
    if status != 200:
        raise RuntimeError(f"/login answered {status}")
    if bc.CONFIG_BY_NAME[app.config].transport == "header":
        token = headers.get(bc.TOKEN_RESPONSE_HEADER)
        if not token:
            raise RuntimeError(f"/login sent no {bc.TOKEN_RESPONSE_HEADER} header")
        return f"Bearer {token}"
    set_cookies = headers.get_all("Set-Cookie") or []
    for header in set_cookies:
        pair = header.split(";", 1)[0].strip()
        if pair.startswith(bc.COOKIE_NAME + "="):
            return str(pair)
    raise RuntimeError(f"/login set no {bc.COOKIE_NAME} cookie (got {set_cookies!r})")


def login_many(app: AppProcess, sessions: int) -> list[str]:
    """Log in ``sessions`` times; return the distinct credentials the load will cycle through."""
    credentials = [login(app) for _ in range(sessions)]
    if len(set(credentials)) != len(credentials):
        raise RuntimeError("/login handed out the same token twice")
    header = bc.CONFIG_BY_NAME[app.config].request_header
    # A token that does not open would measure the "no session" path: check they do.
    for credential in {credentials[0], credentials[-1]}:
        for route in ("read", "write"):
            status, body, _ = http_get(app.url(route), header, credential)
            if status != 200:
                raise RuntimeError(f"/{route} with a login token answered {status}: {body!r}")
    return credentials


def token_length(credential: str) -> int:
    """Characters in the token itself (a cookie's value, a bearer token)."""
    return len(credential.split("=", 1)[1] if "=" in credential[:40] else credential.split()[-1])


# --------------------------------------------------------------------------- load


@dataclass
class Measurement:
    round: int
    config: str
    route: str
    rps: float
    requests: int
    seconds: float
    non2xx: int
    errors: int
    tool: str
    #: Server-process CPU time (user + system) per request during the measurement: much
    #: less sensitive than req/s to other load on the machine.
    cpu_us_per_request: float | None = None
    latency_avg: str | None = None
    socket_errors: dict[str, int] = field(default_factory=dict)


_WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_WRK_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)\b", re.M)
_WRK_NON2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.M)
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_LATENCY = re.compile(r"^\s*Latency\s+(\S+)", re.M)
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(output: str) -> dict[str, Any]:
    rps = _WRK_RPS.search(output)
    total = _WRK_TOTAL.search(output)
    if rps is None or total is None:
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    non2xx = _WRK_NON2XX.search(output)
    sockets = _WRK_SOCKET.search(output)
    latency = _WRK_LATENCY.search(output)
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, sockets.groups()), strict=True))
        if sockets
        else {}
    )
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "seconds": float(total.group(2)) * _TIME_UNITS[total.group(3)],
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": sum(socket_errors.values()),
        "socket_errors": socket_errors,
        "latency_avg": latency.group(1) if latency else None,
    }


class Load:
    """Runs one load against a URL with wrk, or loadgen.py when wrk is missing."""

    def __init__(self, connections: int, force_python: bool) -> None:
        self.connections = connections
        self.wrk = None if force_python else shutil.which("wrk")
        self.tool = "wrk" if self.wrk else "loadgen.py"

    def run(
        self,
        url: str,
        cookies: list[str],
        duration: int,
        scratch: Path,
        header: str = "Cookie",
    ) -> dict[str, Any]:
        """Load ``url`` for ``duration`` seconds; request i carries ``header: cookies[i % len]``."""
        cookie_file = scratch / "cookies.txt"
        cookie_file.write_text("\n".join(cookies) + "\n")
        if self.wrk:
            script = scratch / "cookies.lua"
            script.write_text(
                _WRK_SCRIPT.replace("COOKIE_FILE", json.dumps(str(cookie_file))).replace(
                    "HEADER_NAME", json.dumps(header)
                )
            )
            command = [
                self.wrk, "-t1", f"-c{self.connections}", f"-d{duration}s", "--timeout", "5s",
                "-s", str(script), url,
            ]  # fmt: skip
        else:
            command = [
                sys.executable, str(LOADGEN), url, "--connections", str(self.connections),
                "--duration", str(duration), "--cookies-file", str(cookie_file),
                "--header", header,
            ]  # fmt: skip
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=False,
            preexec_fn=Pinning.load,  # this process runs no threads of its own
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.tool} failed ({done.returncode}): {done.stderr.strip()}")
        if self.wrk:
            return parse_wrk(done.stdout)
        result: dict[str, Any] = json.loads(done.stdout)
        return result


# Each request carries the next cookie (or bearer token) of the list, round robin, so
# concurrent requests belong to different sessions, as on a real site.
_WRK_SCRIPT = """
local cookies = {}
for line in io.lines(COOKIE_FILE) do
  if #line > 0 then cookies[#cookies + 1] = line end
end
local requests = {}
init = function(args)  -- wrk.format needs the Host header, known from here on
  for i, cookie in ipairs(cookies) do
    requests[i] = wrk.format(nil, nil, { [HEADER_NAME] = cookie })
  end
end
local next_one = 0
request = function()
  next_one = next_one % #requests + 1
  return requests[next_one]
end
"""


# --------------------------------------------------------------------------- side measurements


def cookie_sizes() -> dict[str, Any]:
    """Cookie value length for the ~100-byte session: ours vs aiohttp-session's Fernet cookie."""
    bc.use_working_tree()
    from aiohttp_sessionkit import EncryptedCookieStore, JSONSerializer, Session, generate_key
    from aiohttp_sessionkit.session import encode_payload, now

    data = bc.session_data(42)
    payload = encode_payload(Session(data=dict(data)), JSONSerializer(), now())
    store = EncryptedCookieStore(generate_key())
    ours = asyncio.run(store.save(None, payload, ttl=3600, namespace=bc.COOKIE_NAME))
    assert ours is not None
    result: dict[str, Any] = {
        "json_bytes": len(bc.compact_json(data)),
        "ours_payload_bytes": len(payload),
        "ours": len(ours),
    }
    try:
        import warnings

        import aiohttp_session
        from aiohttp import web
        from aiohttp.test_utils import make_mocked_request
        from aiohttp_session.cookie_storage import EncryptedCookieStorage
        from cryptography.fernet import Fernet

        warnings.filterwarnings("ignore", category=web.NotAppKeyWarning)
        storage = EncryptedCookieStorage(Fernet.generate_key().decode())
        session = aiohttp_session.Session(None, data=None, new=True)
        session.update(data)
        response = web.Response()
        asyncio.run(storage.save_session(make_mocked_request("GET", "/"), response, session))
        morsel = response.cookies[bc.COOKIE_NAME]
        result["aiohttp_session"] = len(morsel.value)
        result["aiohttp_session_as_sent"] = len(morsel.coded_value)  # quoted: it has '='
    except ImportError as exc:
        result["aiohttp_session_error"] = str(exc)
    return result


def memory_footprint(sessions: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(MEMTEST), "--sessions", str(sessions)],
        capture_output=True, text=True, timeout=180, check=False, cwd=bc.REPO_ROOT,
    )  # fmt: skip
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-2000:]}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def machine() -> dict[str, str]:
    import aiohttp

    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "os": platform.platform(),
        "pinning": (
            f"server on CPU {Pinning.cpus[-1]}, load generator on CPU {Pinning.cpus[0]}"
            if Pinning.enabled
            else "none"
        ),
    }
    try:
        from importlib.metadata import version

        info["aiohttp-session"] = version("aiohttp-session")
    except Exception:
        info["aiohttp-session"] = "not installed"
    wrk = shutil.which("wrk")
    if wrk:
        done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        info["wrk"] = (done.stdout + done.stderr).split(" [", 1)[0].strip()
    return info


# --------------------------------------------------------------------------- report


Medians = dict[str, dict[str, float]]


def medians(measurements: list[Measurement], metric: str = "rps") -> Medians:
    """Median of ``metric`` ("rps" or "cpu", server CPU us/request) per config and route."""
    by_key: dict[tuple[str, str], list[float]] = {}
    for m in measurements:
        value = m.rps if metric == "rps" else m.cpu_us_per_request
        if value is not None:
            by_key.setdefault((m.config, m.route), []).append(value)
    result: Medians = {}
    for (config, route), values in by_key.items():
        result.setdefault(config, {})[route] = statistics.median(values)
    return result


def per_round_ratios(
    measurements: list[Measurement], route: str, config: str, reference: str
) -> list[float]:
    rounds: dict[int, dict[str, float]] = {}
    for m in measurements:
        if m.route == route and m.config in (config, reference):
            rounds.setdefault(m.round, {})[m.config] = m.rps
    return [
        r[config] / r[reference]
        for _, r in sorted(rounds.items())
        if config in r and reference in r and r[reference] > 0
    ]


def ratio(med: Medians, route: str, a: str, b: str) -> float | None:
    """req/s of ``a`` over req/s of ``b`` on ``route``."""
    try:
        top, bottom = med[a][route], med[b][route]
    except KeyError:
        return None
    return top / bottom if bottom > 0 else None


def cpu_ratio(cpu: Medians, route: str, a: str, b: str) -> float | None:
    """Server CPU per request of ``b`` over that of ``a``: the req/s ratio ``a``/``b`` would
    have if each server had a core to itself and the load generator cost nothing."""
    return ratio(cpu, route, b, a)


def evaluate(med: Medians, cpu: Medians, measurements: list[Measurement]) -> list[dict[str, Any]]:
    rows = []
    for target in _targets():
        value = ratio(med, target.route, target.config, target.reference)
        beside = None
        if target.beside:
            beside = ratio(med, target.route, target.beside, target.reference)
        if value is None:
            result = "n/a"
        else:
            result = "PASS" if value >= target.threshold else "MISS"
            if target.note:
                result = target.note  # reported, not judged (see the README)
        rounds = per_round_ratios(measurements, target.route, target.config, target.reference)
        rows.append(
            {
                **asdict(target),
                "ratio": value,
                "range": [min(rounds), max(rounds)] if rounds else None,
                "cpu_ratio": cpu_ratio(cpu, target.route, target.config, target.reference),
                "beside_ratio": beside,
                "result": result,
            }
        )
    return rows


def _fmt_range(row: dict[str, Any]) -> str:
    low_high = row.get("range")
    if not low_high or low_high[0] == low_high[1]:
        return ""
    return f" [{low_high[0]:.2f}-{low_high[1]:.2f}]"


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def print_route_tables(
    measurements: list[Measurement], med: Medians, cpu: Medians, configs: list[str]
) -> None:
    for route in bc.ROUTES:
        print(
            f"\n/{route}: median req/s (per round) | server CPU us/request | ratio to its "
            "reference [per-round range] (CPU-time ratio)"
        )
        for config in configs:
            if route not in med.get(config, {}):
                continue
            figures = [m.rps for m in measurements if m.config == config and m.route == route]
            cpu_text = f"{cpu[config][route]:6.1f}" if route in cpu.get(config, {}) else "   n/a"
            reference = _reference_for(config, route)
            extra = ""
            rel = ratio(med, route, config, reference)
            if rel is not None and config != reference:
                rounds = per_round_ratios(measurements, route, config, reference)
                spread = f" [{min(rounds):.2f}-{max(rounds):.2f}]" if len(rounds) > 1 else ""
                extra = (
                    f" | {rel:5.2f} x {reference}{spread} "
                    f"({_fmt_ratio(cpu_ratio(cpu, route, config, reference))})"
                )
                if reference != "bare":
                    extra += f"; {_fmt_ratio(ratio(med, route, config, 'bare'))} x bare"
            bad = sum(
                m.non2xx + m.errors for m in measurements if m.config == config and m.route == route
            )
            warn = f"  !! {bad} non-2xx/socket errors" if bad else ""
            print(
                f"  {config:23s} {med[config][route]:7.0f} "
                f"({', '.join(f'{f:.0f}' for f in figures)}) | {cpu_text}{extra}{warn}"
            )


def markdown(
    info: dict[str, str],
    settings: dict[str, Any],
    med: Medians,
    cpu: Medians,
    configs: list[str],
    targets: list[dict[str, Any]],
    cookies: dict[str, Any],
    memory: dict[str, Any],
) -> str:
    tool = info.get("wrk", "wrk") if settings["load_tool"] == "wrk" else settings["load_tool"]
    lines = [
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"aiohttp {info['aiohttp']}, aiohttp-session {info['aiohttp-session']}. "
        f"Load: {tool}, 1 thread, {settings['connections']} connections, "
        f"{settings['duration']} s per measurement, median of {settings['rounds']} alternating "
        "rounds; each configuration is one server process"
        + (f" ({info['pinning']})." if info.get("pinning", "none") != "none" else "."),
        "",
        "req/s (ratio to `bare` on the same route) and server CPU time per request:",
        "",
        "| configuration | /untouched | /read | /write | CPU us/req (untouched / read / write) |",
        "|---|---:|---:|---:|---:|",
    ]
    for config in configs:
        if config not in med:
            continue
        cells = []
        for route in bc.ROUTES:
            value = med[config].get(route)
            bare = ratio(med, route, config, "bare")
            if value is None:
                cells.append("n/a")
            elif config == "bare" or bare is None:
                cells.append(f"{value:,.0f}")
            else:
                cells.append(f"{value:,.0f} ({bare:.2f})")
        cpu_cells = " / ".join(
            f"{cpu[config][route]:.0f}" if route in cpu.get(config, {}) else "n/a"
            for route in bc.ROUTES
        )
        lines.append(f"| {config} | " + " | ".join(cells) + f" | {cpu_cells} |")
    lines += [
        "",
        "| target | req/s ratio [per-round range] | CPU-time ratio | needs | result |",
        "|---|---:|---:|---:|---|",
    ]
    for row in targets:
        if row["ratio"] is None:  # a configuration left out of this run (--only)
            continue
        measured = _fmt_ratio(row["ratio"]) + _fmt_range(row)
        if row["beside"]:
            measured += f" (aiohttp-session: {_fmt_ratio(row['beside_ratio'])})"
        lines.append(
            f"| {row['label']} vs {row['reference']} | {measured} | "
            f"{_fmt_ratio(row['cpu_ratio'])} | >= {row['threshold']:.2f} | {row['result']} |"
        )
    ours = cookies.get("ours")
    theirs = cookies.get("aiohttp_session", "n/a")
    cookie_result = "PASS" if isinstance(ours, int) and ours <= COOKIE_TARGET else "MISS"
    lines.append(
        f"| cookie value, {cookies.get('json_bytes')}-byte JSON session | {ours} chars "
        f"(aiohttp-session Fernet: {theirs}) | | <= {COOKIE_TARGET} | {cookie_result} |"
    )
    if "delta_bytes" in memory:
        n = memory["sessions"]
        scaled = memory["delta_bytes"] * 1_000_000 / n
        label = "1,000,000 sessions" if n == 1_000_000 else f"{n:,} sessions scaled to 1,000,000"
        mem_result = "PASS" if scaled < MEMORY_TARGET else "MISS"
        lines.append(
            f"| MemoryStore RSS growth, {label} | {scaled / 2**20:.0f} MB "
            f"({memory['bytes_per_session']:.0f} B/session) | | < 500 MB | {mem_result} |"
        )
    elif memory:
        lines.append("| MemoryStore RSS growth, 1,000,000 sessions | error | | < 500 MB | n/a |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Side-by-side load benchmark of aiohttp-sessionkit, aiohttp-session, "
        "bare aiohttp and raw client floors."
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per route")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--sessions",
        type=int,
        default=256,
        help="distinct logged-in sessions the requests cycle through (default 256)",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated configurations: " + ", ".join(bc.CONFIG_BY_NAME),
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: 1 s x 1 round, 100,000 sessions for the memory figure",
    )  # fmt: skip
    parser.add_argument(
        "--loadgen", action="store_true", help="use benchmarks/loadgen.py even if wrk exists"
    )
    parser.add_argument(
        "--memory-sessions", type=int, default=None, help="sessions for the memory figure"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory figure")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the scheduler place the server and wrk (default: one CPU each)",
    )
    args = parser.parse_args(argv)
    if args.no_pin:
        Pinning.enabled = False
    if args.quick:
        args.duration, args.rounds = 1, 1
    if args.memory_sessions is None:
        args.memory_sessions = 100_000 if args.quick else 1_000_000
    if args.duration < 1 or args.rounds < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--duration, --rounds and --connections must be >= 1, --warmup >= 0")
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in bc.CONFIG_BY_NAME]
        if unknown:
            parser.error(f"unknown configuration(s) {', '.join(unknown)}")
        args.configs = [c.name for c in bc.CONFIGS if c.name in names]
    else:
        args.configs = [c.name for c in bc.CONFIGS]
    return args


def measure_round(
    configs: list[str],
    round_no: int,
    env: dict[str, str],
    load: Load,
    args: argparse.Namespace,
    log_dir: Path,
    failed: dict[str, str],
    login_cookies: dict[str, int],
) -> list[Measurement]:
    """One round: every configuration's server up at once, then route by route, config by
    config, so the measurements compared with each other are seconds apart, not minutes."""
    apps: dict[str, AppProcess] = {}
    results: list[Measurement] = []
    try:
        for config in configs:
            apps[config] = AppProcess(config, env, log_dir)
        for config, app in apps.items():
            try:
                app.wait_ready()
                login_many(app, 1)
            except Exception as exc:
                failed[config] = f"{type(exc).__name__}: {exc}"
                print(f"  {config:24s} FAILED: {failed[config]}", flush=True)
        for route in bc.ROUTES:
            line = []
            for config, app in apps.items():
                if config in failed:
                    continue
                try:
                    # Fresh logins per measurement: the load tool never updates its cookies,
                    # and a cookie-store cookie older than the touch interval would turn
                    # every read into a re-seal.
                    cookies = login_many(app, args.sessions)
                    login_cookies[config] = token_length(cookies[0])
                    header = bc.CONFIG_BY_NAME[config].request_header
                    scratch = log_dir / f"{config}-{route}"
                    scratch.mkdir(exist_ok=True)
                    if args.warmup:
                        load.run(app.url(route), cookies, args.warmup, scratch, header)
                    cpu_before = app.cpu_seconds()
                    r = load.run(app.url(route), cookies, args.duration, scratch, header)
                    cpu = app.cpu_seconds() - cpu_before
                except Exception as exc:
                    failed[config] = f"{type(exc).__name__}: {exc}"
                    print(f"  {config:24s} FAILED: {failed[config]}", flush=True)
                    continue
                m = Measurement(
                    round=round_no,
                    config=config,
                    route=route,
                    rps=float(r["rps"]),
                    requests=int(r["requests"]),
                    seconds=float(r["seconds"]),
                    non2xx=int(r["non2xx"]),
                    errors=int(r["errors"]),
                    tool=load.tool,
                    cpu_us_per_request=cpu * 1e6 / r["requests"] if r["requests"] else None,
                    latency_avg=r.get("latency_avg"),
                    socket_errors=r.get("socket_errors", {}),
                )
                results.append(m)
                bad = (
                    f" ({m.non2xx} non-2xx, {m.errors} socket errors!)"
                    if m.non2xx or m.errors
                    else ""
                )
                cpu_text = "" if m.cpu_us_per_request is None else f"/{m.cpu_us_per_request:.0f}us"
                line.append(f"{config} {m.rps:.0f}{cpu_text}{bad}")
            print(f"  /{route}: " + ", ".join(line), flush=True)
    finally:
        for app in apps.values():
            app.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    info = machine()
    load = Load(args.connections, args.loadgen)
    notes = [
        "aiohttp-session uses plain-string request keys: aiohttp 3.14 emits NotAppKeyWarning "
        "on every request; its server process ignores that warning (a warnings filter), so "
        "its figures include the cheap warn() call but no printing.",
        f"Requests cycle through {args.sessions} sessions, each logged in before the "
        "measurement, so concurrent requests belong to different sessions; every request "
        "carries a session cookie, /untouched included, as a browser would send it.",
    ]
    if load.tool != "wrk":
        notes.append("wrk not found: loads come from benchmarks/loadgen.py (Python, slower).")
    print(
        f"machine: {info['nproc']} CPU, {info['cpu']}; Python {info['python']}; aiohttp "
        f"{info['aiohttp']}; aiohttp-session {info['aiohttp-session']}; load: {load.tool}; "
        f"pinning: {info['pinning']}",
        flush=True,
    )
    configs: list[str] = list(args.configs)
    problems: dict[str, str] = {}
    needed = {bc.CONFIG_BY_NAME[c].backend for c in configs} - {None}
    if needed:
        print("starting backing servers:", ", ".join(sorted(b for b in needed if b)), flush=True)
    measurements: list[Measurement] = []
    login_cookies: dict[str, int] = {}
    failed: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory(prefix="sessionkit-bench-") as tmp,
        backing_servers({b for b in needed if b}, problems) as urls,
    ):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(bc.BENCH_DIR), str(bc.REPO_ROOT), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        env[bc.ENV_COOKIE_KEY] = _cookie_key()
        env[bc.ENV_JWT_SECRET] = secrets.token_urlsafe(48)
        env[bc.ENV_SQLITE_DIR] = tmp
        for backend, url in urls.items():
            env[_SERVER_ENV[backend]] = url
        for config in configs:
            needs = bc.CONFIG_BY_NAME[config].backend
            if needs is not None and needs not in urls:
                failed[config] = problems.get(needs, f"no {needs} server")
        for round_no in range(1, args.rounds + 1):
            order = [c for c in configs if c not in failed]
            if round_no % 2 == 0:
                order.reverse()  # alternate the order so position effects even out
            print(f"\nround {round_no}/{args.rounds}: {', '.join(order)}", flush=True)
            measurements.extend(
                measure_round(order, round_no, env, load, args, Path(tmp), failed, login_cookies)
            )
    print("\ncookie size ...", flush=True)
    cookies = cookie_sizes()
    cookies["from_login_responses"] = login_cookies
    memory: dict[str, Any] = {}
    if not args.no_memory:
        print(f"memory of {args.memory_sessions:,} MemoryStore sessions ...", flush=True)
        memory = memory_footprint(args.memory_sessions)

    med = medians(measurements)
    cpu = medians(measurements, "cpu")
    targets = evaluate(med, cpu, measurements)
    print_route_tables(measurements, med, cpu, configs)
    print("\ntargets:")
    for row in targets:
        if row["ratio"] is None:
            continue
        beside = f"  (aiohttp-session {_fmt_ratio(row['beside_ratio'])})" if row["beside"] else ""
        print(
            f"  {row['result']:7s}  {row['label']:24s} {_fmt_ratio(row['ratio']):>5s}"
            f"{_fmt_range(row):12s} x {row['reference']:22s} needs >= {row['threshold']:.2f}  "
            f"(CPU-time ratio {_fmt_ratio(row['cpu_ratio'])}){beside}"
        )
    print(
        f"\ncookie value for a {cookies['json_bytes']}-byte JSON session: ours "
        f"{cookies['ours']} chars (target <= {COOKIE_TARGET}); aiohttp-session Fernet "
        f"{cookies.get('aiohttp_session', 'n/a')} chars "
        f"({cookies.get('aiohttp_session_as_sent', 'n/a')} as sent, quoted)"
    )
    if "delta_bytes" in memory:
        print(
            f"MemoryStore, {memory['sessions']:,} sessions of {memory['payload_bytes']} payload "
            f"bytes: RSS {memory['rss_before_bytes'] / 2**20:.0f} -> "
            f"{memory['rss_after_bytes'] / 2**20:.0f} MB, +{memory['delta_bytes'] / 2**20:.0f} MB "
            f"({memory['bytes_per_session']:.0f} B/session; filled in "
            f"{memory['fill_seconds']:.1f} s)"
        )
    elif memory:
        print(f"memory step failed: {memory.get('error')}")
    for config, reason in failed.items():
        print(f"NOT MEASURED {config}: {reason.splitlines()[0] if reason else ''}")
    for note in notes:
        print(f"note: {note}")

    settings = {
        "duration": args.duration,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "connections": args.connections,
        "quick": args.quick,
        "configs": configs,
        "load_tool": load.tool,
    }
    table = markdown(info, settings, med, cpu, configs, targets, cookies, memory)
    print("\n--- Markdown for the README ---\n")
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / "latest.json"
    out.write_text(
        json.dumps(
            {
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": info,
                "settings": settings,
                "measurements": [asdict(m) for m in measurements],
                "medians": med,
                "cpu_us_per_request_medians": cpu,
                "targets": targets,
                "cookie": cookies,
                "memory": memory,
                "not_measured": failed,
                "notes": notes,
                "markdown": table,
                "elapsed_seconds": time.monotonic() - started,
            },
            indent=2,
        )
        + "\n"
    )
    print(
        f"\nraw results: {out.relative_to(bc.REPO_ROOT)}; took {time.monotonic() - started:.0f} s"
    )
    return 0


def _cookie_key() -> str:
    bc.use_working_tree()
    from aiohttp_sessionkit import generate_key

    return generate_key()


if __name__ == "__main__":
    sys.exit(main())
