#!/usr/bin/env bash
# The packaging check (run by scripts/test.sh):
#   1. python -m build: an sdist, then a wheel built from that sdist (so a file missing from
#      the sdist breaks the wheel here, not for a downstream packager); twine check --strict.
#   2. The sdist holds every file git tracks (tests, test-server helpers, tools/ferretdb/go.mod
#      and go.sum, docs, examples, scripts, benchmarks) except CI plumbing, and nothing built.
#   3. The wheel in a fresh venv with no extras: `import aiohttp_sessionkit` loads no optional
#      driver, the quick start answers real requests on the MemoryStore, and every module
#      that does not import says which extra to install.
#   4. Each driver extra of setup.cfg (every extra but all, test, bench, docs: new extras are
#      covered without editing this file), alone on a copy of that venv: it installs, and it makes
#      importable at least one module that the bare install could not import. Together the
#      extras make every module and every public name importable.
# Wheels of dependencies are kept in a wheelhouse, so a second run installs offline.
#
# Environment:
#   PYTHON               the interpreter to build and make venvs with (default: python3);
#                        it needs build, twine (the test extra)
#   SESSIONKIT_CACHE     cache directory (default: ${XDG_CACHE_HOME:-$HOME/.cache}/aiohttp-sessionkit)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
cache="${SESSIONKIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aiohttp-sessionkit}"
wheelhouse="$cache/wheelhouse"
mkdir -p "$wheelhouse"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log() { printf 'check-package: %s\n' "$*"; }
die() { printf 'check-package: FAIL: %s\n' "$*" >&2; exit 1; }
pip() { "$python" -m pip --disable-pip-version-check --quiet "$@"; }

# ------------------------------------------------------------------ build and metadata

# build's isolated environments get setuptools and wheel from the wheelhouse (pip reads
# PIP_* from the environment); the first run fetches them.
build_deps="$("$python" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')"
if ! PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheelhouse" \
    "$python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1; then
    # shellcheck disable=SC2086 # one word per requirement
    pip download --dest "$wheelhouse" --find-links "$wheelhouse" $build_deps
    "$python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 \
        || { cat "$work/build.log" >&2; die "python -m build failed"; }
fi
sdist="$(ls "$work"/dist/*.tar.gz)"
wheel="$(ls "$work"/dist/*.whl)"
"$python" -m twine check --strict "$sdist" "$wheel" >"$work/twine.log" 2>&1 \
    || { cat "$work/twine.log" >&2; die "twine check --strict failed"; }
log "built $(basename "$sdist") and $(basename "$wheel"); twine check --strict passed"

# ------------------------------------------------------------------ sdist contents

tar -tzf "$sdist" | sed -n 's|^[^/]*/||p' | grep -v '/$' | sort >"$work/sdist.txt"
built="$(grep -E '(^|/)(__pycache__|build|dist|_build|\.venv|\.mypy_cache|\.pytest_cache|\.ruff_cache|\.hypothesis)/|\.(pyc|pyo|so|whl)$' "$work/sdist.txt" || true)"
[[ -z "$built" ]] || die "the sdist holds built files: $built"
for needed in tests/conftest.py tests/harness/servers.py tools/ferretdb/go.mod tools/ferretdb/go.sum \
    docs/conf.py docs/index.md examples/demo.py scripts/test.sh MANIFEST.in; do
    grep -qxF "$needed" "$work/sdist.txt" || die "the sdist lacks $needed"
done
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Every tracked file but CI plumbing; the wheel and sdist are built from the working tree.
    git ls-files | grep -vE '^(\.ci/|\.git)' | sort >"$work/tracked.txt"
    missing="$(comm -23 "$work/tracked.txt" "$work/sdist.txt")"
    [[ -z "$missing" ]] || die "tracked files missing from the sdist (see MANIFEST.in): $missing"
fi
log "sdist: $(wc -l <"$work/sdist.txt") files, every tracked one, nothing built"

# ------------------------------------------------------------------ license

# The license as an SPDX expression (PEP 639), its text in both distributions, and no
# deprecated license classifier (setuptools warns about it on every build).
grep -qxF LICENSE "$work/sdist.txt" || die "the sdist lacks LICENSE"
"$python" - "$wheel" <<'PY' || die "the wheel's license metadata is wrong (see above)"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    names = wheel.namelist()
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    headers = wheel.read(meta).decode().split("\n\n", 1)[0].splitlines()
    problems = []
    if "License-Expression: Apache-2.0" not in headers:
        problems.append("no License-Expression: Apache-2.0")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("no LICENSE in the wheel's .dist-info/licenses/")
    if any(h.startswith("Classifier: License ::") for h in headers):
        problems.append("a deprecated License :: classifier")
    if problems:
        sys.exit("; ".join(problems))
PY
log "license: Apache-2.0 (SPDX), LICENSE in the sdist and the wheel"

# ------------------------------------------------------------------ fresh environments

# install VENV REQUIREMENT: the wheel (and extras) into VENV, from the wheelhouse, falling
# back to PyPI (through pip's cache) for wheels it does not have yet. The venvs have no pip
# of their own: this pip installs into them (--python), which saves a pip per venv.
install() {
    local venv="$1" requirement="$2"
    [[ -d "$venv" ]] || "$python" -m venv --without-pip "$venv"
    if ! pip --python "$venv/bin/python" install --no-index --find-links "$wheelhouse" \
        "$requirement" 2>/dev/null; then
        pip download --dest "$wheelhouse" --find-links "$wheelhouse" "$requirement"
        rm -f "$wheelhouse"/aiohttp_sessionkit-*  # only dependencies belong there
        pip --python "$venv/bin/python" install --no-index --find-links "$wheelhouse" \
            "$requirement"
    fi
}

probe() { (cd "$work" && "$1/bin/python" "$root/scripts/package_probe.py" "$2"); }

install "$work/base" "$wheel"
probe "$work/base" quickstart | sed 's/^/check-package: /'
probe "$work/base" imports >"$work/base.json"

extras="$("$python" - "$root/setup.cfg" <<'PY'
import configparser, sys
config = configparser.ConfigParser()
config.read(sys.argv[1])
tooling = {"all", "test", "bench", "docs"}
print(" ".join(e for e in config["options.extras_require"] if e not in tooling))
PY
)"
# One venv per extra, each a copy of the no-extras venv made before anything else went in
# (so the package and its core dependencies are not unpacked five times), side by side.
pids=()
for extra in $extras; do
    cp -a "$work/base" "$work/venv-$extra"
    (install "$work/venv-$extra" "$wheel[$extra]" \
        && probe "$work/venv-$extra" imports >"$work/extra-$extra.json") \
        >"$work/extra-$extra.log" 2>&1 &
    pids+=("$!")
done
set -- $extras
for pid in "${pids[@]}"; do
    wait "$pid" || { cat "$work/extra-$1.log" >&2; die "the $1 extra did not install or import"; }
    shift
done

"$python" - "$work" "$extras" <<'PY'
import json, sys
from pathlib import Path

work, extras = Path(sys.argv[1]), sys.argv[2].split()
base = json.loads((work / "base.json").read_text())


def fail(message: str) -> None:
    sys.exit(f"check-package: FAIL: {message}")


if "site-packages" not in base["file"]:
    fail(f"the probe imported {base['file']}, not the installed wheel")
if base["drivers_loaded_by_import"]:
    fail(f"import aiohttp_sessionkit loaded {base['drivers_loaded_by_import']}")
unhelpful = {m: e for m, e in base["modules"].items() if e and "aiohttp-sessionkit[" not in e}
if unhelpful:
    fail(f"without its extra, these modules fail without naming the extra: {unhelpful}")
bare = {m for m, e in base["modules"].items() if e is None}
covered_modules, covered_names = set(bare), {n for n, e in base["names"].items() if e is None}
for extra in extras:
    report = json.loads((work / f"extra-{extra}.json").read_text())
    if report["drivers_loaded_by_import"]:
        fail(f"[{extra}]: import aiohttp_sessionkit loaded {report['drivers_loaded_by_import']}")
    ok = {m for m, e in report["modules"].items() if e is None}
    gained = sorted(ok - bare)
    if not gained:
        fail(f"the {extra} extra makes no module importable that the bare install lacks")
    covered_modules |= ok
    covered_names |= {n for n, e in report["names"].items() if e is None}
    print(f"check-package: [{extra}] alone installs and imports {', '.join(gained)}")
left = sorted(set(base["modules"]) - covered_modules) + sorted(set(base["names"]) - covered_names)
if left:
    fail(f"no extra makes these importable: {left}")
print(
    f"check-package: no extras: {len(bare)} of {len(base['modules'])} modules import, and "
    "import aiohttp_sessionkit loads no optional driver"
)
PY
