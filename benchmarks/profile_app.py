"""Profile one configuration under load: ``python benchmarks/profile_app.py CONFIG ROUTE``.

Starts ``benchmarks/app.py CONFIG PORT``, logs in ``--sessions`` times, loads ROUTE with wrk
(or loadgen.py) and profiles the loaded server process:

* ``--tool py-spy`` (default; ``pip install py-spy``): attaches to the running server with
  ``py-spy record --nonblocking`` for ``--duration`` seconds while the load runs, and prints
  the functions with the largest share of samples, inclusive and self. The server runs at
  nearly full speed, so the proportions are those of a loaded server.
* ``--tool pyinstrument`` (``pip install pyinstrument``): runs the server under pyinstrument
  and prints its text report. The profiler slows the server down about 3x.

Reports are saved under benchmarks/results/. Only for configurations without a backing
server (bare, the limits, memory, cookie, ...) unless the matching SESSIONKIT_BENCH_*
variable is set.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import secrets
import shutil
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
    parser.add_argument("--tool", choices=["py-spy", "pyinstrument"], default="py-spy")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sessions", type=int, default=256, help="distinct sessions to cycle")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--interval", type=float, default=0.0005, help="pyinstrument interval")
    parser.add_argument("--top", type=int, default=40, help="py-spy: functions to list")
    parser.add_argument("--show-all", action="store_true", help="pyinstrument: library frames")
    args = parser.parse_args()

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(bc.BENCH_DIR), str(bc.REPO_ROOT)])
    env.setdefault(bc.ENV_COOKIE_KEY, run._cookie_key())
    env.setdefault(bc.ENV_JWT_SECRET, secrets.token_urlsafe(48))
    run.RESULTS_DIR.mkdir(exist_ok=True)
    if args.tool == "py-spy":
        profile_with_py_spy(args, env)
    else:
        profile_with_pyinstrument(args, env)


def profile_with_py_spy(args: argparse.Namespace, env: dict[str, str]) -> None:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    out = run.RESULTS_DIR / f"py-spy-{args.config}-{args.route}.txt"
    header = bc.CONFIG_BY_NAME[args.config].request_header
    with tempfile.TemporaryDirectory() as tmp:
        app = run.AppProcess(args.config, env, Path(tmp))
        try:
            app.wait_ready()
            credentials = run.login_many(app, args.sessions)
            load = run.Load(args.connections, force_python=False)
            load.run(app.url(args.route), credentials, 1, Path(tmp), header)  # warm up
            spy = subprocess.Popen(
                [
                    py_spy, "record", "--pid", str(app.proc.pid), "--nonblocking",
                    "--duration", str(args.duration), "--rate", str(args.rate),
                    "--format", "raw", "--output", str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            cpu_before = app.cpu_seconds()
            result = load.run(app.url(args.route), credentials, args.duration, Path(tmp), header)
            cpu = app.cpu_seconds() - cpu_before
            spy.wait(timeout=60)
        finally:
            app.stop()
    print(
        f"{args.config} /{args.route}: {result['rps']:.0f} req/s, "
        f"{cpu * 1e6 / max(1, result['requests']):.0f} us server CPU per request while sampled"
    )
    print(summarize(out.read_text(), args.top))
    print(f"(raw stacks saved to {out.relative_to(bc.REPO_ROOT)})")


def summarize(raw: str, top: int) -> str:
    """The functions with the largest share of samples, inclusive and self, from py-spy's
    raw (collapsed-stack) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        stack, count_text = line.rsplit(" ", 1)
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self (native code counts towards the Python function calling it):"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def profile_with_pyinstrument(args: argparse.Namespace, env: dict[str, str]) -> None:
    out = run.RESULTS_DIR / f"profile-{args.config}-{args.route}.txt"
    port = run.free_port()
    command = [
        sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(out),
        "-i", str(args.interval),
    ]  # fmt: skip
    if args.show_all:
        command.append("--show-all")
    command += [str(run.APP), args.config, str(port)]
    header = bc.CONFIG_BY_NAME[args.config].request_header
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "app.log"
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        app = _Attached(proc, port, log, args.config)
        try:
            app.wait_ready()
            cookies = run.login_many(app, args.sessions)
            load = run.Load(args.connections, force_python=False)
            result = load.run(app.url(args.route), cookies, args.duration, Path(tmp), header)
            print(f"{args.config} /{args.route}: {result['rps']:.0f} req/s under the profiler")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    print(out.read_text())
    print(f"(saved to {out.relative_to(bc.REPO_ROOT)})")


class _Attached(run.AppProcess):
    """An AppProcess around a process started by someone else (here: pyinstrument)."""

    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, log_path: Path, config: str
    ) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.config = config


if __name__ == "__main__":
    main()
