"""Evaluate a model (or a training checkpoint) on a game against fixed opponents.

    python -m benchmarks.evaluate env=kuhn_poker model=PATH opponent=random games=400

Keys: env, model (a built-in name, a Hugging Face folder, a run directory or a
checkpoint folder), opponent (comma-separated: random, rule_based, equilibrium), games
(per seat), mode (choice | direct | think), temperature, max_new_tokens, seed, hands
(Kuhn Poker), out (a JSON file), threads. Reports win / draw / loss / invalid rates with
95% intervals and the mean return, per seat and overall, and for single-hand Kuhn Poker
the exact exploitability of the model's policy (estimated by sampling in think mode).

Every option is checked before the model loads (`check_options`): a bad value fails in
a second with one line naming the key and what is valid, not after a model load.
"""

from __future__ import annotations

import functools
import json
import math
import sys

from benchmarks.evaluate import check_output_path

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


MINIMUMS = {"games": 1, "max_new_tokens": 1, "hands": 1, "threads": 0}
"""Smallest valid value of each integer option (threads=0: torch's default)."""


def opponent_names(options: dict) -> list[str]:
    return [name.strip() for name in options["opponent"].split(",")]


def env_factory(options: dict):
    """A function making a fresh env as the options describe (hands only for Kuhn Poker)."""
    import envs

    env_kwargs = {"hands": options["hands"]} if options["env"] == "kuhn_poker" else {}
    return functools.partial(envs.make, options["env"], mode=options["mode"], **env_kwargs)


def check_options(options: dict) -> None:
    """ValueError, one line naming the key and what is valid, for any option that
    cannot work; builds the env and each opponent once, but loads no model."""
    import envs
    from envs.opponents import make_opponent

    for key, minimum in MINIMUMS.items():
        if options[key] < minimum:
            raise ValueError(f"{key}={options[key]}: must be an integer >= {minimum}")
    if not math.isfinite(options["temperature"]) or options["temperature"] < 0:
        raise ValueError(f"temperature={options['temperature']}: must be a finite number >= 0")
    if options["mode"] not in envs.MODES:
        raise ValueError(f"mode={options['mode']!r}: valid modes are {', '.join(envs.MODES)}")
    try:
        spec = envs.spec(options["env"])
    except ValueError as error:
        raise ValueError(f"env={options['env']!r}: {error}") from None
    if spec.kind != "game":
        raise ValueError(f"env={options['env']!r} is a task env; use `python -m benchmarks.evaluate sat ...`")
    game = env_factory(options)().game
    for name in opponent_names(options):
        try:
            make_opponent(name, game)
        except ValueError as error:
            raise ValueError(f"opponent={name!r}: {error}") from None
    if options["out"]:
        check_output_path(options["out"], "out")


def run(options: dict) -> dict:
    check_options(options)
    import torch

    from trainers.evaluation import evaluate_against, model_exploitability
    from trainers.generation import TransformersBackend
    from trainers.models import load_model
    from trainers.policy import LanguagePolicy

    if options["threads"]:
        torch.set_num_threads(options["threads"])
    make_env = env_factory(options)
    model, tokenizer = load_model(options["model"])
    policy = LanguagePolicy(
        TransformersBackend(model, tokenizer),
        tokenizer,
        mode=options["mode"],
        max_new_tokens=options["max_new_tokens"],
        temperature=options["temperature"],
    )
    report = {"options": options}
    for opponent in opponent_names(options):
        result = evaluate_against(
            policy, make_env, options["env"], opponent, games=options["games"], seed=options["seed"]
        )
        report[opponent] = result
        print(_line(result), flush=True)
    exact = model_exploitability(policy, make_env(), seed=options["seed"])
    if exact is not None:  # the game is small enough for exact analysis
        value, table = exact
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
