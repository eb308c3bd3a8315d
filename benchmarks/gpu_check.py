"""`python -m benchmarks.gpu_check`: the local trainer on CUDA with model=tiny-random, a few steps.

Each step is the trainer's own loop body (`Trainer.rollout`, `Trainer.advantages`,
`Learner.update`) on the GPU; the first step warms up (CUDA context, kernel selection)
and is not counted. Prints one JSON line:

    {"benchmark": "gpu_check", "cuda": true, "device": "NVIDIA H100 80GB HBM3", "step_s": ...,
     "rollout_tokens_per_s": ..., "train_tokens_per_s": ..., ...}

`step_s` is the median wall time of a step; `rollout_tokens_per_s` the tokens generated per
second of rollout; `train_tokens_per_s` the prompt and response tokens of the trained
samples per second of update. On a machine without CUDA it prints
``{"benchmark": "gpu_check", "cuda": false, ...}`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up step)")
    parser.add_argument("--games", type=int, default=64, help="games per step")
    parser.add_argument("--env", default="tic_tac_toe")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"benchmark": "gpu_check", "cuda": False, "skipped": "no CUDA device on this machine", "torch": torch.__version__}))
        return 0

    from trainers.config import parse_overrides
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
