"""Several app processes on one Redis: ``python benchmarks/multiprocess.py``.

Runs the benchmark app's ``redis`` configuration (RedisStore) as 1 and as 2 OS processes
sharing one port (``reuse_port``), the way a deployment scales a session-using aiohttp app
on one host, and loads each with wrk through the same 256 logged-in sessions. Prints
req/s per route and the ratio of each multi-process figure to the single-process one.

On a 2-core machine wrk and Redis share the cores with the app processes, so 2 processes
cannot reach 2x; the ratio says how much of the second core the app gets to use.

Options: ``--processes 1,2`` (counts to measure), ``--duration 5``, ``--rounds 3``,
``--connections 32``, ``--sessions 256``, ``--config redis`` (any app.py configuration whose
sessions live in a shared server: ``redis``, ``postgres``).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import benchcommon as bc
import run

ROUTES = ("untouched", "read", "write")
_BACKEND = {"redis": "redis", "postgres": "postgres"}


class Workers:
    """N processes of ``multiprocess.py --worker CONFIG PORT`` listening on one port."""

    def __init__(self, config: str, count: int, env: dict[str, str], log_dir: Path) -> None:
        self.config = config
        self.port = run.free_port()
        self.logs = [open(log_dir / f"{config}-{count}-{i}.log", "ab") for i in range(count)]
        self.procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", config, str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=bc.REPO_ROOT,
            )
            for log in self.logs
        ]

    def url(self, route: str) -> str:
        return f"http://{run.HOST}:{self.port}/{route}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        # Every worker must be listening before the load starts, or the first one serves
        # everything; each answers /untouched, so poll until the kernel has spread enough
        # connections over them, and then give stragglers a moment.
        deadline = time.monotonic() + timeout
        while True:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(self.url("untouched"), timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the workers are not answering")
            time.sleep(0.05)
        time.sleep(1.0)

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.procs:
            with open(f"/proc/{proc.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


def worker(config: str, port: int) -> None:
    bc.use_working_tree()
    import app as bench_app
    from aiohttp import web

    web.run_app(
        bench_app.build_app(config),
        host=run.HOST,
        port=port,
        reuse_port=True,
        access_log=None,
        print=None,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="redis", choices=sorted(_BACKEND))
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sessions", type=int, default=256)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(n) for n in args.processes.split(",")]
    load = run.Load(args.connections, force_python=False)
    problems: dict[str, str] = {}
    rps: dict[tuple[int, str], list[float]] = {}
    cpu: dict[tuple[int, str], list[float]] = {}
    print(f"{os.cpu_count()} CPUs; {load.tool}; config {args.config}; processes {counts}")
    with (
        run.backing_servers({_BACKEND[args.config]}, problems) as urls,
        tempfile.TemporaryDirectory() as scratch_dir,
    ):
        if problems:
            print(f"cannot run: {problems}", file=sys.stderr)
            return 1
        env = dict(os.environ)
        for backend, url in urls.items():
            env[run._SERVER_ENV[backend]] = url
        scratch = Path(scratch_dir)
        for round_no in range(1, args.rounds + 1):
            order = counts if round_no % 2 else list(reversed(counts))
            for count in order:
                workers = Workers(args.config, count, env, scratch)
                try:
                    workers.wait_ready()
                    cookies = run.login_many(workers, args.sessions)  # type: ignore[arg-type]
                    for route in ROUTES:
                        load.run(workers.url(route), cookies, args.warmup, scratch)
                        before = workers.cpu_seconds()
                        result = load.run(workers.url(route), cookies, args.duration, scratch)
                        used = workers.cpu_seconds() - before
                        if result["non2xx"] or result["errors"]:
                            print(
                                f"  ! {count} proc /{route}: {result['non2xx']} non-2xx, "
                                f"{result['errors']} socket errors"
                            )
                        rps.setdefault((count, route), []).append(result["rps"])
                        cpu.setdefault((count, route), []).append(
                            used / max(1, result["requests"]) * 1e6
                        )
                        print(
                            f"  round {round_no}: {count} process(es) /{route}: "
                            f"{result['rps']:,.0f} req/s",
                            flush=True,
                        )
                finally:
                    workers.stop()
    base = counts[0]
    print(f"\n| processes | {' | '.join('/' + r for r in ROUTES)} | ratio to {base} process |")
    print(f"|---:|{'---:|' * len(ROUTES)}---|")
    for count in counts:
        medians = [statistics.median(rps[(count, r)]) for r in ROUTES]
        ratios = [
            statistics.median(rps[(count, r)]) / statistics.median(rps[(base, r)]) for r in ROUTES
        ]
        cells = " | ".join(f"{m:,.0f}" for m in medians)
        print(f"| {count} | {cells} | {' / '.join(f'{x:.2f}' for x in ratios)} |")
    print("\nserver CPU µs per request (all workers):")
    for count in counts:
        cells = " / ".join(f"{statistics.median(cpu[(count, r)]):.0f}" for r in ROUTES)
        print(f"  {count} process(es): {cells}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(main())
