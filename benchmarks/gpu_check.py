"""`python -m benchmarks.gpu_check`: the local trainer on CUDA with model=tiny-random, a few steps.

Each step is the trainer's own loop body (`Trainer.rollout`, `Trainer.advantages`,
`Learner.update`) on the GPU; the first step warms up (CUDA context, kernel selection)
and is not counted. Prints one JSON line:

    {"benchmark": "gpu_check", "cuda": true, "device": "NVIDIA H100 80GB HBM3", "step_s": ...,
     "rollout_tokens_per_s": ..., "train_tokens_per_s": ..., ...}

`step_s` is the median wall time of a step; `rollout_tokens_per_s` the tokens generated per
second of rollout; `train_tokens_per_s` the prompt and response tokens of the trained
samples per second of update. On a machine without CUDA it prints
``{"benchmark": "gpu_check", "cuda": false, ...}`` and exits 0, unless CUDA is required:
then it adds ``"required": true, "error": ...`` to that line, says why on stderr and exits 1.
CUDA is required with `--require-cuda`, with the environment variable SELFPLAY_REQUIRE_CUDA=1,
or in an environment that `bash scripts/setup.sh --cuda` installed (it writes
`CUDA_MARKER`); SELFPLAY_REQUIRE_CUDA=0 turns the last two off.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Written by `bash scripts/setup.sh --cuda` into the environment it installed (removed by the
# CPU install): this environment is meant to have CUDA, so a torch without it is an error.
CUDA_MARKER = Path(sys.prefix) / "share" / "selfplay-suite" / "cuda-install.json"


def cuda_required_by(flag: bool) -> str | None:
    """Why CUDA is required (for the message), or None when it is not."""
    if flag:
        return "--require-cuda"
    env = os.environ.get("SELFPLAY_REQUIRE_CUDA", "").strip()
    if env == "1":
        return "SELFPLAY_REQUIRE_CUDA=1"
    if env == "0":
        return None
    if CUDA_MARKER.is_file():
        return f"this environment was installed by `bash scripts/setup.sh --cuda` ({CUDA_MARKER})"
    return None


def no_cuda_reason(torch) -> str:
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU build, without CUDA; "
                "install the CUDA stack with `bash scripts/setup.sh --cuda`")
    return (f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but sees no CUDA device: "
            "check nvidia-smi (the NVIDIA driver) and CUDA_VISIBLE_DEVICES")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up step)")
    parser.add_argument("--games", type=int, default=64, help="games per step")
    parser.add_argument("--env", default="tic_tac_toe")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--require-cuda", action="store_true",
                        help="exit 1 when torch has no CUDA (also SELFPLAY_REQUIRE_CUDA=1, or after scripts/setup.sh --cuda)")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        required_by = cuda_required_by(args.require_cuda)
        if required_by is None:
            print(json.dumps({"benchmark": "gpu_check", "cuda": False, "skipped": "no CUDA device on this machine", "torch": torch.__version__}))
            return 0
        reason = no_cuda_reason(torch)
        print(json.dumps({"benchmark": "gpu_check", "cuda": False, "required": True, "error": reason, "torch": torch.__version__}))
        print(f"benchmarks.gpu_check: CUDA is required ({required_by}) but {reason}", file=sys.stderr)
        return 1

    from trainers.run.config import parse_overrides
    from trainers.selfplay import Trainer

    with tempfile.TemporaryDirectory() as out:
        config = parse_overrides([
            "model=tiny-random", f"env={args.env}", "mode=direct", "invalid_action_policy=textarena",
            f"games_per_step={args.games}", f"max_new_tokens={args.max_new_tokens}", "generation_batch_size=64",
            "advantage=rae", "format_phase=off", "tensorboard=false", "progress=false", f"out={out}",
        ])
        trainer = Trainer(config)
        trainer.learner.model.to("cuda")  # rollout and learner share this model
        steps = []
        for step in range(args.steps + 1):
            torch.cuda.synchronize()
            start = time.perf_counter()
            samples, _ = trainer.rollout(step)
            torch.cuda.synchronize()
            rolled = time.perf_counter()
            kept, _ = trainer.advantages(samples)
            if kept:
                trainer.learner.update(kept)
            torch.cuda.synchronize()
            done = time.perf_counter()
            steps.append({
                "step_s": done - start,
                "rollout_s": rolled - start,
                "train_s": done - rolled,
                "generated": sum(len(s.response_ids) for s in samples),
                "trained": sum(len(s.prompt_ids) + len(s.response_ids) for s in kept),
                "samples": len(samples),
            })
    measured = steps[1:]
    print(json.dumps({
        "benchmark": "gpu_check",
        "cuda": True,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "model": "tiny-random",
        "env": args.env,
        "games_per_step": args.games,
        "max_new_tokens": args.max_new_tokens,
        "steps": len(measured),
        "step_s": round(statistics.median(s["step_s"] for s in measured), 4),
        "warmup_step_s": round(steps[0]["step_s"], 4),
        "rollout_tokens_per_s": round(sum(s["generated"] for s in measured) / sum(s["rollout_s"] for s in measured), 1),
        "train_tokens_per_s": round(sum(s["trained"] for s in measured) / max(sum(s["train_s"] for s in measured), 1e-9), 1),
        "samples_per_step": statistics.mean(s["samples"] for s in measured),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
