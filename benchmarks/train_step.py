"""A full training step (rollout + learner) at the trainer's defaults, per game, beside Kuhn Poker's.

    python -m benchmarks.train_step [env=tic_tac_toe[,simple_negotiation]] [together=ID,ID[,ID]] [--samples-per-step 128] [--repeats 3] [--threads 0]
    python -m benchmarks.train_step --grouping [--repeats 3]   # the learner before/after prompt grouping

Kuhn Poker is always measured, then each `env` given, each in its own trainer and its own
process (so one env's freed memory does not count in the next one's peak) with every other
key at its `TrainConfig` default (SmolLM2-135M, choice mode; the step the game chooses:
512 games for Kuhn Poker alone, 128 turn samples for the others), or with
``--samples-per-step N`` a step of N turn samples. ``together=`` adds one multi-game run
over the ids given (SPIRAL's run on all its games at once: one trainer, the step's samples
split evenly over the games), reported under the ids joined by ``+``, with each game's
samples and distinct states beside the totals.
Every repeat is one `Trainer.train_step` (games, advantages, PPO update), so later repeats
play the updated policy as a run does. Reported per env, as medians over the repeats:
seconds of generation, of the learner (advantages and update) and of the whole step; the
peak resident memory of the process during its steps (sampled every 20 ms: model,
optimizer and step together); the games played, the samples trained on, the distinct
states (prompts) among them, their mean prompt length in tokens and the learner's forward
passes. One JSON line.

``--grouping`` keeps the earlier comparison: one Kuhn Poker step's batch trained on by the
learner as it was (micro-batches of `micro_batch_size` samples, every prompt run whole)
and as it is (micro-batches of distinct prompts, shared prefix run once); ``ratio`` =
before / after.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import threading
import time

import psutil

BASELINE_ENV = "kuhn_poker"


class PeakMemory:
    """The highest resident memory of this process while the block runs, sampled in a thread."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s, self.peak, self._stop = interval_s, 0, threading.Event()

    def __enter__(self):
        process = psutil.Process()
        self.peak = process.memory_info().rss

        def sample():
            while not self._stop.wait(self.interval_s):
                self.peak = max(self.peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)


def in_own_process(env_ids: list[str], **kwargs) -> dict:
    """`full_steps` in a fresh spawned process: its peak memory is that run's alone."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(full_steps, env_ids, **kwargs).result()


def full_steps(env_ids: list[str], *, model: str, repeats: int, samples_per_step: int = 0, threads: int = 0) -> dict:
    """`repeats` training steps of a fresh trainer on `env_ids` (one game, or several in one
    run) at the defaults (a step of `samples_per_step` turn samples when given); medians and
    counts, per game too when there are several."""
    import torch

    from trainers.learning.learner import choice_key, text_key
    from trainers.run.config import TrainConfig
    from trainers.selfplay import Trainer

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(env=list(env_ids), model=model, out=out, progress=False, tensorboard=False,
                             samples_per_step=samples_per_step).validate()
        trainer = Trainer(config)
        trained: list[list] = []
        played: list[list] = []
        update, rollout = trainer.learner.update, trainer.rollout
        trainer.learner.update = lambda samples: trained.append(samples) or update(samples)

        def recorded_rollout(step):
            result = rollout(step)
            played.append(result[0])
            return result

        trainer.rollout = recorded_rollout
        runs, peak = [], 0
        for step in range(repeats):
            with PeakMemory() as memory:
                metrics = trainer.train_step(step)
            peak = max(peak, memory.peak)
            runs.append(metrics)
    batches = trained or [[]]
    samples = [s for batch in batches for s in batch]
    key = lambda s: choice_key(s) if s.is_choice else text_key(s)  # noqa: E731
    median = lambda name: round(statistics.median(m.get(name, 0.0) for m in runs), 2)  # noqa: E731
    line = {
        "games_per_step": config.games_per_step,
        "samples_per_step": config.samples_per_step,
        "threads": torch.get_num_threads(),
        "generation_s": median("time/generation_s"),
        "learner_s": median("time/train_s"),
        "step_s": median("time/step_s"),
        "peak_rss_gb": round(peak / 1e9, 2),
        "games": median("games"),
        "samples": median("samples_trained"),
        "distinct_states": round(statistics.median(len({key(s) for s in batch}) for batch in batches), 1),
        "prompt_tokens": round(statistics.mean(len(s.prompt_ids) for s in samples), 1) if samples else 0,
        "forward_passes": median("train/forward_passes"),
        "runs_step_s": [round(m["time/step_s"], 2) for m in runs],
    }
    if len(env_ids) > 1:
        # turns the step played (its share: a chained turn's parts and a Markovian trace's
        # chunks count once, as the step counts them) and the samples the learner kept
        line["per_env"] = {
            env_id: {
                "turn_samples": statistics.median(sum(s.env_id == env_id and not s.info.get("chunk_index") for s in batch) for batch in played),
                "samples": statistics.median(sum(s.env_id == env_id for s in batch) for batch in batches),
                "distinct_states": statistics.median(len({key(s) for s in batch if s.env_id == env_id}) for batch in batches),
            }
            for env_id in env_ids
        }
    return line


def _by_sample(samples, indices, config):
    """The old micro-batching: consecutive chunks of `micro_batch_size` samples."""
    size = config.micro_batch_size
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def grouping(*, model: str, repeats: int) -> dict:
    """One Kuhn Poker step's batch, trained on before and after grouping by prompt (same start each time)."""
    from trainers.generation import logprobs
    from trainers.learning import learner as learner_module
    from trainers.run.config import TrainConfig
    from trainers.selfplay import Trainer

    config = TrainConfig(model=model, out="/tmp/benchmark-train-step", progress=False, tensorboard=False).validate()
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
    for _ in range(repeats):
        for name in ("before", "after"):
            seconds, forward_passes = timed(name == "before")
            runs[name].append(seconds)
            passes[name] = forward_passes
    before, after = statistics.median(runs["before"]), statistics.median(runs["after"])
    return {
        "samples": len(kept),
        "distinct_prompts": len({learner_module.choice_key(s) for s in kept if s.is_choice}),
        "micro_batch_size": config.micro_batch_size,
        "before_s": round(before, 3),
        "after_s": round(after, 3),
        "before_forward_passes": passes["before"],
        "after_forward_passes": passes["after"],
        "ratio": round(before / after, 2),
        "runs_s": {k: [round(v, 3) for v in vs] for k, vs in runs.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n")[0])
    parser.add_argument("envs", nargs="*", metavar="env=ID[,ID] | together=ID,ID[,ID]",
                        help="games measured beside kuhn_poker, each alone (env=) or all in one run (together=)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--samples-per-step", type=int, default=0,
                        help="size every env's step by this many turn samples (0: the step each game chooses)")
    parser.add_argument("--grouping", action="store_true", help="the learner before/after prompt grouping, on Kuhn Poker")
    args = parser.parse_args(argv)

    import torch

    from trainers.run.config import split_list

    if args.threads:
        torch.set_num_threads(args.threads)
    line = {"benchmark": "train_step", "model": args.model, "repeats": args.repeats}
    if args.grouping:
        line.update(grouping(model=args.model, repeats=args.repeats))
    else:
        runs = [[BASELINE_ENV]]
        for argument in args.envs:
            key, _, value = argument.partition("=")
            ids = split_list(value)
            if key == "env" and ids:
                runs += [[e] for e in ids if [e] not in runs]
            elif key == "together" and len(set(ids)) > 1:
                runs.append(list(dict.fromkeys(ids)))
            else:
                parser.error(f"expected env=ID[,ID] or together=ID,ID[,ID] (two games or more), got {argument!r}")
        line["envs"] = {"+".join(ids): in_own_process(ids, model=args.model, repeats=args.repeats,
                                                      samples_per_step=args.samples_per_step, threads=args.threads)
                        for ids in runs}
    line["threads"] = torch.get_num_threads()
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
