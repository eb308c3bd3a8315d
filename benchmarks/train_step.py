"""Seconds per learner update at the main job's defaults, before and after grouping by prompt.

    python -m benchmarks.train_step [--repeats 3] [--threads 0]

One self-play step of SmolLM2-135M on Kuhn Poker (choice mode, `TrainConfig` defaults)
produces the batch; the same batch is then trained on, alternately, by

* ``before``: the learner as it was: micro-batches of `micro_batch_size` samples, every
  micro-batch scoring its own distinct prompts, each prompt run whole;
* ``after``: micro-batches of distinct prompts (one forward per distinct prompt and
  candidate set per pass) whose common prefix (chat template, rules) is run once.

Both start from the same weights and optimizer state (restored between runs). Prints one
JSON line with the medians and ``ratio`` = before / after.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time


def _by_sample(samples, indices, config):
    """The old micro-batching: consecutive chunks of `micro_batch_size` samples."""
    size = config.micro_batch_size
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args(argv)

    import torch

    from trainers.learning import learner as learner_module
    from trainers.run.config import TrainConfig
    from trainers.generation import logprobs
    from trainers.selfplay import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(model=args.model, out="/tmp/benchmark-train-step", progress=False, tensorboard=False).validate()
    trainer = Trainer(config)
    samples, _ = trainer.rollout(0)
    kept, _ = trainer.advantages(samples)
    learner = trainer.learner
    weights = copy.deepcopy(learner.model.state_dict())
    optimizer = copy.deepcopy(learner.optimizer.state_dict())
    generator = learner.shuffle_generator.get_state()
    grouped, shared = learner_module.micro_batches, logprobs.MIN_SHARED_PREFIX

    def timed(before: bool) -> tuple[float, float]:
        learner.model.load_state_dict(weights)
        learner.optimizer.load_state_dict(optimizer)
        learner.shuffle_generator.set_state(generator)
        learner_module.micro_batches = _by_sample if before else grouped
        logprobs.MIN_SHARED_PREFIX = 10**9 if before else shared
        try:
            start = time.perf_counter()
            metrics = learner.update([copy.copy(s) for s in kept])
            return time.perf_counter() - start, metrics["forward_passes"]
        finally:
            learner_module.micro_batches, logprobs.MIN_SHARED_PREFIX = grouped, shared

    runs = {"before": [], "after": []}
    passes = {}
    for _ in range(args.repeats):
        for name in ("before", "after"):
            seconds, forward_passes = timed(name == "before")
            runs[name].append(seconds)
            passes[name] = forward_passes
    before, after = statistics.median(runs["before"]), statistics.median(runs["after"])
    print(json.dumps({
        "benchmark": "train_step",
        "model": args.model,
        "env": config.env,
        "mode": config.mode,
        "games_per_step": config.games_per_step,
        "samples": len(kept),
        "distinct_prompts": len({learner_module.choice_key(s) for s in kept if s.is_choice}),
        "micro_batch_size": config.micro_batch_size,
        "before_s": round(before, 3),
        "after_s": round(after, 3),
        "before_forward_passes": passes["before"],
        "after_forward_passes": passes["after"],
        "ratio": round(before / after, 2),
        "runs_s": {k: [round(v, 3) for v in vs] for k, vs in runs.items()},
        "threads": torch.get_num_threads(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
