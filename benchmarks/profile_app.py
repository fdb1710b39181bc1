"""Profile one configuration under load: ``python benchmarks/profile_app.py CONFIG ROUTE``.

Runs ``benchmarks/app.py CONFIG PORT`` under pyinstrument (``pip install pyinstrument``),
logs in, loads ROUTE with wrk (or loadgen.py) for ``--duration`` seconds, stops the server
with SIGINT and prints pyinstrument's text report (also saved under benchmarks/results/).
Only for configurations without a backing server (bare, memory, cookie,
aiohttp-session-cookie) unless the matching SESSIONKIT_BENCH_* variable is set.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import benchcommon as bc
import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", choices=list(bc.CONFIG_BY_NAME))
    parser.add_argument("route", choices=list(bc.ROUTES))
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sessions", type=int, default=256, help="distinct sessions to cycle")
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling interval, s")
    parser.add_argument("--show-all", action="store_true", help="include library frames")
    args = parser.parse_args()

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(bc.BENCH_DIR), str(bc.REPO_ROOT)])
    env.setdefault(bc.ENV_COOKIE_KEY, run._cookie_key())
    run.RESULTS_DIR.mkdir(exist_ok=True)
    out = run.RESULTS_DIR / f"profile-{args.config}-{args.route}.txt"
    port = run.free_port()
    command = [
        sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(out),
        "-i", str(args.interval),
    ]  # fmt: skip
    if args.show_all:
        command.append("--show-all")
    command += [str(run.APP), args.config, str(port)]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "app.log"
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        app = _Attached(proc, port, log)
        try:
            app.wait_ready()
            cookies = run.login_many(app, args.sessions)
            load = run.Load(args.connections, force_python=False)
            result = load.run(app.url(args.route), cookies, args.duration, Path(tmp))
            print(f"{args.config} /{args.route}: {result['rps']:.0f} req/s under the profiler")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    print(out.read_text())
    print(f"(saved to {out.relative_to(bc.REPO_ROOT)})")


class _Attached(run.AppProcess):
    """An AppProcess around a process started by someone else (here: pyinstrument)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path


if __name__ == "__main__":
    main()
