"""Fallback load generator when ``wrk`` is not installed (run.py picks it automatically).

``python benchmarks/loadgen.py URL --connections 32 --duration 5 [--cookies-file FILE]
[--header NAME]`` keeps CONNECTIONS keep-alive requests in flight for DURATION seconds, each
carrying the next value of FILE (one a line, round robin) in the request header NAME
(``Cookie`` with ``NAME=VALUE`` lines by default; ``Authorization`` with ``Bearer TOKEN``
lines for the header transport), and prints one JSON object: requests, seconds, rps,
non2xx (status >= 400, as wrk counts them), errors.

It is far slower than wrk (it is Python too), so on a small machine it competes with the
server for CPU: treat its figures as relative, and prefer wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Iterator

import aiohttp


async def _worker(
    session: aiohttp.ClientSession,
    url: str,
    headers: Iterator[dict[str, str]],
    deadline: float,
    counts: dict[str, int],
) -> None:
    while time.monotonic() < deadline:
        try:
            async with session.get(url, headers=next(headers)) as response:
                await response.read()
                counts["requests"] += 1
                if response.status >= 400:
                    counts["non2xx"] += 1
        except (aiohttp.ClientError, OSError, TimeoutError):
            counts["errors"] += 1


async def run(
    url: str, connections: int, duration: float, cookies: list[str], header: str = "Cookie"
) -> dict[str, float]:
    # Request i carries cookies[i % len(cookies)], as the wrk script does.
    headers = itertools.cycle([{header: c} for c in cookies] or [{}])
    counts = {"requests": 0, "non2xx": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    # The client ignores Set-Cookie answers: every request carries exactly the given cookie.
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        start = time.monotonic()
        deadline = start + duration
        await asyncio.gather(
            *(_worker(session, url, headers, deadline, counts) for _ in range(connections))
        )
        elapsed = time.monotonic() - start
    return {
        "requests": counts["requests"],
        "seconds": elapsed,
        "rps": counts["requests"] / elapsed if elapsed > 0 else 0.0,
        "non2xx": counts["non2xx"],
        "errors": counts["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument(
        "--cookies-file", default=None, help='Cookie header values ("NAME=VALUE"), one per line'
    )
    parser.add_argument("--header", default="Cookie", help="the request header to send them in")
    args = parser.parse_args()
    cookies = []
    if args.cookies_file:
        with open(args.cookies_file, encoding="ascii") as lines:
            cookies = [line.strip() for line in lines if line.strip()]
    result = asyncio.run(run(args.url, args.connections, args.duration, cookies, args.header))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
