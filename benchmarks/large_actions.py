"""Seconds per Simple Negotiation step in choice mode, every offer scored vs offers chained.

    python -m benchmarks.large_actions [--games 8] [--max-turns 10] [--threads 1] [--chains off,auto]

Simple Negotiation offers up to 200 legal actions a turn. For each `choice_chain` setting a
trainer is built at the `TrainConfig` defaults (SmolLM2-135M, choice mode) with
`--games` games per step, and one step is timed: the self-play rollout and the learner
update on its samples (evaluation is not part of a step here). ``off`` scores every legal
action as one candidate of one choice, with all of them listed in the prompt; ``auto``
answers such a turn as a chain of small choices (``envs.action_chain``) with the actions
described in patterns. Counted by wrapping the backend: the candidates it scored per turn
and its calls. Prints one JSON line with one entry per setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def measure(chain: str, args) -> dict:
    from trainers.run.config import TrainConfig
    from trainers.selfplay import Trainer

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            model=args.model, env=["simple_negotiation"], env_kwargs={"max_turns": args.max_turns},
            games_per_step=args.games, choice_chain=chain, threads=args.threads,
            out=f"{out}/run", progress=False, tensorboard=False,
        ).validate()
        trainer = Trainer(config)
        backend = trainer.policy.backend
        scored = {"calls": 0, "candidates": 0}
        score_choices = backend.score_choices

        def counting(prompts, choices, **kwargs):
            scored["calls"] += 1
            scored["candidates"] += sum(len(c) for c in choices)
            return score_choices(prompts, choices, **kwargs)

        backend.score_choices = counting
        start = time.perf_counter()
        samples, _ = trainer.rollout(0)
        rollout_s = time.perf_counter() - start
        kept, _ = trainer.advantages(samples)
        start = time.perf_counter()
        trainer.learner.update(kept)
        learner_s = time.perf_counter() - start
        turns = sum(1 for s in samples if s.info.get("chunk_index", 0) == 0)
        env = trainer.setup.make_game_env("simple_negotiation")
        env.reset(seed=0)
        return {
            "step_s": round(rollout_s + learner_s, 1),
            "rollout_s": round(rollout_s, 1),
            "learner_s": round(learner_s, 1),
            "turns": turns,
            "samples": len(samples),
            "candidates_per_turn": round(scored["candidates"] / max(1, turns), 1),
            "scoring_calls": scored["calls"],
            "first_prompt_chars": len(env.turn_prompt().text),
        }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_actions", description=__doc__.split("\n")[0])
    parser.add_argument("--games", type=int, default=8)
    parser.add_argument("--max-turns", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--chains", default="off,auto", help="choice_chain settings to measure, in order")
    args = parser.parse_args(argv)
    results = {chain: measure(chain, args) for chain in args.chains.split(",")}
    print(json.dumps({
        "benchmark": "large_actions",
        "model": args.model,
        "env": "simple_negotiation",
        "games_per_step": args.games,
        "max_turns": args.max_turns,
        "threads": args.threads,
        **{f"choice_chain={chain}": result for chain, result in results.items()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
