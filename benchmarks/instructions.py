"""Server instructions per request, counted by Valgrind: ``python benchmarks/instructions.py``.

req/s on a shared virtual machine moves by 20% between identical configurations (issue
15's noise). The number of machine instructions the server process executes per request
does not: it is what the code costs, whatever the neighbours do. This script runs each
configuration's server (``benchmarks/app.py CONFIG PORT``, the same process the load
benchmark measures) under ``valgrind --tool=callgrind`` with collection off, logs in
``--sessions`` times, and for each route:

1. sends ``--warmup`` requests (caches, the JIT-less interpreter's inline caches, pools);
2. zeroes the counters and turns collection on (``callgrind_control``);
3. sends ``--requests`` requests over ``--connections`` keep-alive connections, each
   request with the session of the next login in turn;
4. turns collection off and reads the instruction count.

Everything the server does for those requests is counted: the event loop, aiohttp's HTTP
parsing and response writing, the handler and the session layer. The load generator runs
natively in this process; only the server is under Valgrind (about 50x slower), so it is
the bottleneck as in the load benchmark.

It prints instructions per request per route and configuration, and the ratios behind the
performance targets, as *cost* ratios: ``reference / ours``, so that 1.00 means "costs the
same as the reference" and 0.90 means "costs 11% more", comparable with a req/s ratio.
Needs valgrind (``apt-get install valgrind``). A configuration with a backing server
(Redis, PostgreSQL, ...) counts only the server process, not the database: use it for the
local stores and the limits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import benchcommon as bc
import run

ROUTES = ("untouched", "read", "write")
DEFAULT_CONFIGS = (
    "untouched-limit",
    "cookie-limit",
    "cookie-limit-adj",
    "memory-limit",
    "memory-limit-adj",
    "jwt-limit-adj",
    "cookie",
    "memory",
    "cookie-header",
    "memory-header",
    "jwt",
)
#: (label, route, ours, reference, target): the targets as issue 22 restated them (so that
#: clear code passes), as cost ratios; None: printed for reference, not judged.
TARGETS = (
    ("untouched", "untouched", "memory", "untouched-limit", 0.96),
    ("untouched", "untouched", "cookie", "untouched-limit", 0.96),
    ("untouched", "untouched", "jwt", "untouched-limit", 0.96),
    ("cookie read", "read", "cookie", "cookie-limit-adj", 0.85),
    ("cookie write", "write", "cookie", "cookie-limit-adj", 0.85),
    ("memory read", "read", "memory", "memory-limit-adj", 0.85),
    ("memory write", "write", "memory", "memory-limit-adj", 0.85),
    ("cookie read (plain limit)", "read", "cookie", "cookie-limit", None),
    ("cookie write (plain limit)", "write", "cookie", "cookie-limit", None),
    ("memory read (plain limit)", "read", "memory", "memory-limit", None),
    ("memory write (plain limit)", "write", "memory", "memory-limit", None),
    ("header vs cookie transport", "read", "cookie-header", "cookie", 0.98),
    ("header vs cookie transport", "write", "cookie-header", "cookie", 0.98),
    ("header vs cookie transport", "read", "memory-header", "memory", 0.98),
    ("header vs cookie transport", "write", "memory-header", "memory", 0.98),
    ("jwt vs jwt limit", "read", "jwt", "jwt-limit-adj", 0.90),
    ("jwt vs jwt limit", "write", "jwt", "jwt-limit-adj", 0.90),
    ("jwt vs cookie store", "read", "jwt", "cookie", None),
    ("jwt vs cookie store", "write", "jwt", "cookie", None),
    ("jwt limit vs cookie limit", "read", "jwt-limit-adj", "cookie-limit-adj", None),
    ("jwt limit vs cookie limit", "write", "jwt-limit-adj", "cookie-limit-adj", None),
)
_TOTALS = re.compile(r"^totals:\s*(\d+)", re.MULTILINE)


class ValgrindApp(run.AppProcess):
    """``benchmarks/app.py CONFIG PORT`` under callgrind, instrumenting nothing until told to."""

    def __init__(self, config: str, env: dict[str, str], log_dir: Path) -> None:
        self.out = log_dir / f"callgrind-{config}.out"
        self._prefix = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={self.out}",
        ]
        super().__init__(config, env, log_dir)

    def command(self) -> list[str]:
        return [*self._prefix, *super().command()]

    def control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.proc.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def dumped_instructions(self, before: set[Path]) -> int:
        """The instruction count of the dump ``callgrind_control -d`` just wrote."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            fresh = set(self.out.parent.glob(self.out.name + ".*")) - before
            for path in fresh:
                match = _TOTALS.search(path.read_text(errors="replace"))
                if match:
                    return int(match.group(1))
            time.sleep(0.2)
        raise RuntimeError(f"{self.config}: callgrind wrote no dump")


async def drive(url: str, header: str, credentials: list[str], count: int, conns: int) -> None:
    """``count`` GETs of ``url`` over ``conns`` connections, cycling through ``credentials``."""
    queue = iter(range(count))
    connector = aiohttp.TCPConnector(limit=conns, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as client:

        async def worker() -> None:
            for i in queue:
                credential = credentials[i % len(credentials)]
                async with client.get(url, headers={header: credential}) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")

        await asyncio.gather(*(worker() for _ in range(conns)))


def measure(
    config: str, args: argparse.Namespace, env: dict[str, str], tmp: Path
) -> dict[str, float]:
    app = ValgrindApp(config, env, tmp)
    header = bc.CONFIG_BY_NAME[config].request_header
    per_request: dict[str, float] = {}
    try:
        app.wait_ready(timeout=600)
        credentials = run.login_many(app, args.sessions)
        for route in ROUTES:
            url = app.url(route)
            asyncio.run(drive(url, header, credentials, args.warmup, args.connections))
            app.control("-z")
            app.control("-i", "on")
            asyncio.run(drive(url, header, credentials, args.requests, args.connections))
            app.control("-i", "off")
            before = set(tmp.glob(app.out.name + ".*"))
            app.control("-d")
            per_request[route] = app.dumped_instructions(before) / args.requests
            if args.keep:  # for callgrind_annotate
                for dump in set(tmp.glob(app.out.name + ".*")) - before:
                    shutil.copy(dump, run.RESULTS_DIR / f"callgrind-{config}-{route}.out")
            print(f"  {config:18} /{route:9} {per_request[route]:>10,.0f} instructions/request")
    finally:
        app.stop()
    return per_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated configurations")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="servers measured at once")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="save each route's dump to benchmarks/results/ for callgrind_annotate",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    configs = args.only.split(",") if args.only else list(DEFAULT_CONFIGS)
    unknown = [c for c in configs if c not in bc.CONFIG_BY_NAME]
    if unknown:
        raise SystemExit(f"unknown configurations: {', '.join(unknown)}")

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(bc.BENCH_DIR), str(bc.REPO_ROOT)])
    env.setdefault(bc.ENV_COOKIE_KEY, run._cookie_key())
    env.setdefault(bc.ENV_JWT_SECRET, secrets.token_urlsafe(48))
    print(
        f"{args.requests} requests per route after {args.warmup} warm-up requests, "
        f"{args.connections} connections, {args.sessions} sessions; Python "
        f"{sys.version.split()[0]}, aiohttp {aiohttp.__version__}"
    )
    results: dict[str, dict[str, float]] = {}
    run.RESULTS_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {c: pool.submit(measure, c, args, env, Path(tmp)) for c in configs}
            for config, future in futures.items():
                results[config] = future.result()

    print("\ninstructions per request (thousands):")
    print(f"  {'configuration':18} " + " ".join(f"{'/' + r:>11}" for r in ROUTES))
    for config in configs:
        row = " ".join(f"{results[config][r] / 1000:>11.1f}" for r in ROUTES)
        print(f"  {config:18} {row}")
    print("\ncost ratios (reference / ours; 1.00 = costs the same, below 1 = costs more):")
    for label, route, ours, reference, target in TARGETS:
        if ours not in results or reference not in results:
            continue
        ratio = results[reference][route] / results[ours][route]
        verdict = "info" if target is None else ("PASS" if ratio >= target else "MISS")
        need = "" if target is None else f"  needs >= {target:.2f}"
        print(f"  {verdict:5} {label:28} /{route:9} {ours:14} {ratio:6.3f} x {reference}{need}")


if __name__ == "__main__":
    main()
