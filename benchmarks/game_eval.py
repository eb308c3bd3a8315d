"""Evaluate a model (or a training checkpoint) on a game against fixed opponents.

    python -m benchmarks.evaluate env=kuhn_poker model=PATH opponent=random games=400

Keys: env, model (a built-in name, a Hugging Face folder, a run directory or a
checkpoint folder), opponent (comma-separated: random, rule_based, equilibrium), games
(per seat), mode (choice | direct | think), temperature, max_new_tokens, seed, hands
(Kuhn Poker), out (a JSON file), threads. Reports win / draw / loss / invalid rates with
95% intervals and the mean return, per seat and overall, and for single-hand Kuhn Poker
the exact exploitability of the model's policy (estimated by sampling in think mode).
"""

from __future__ import annotations

import functools
import json
import sys

DEFAULTS = {
    "env": "kuhn_poker",
    "model": "smollm2-135m",
    "opponent": "random",
    "games": 400,
    "mode": "choice",
    "temperature": 0.6,
    "max_new_tokens": 64,
    "seed": 0,
    "hands": 1,
    "out": "",
    "threads": 0,
}


def parse(arguments: list[str]) -> dict:
    options = dict(DEFAULTS)
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if not sep or key not in DEFAULTS:
            raise ValueError(f"unknown argument {argument!r}; valid keys: {', '.join(DEFAULTS)}")
        default = DEFAULTS[key]
        try:
            options[key] = type(default)(value)
        except ValueError:
            raise ValueError(f"{key}={value!r}: expected a {type(default).__name__}") from None
    return options


def run(options: dict) -> dict:
    import torch

    import envs
    from trainers.evaluation import evaluate_against, exploitability
    from trainers.generation import TransformersBackend
    from trainers.models import load_model
    from trainers.policy import LanguagePolicy

    if options["threads"]:
        torch.set_num_threads(options["threads"])
    spec = envs.spec(options["env"])
    if spec.kind != "game":
        raise ValueError(f"{options['env']!r} is a task env; use `python -m benchmarks.evaluate sat ...`")
    env_kwargs = {"hands": options["hands"]} if options["env"] == "kuhn_poker" else {}
    make_env = functools.partial(envs.make, options["env"], mode=options["mode"], **env_kwargs)
    model, tokenizer = load_model(options["model"])
    policy = LanguagePolicy(
        TransformersBackend(model, tokenizer),
        tokenizer,
        mode=options["mode"],
        max_new_tokens=options["max_new_tokens"],
        temperature=options["temperature"],
    )
    report = {"options": options}
    for opponent in options["opponent"].split(","):
        result = evaluate_against(
            policy, make_env, options["env"], opponent.strip(), games=options["games"], seed=options["seed"]
        )
        report[opponent.strip()] = result
        print(_line(result), flush=True)
    if options["env"] == "kuhn_poker" and options["hands"] == 1:
        value, table = exploitability(policy, make_env(), seed=options["seed"])
        report["exploitability"] = value
        report["policy"] = table
        print(f"exploitability: {value:.4f}", flush=True)
    return report


def _line(result: dict) -> str:
    def rate(key):
        low, high = result[f"{key}_ci95"]
        return f"{key} {result[f'{key}_rate']:.3f} [{low:.3f}, {high:.3f}]"

    return (
        f"{result['env']} vs {result['opponent']}: {result['games']} games, mean return "
        f"{result['mean_return']:+.3f}; " + "; ".join(rate(k) for k in ("win", "draw", "loss", "invalid"))
    )


def main(arguments: list[str]) -> int:
    try:
        options = parse(arguments)
        report = run(options)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if options["out"]:
        with open(options["out"], "w") as handle:
            json.dump(report, handle, indent=1)
    return 0
