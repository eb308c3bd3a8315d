"""Evaluate a model (or a training checkpoint) on games against fixed opponents.

    python -m benchmarks.evaluate env=kuhn_poker model=PATH opponent=random games=400
    python -m benchmarks.evaluate games=spiral_ood model=BEFORE,AFTER opponent=random,checkpoint:PATH

Keys: env (an env id, or several comma-separated), model (a built-in name, a Hugging Face
folder, a run directory or a checkpoint folder; two comma-separated checkpoints give a
before/after table with a paired test), opponent (comma-separated: random, rule_based,
equilibrium, mcts, checkpoint:PATH), games (per env, opponent and seat; or a preset name,
spiral_ood, which plays SPIRAL's out-of-domain set, `count` games each), count, mode
(choice | direct | think; auto: choice, or direct for a preset, whose TextArena games
have no list of moves to choose from), temperature, max_new_tokens, seed, hands (games that have
hands), env_kwargs (a JSON object of env arguments, e.g. {"max_turns": 4}),
invalid_action_policy (forfeit | spiral | textarena), turn_limit (0: the game's own end),
out (a JSON file), threads. Reports win / draw / loss / invalid rates with 95% intervals
and the mean return, per seat and overall, and for games small enough the exact
exploitability of the model's policy (estimated by sampling in think mode).

Every option is checked before the model loads (`check_options`): a bad value fails in
a second with one line naming the key and what is valid, not after a model load.
"""

from __future__ import annotations

import json
import math
import sys

from benchmarks.outputs import check_output_path
from trainers.run.config import split_list

DEFAULTS = {
    "env": "kuhn_poker",
    "model": "smollm2-135m",
    "opponent": "random",
    "games": "400",
    "count": 0,
    "mode": "auto",
    "temperature": 0.6,
    "max_new_tokens": 64,
    "seed": 0,
    "hands": 1,
    "env_kwargs": "{}",
    "invalid_action_policy": "forfeit",
    "turn_limit": 0,
    "out": "",
    "threads": 0,
}
PRESET_COUNT = 100
"""Games per env, opponent and seat of a preset unless `count` says otherwise."""


def parse(arguments: list[str]) -> dict:
    options = dict(DEFAULTS)
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if not sep or key not in DEFAULTS:
            raise ValueError(
                f"unknown argument {argument!r}: expected key=value with a key among {', '.join(DEFAULTS)}, "
                f"or an evaluation subcommand first (python -m benchmarks.evaluate --help lists them)"
            )
        default = DEFAULTS[key]
        try:
            options[key] = type(default)(value)
        except ValueError:
            raise ValueError(f"{key}={value!r}: expected a {type(default).__name__}") from None
    return options


MINIMUMS = {"max_new_tokens": 1, "hands": 1, "threads": 0, "count": 0, "turn_limit": 0}
"""Smallest valid value of each integer option (threads=0: torch's default)."""


def opponent_names(options: dict) -> list[str]:
    return split_list(options["opponent"])


def model_names(options: dict) -> list[str]:
    return split_list(options["model"])


def games_per_seat(options: dict) -> int:
    """Games per env, opponent and seat; ValueError naming `games` or `count` if invalid."""
    from trainers.evaluation.out_of_domain import PRESETS

    games = options["games"]
    if games in PRESETS:
        return options["count"] or PRESET_COUNT
    if options["count"]:
        raise ValueError(f"count={options['count']} goes with a preset (games={'|'.join(PRESETS)}); with games=N give the number there")
    try:
        value = int(games)
    except ValueError:
        raise ValueError(f"games={games!r}: expected a int, or a preset: {', '.join(PRESETS)}") from None
    if value < 1:
        raise ValueError(f"games={value}: must be an integer >= 1")
    return value


def mode_of(options: dict) -> str:
    """The text protocol mode: as given, or for `auto` choice (direct for a preset)."""
    from trainers.evaluation.out_of_domain import PRESETS

    if options["mode"] != "auto":
        return options["mode"]
    return "direct" if options["games"] in PRESETS else "choice"


def env_ids(options: dict) -> list[str]:
    from trainers.evaluation.out_of_domain import PRESETS, preset_envs

    if options["games"] in PRESETS:
        return list(preset_envs(options["games"]))
    return split_list(options["env"])


def env_kwargs(options: dict, env_id: str) -> dict:
    """The env arguments of `options` for `env_id`: `env_kwargs`, `hands` where the env has hands."""
    import envs

    kwargs = json.loads(options["env_kwargs"])
    if "hands" in envs.registry.parameters(env_id):
        kwargs.setdefault("hands", options["hands"])
    elif options["hands"] != DEFAULTS["hands"]:
        raise ValueError(f"hands={options['hands']}: env {env_id!r} has no hands")
    return kwargs


def env_factory(options: dict, env_id: str | None = None):
    """A function making a fresh env of `env_id` (default: the first env) as the options say."""
    from trainers.evaluation.out_of_domain import env_maker

    env_id = env_id or env_ids(options)[0]
    return env_maker(
        env_id,
        mode=mode_of(options),
        invalid_action_policy=options["invalid_action_policy"],
        turn_limit=options["turn_limit"] or None,
        **env_kwargs(options, env_id),
    )


def check_options(options: dict) -> None:
    """ValueError, one line naming the key and what is valid, for any option that
    cannot work; builds each env and each opponent once, but loads no model."""
    import envs
    from envs.invalid import PRESETS as POLICIES
    from envs.opponents import make_opponent

    for key, minimum in MINIMUMS.items():
        if options[key] < minimum:
            raise ValueError(f"{key}={options[key]}: must be an integer >= {minimum}")
    games_per_seat(options)
    if not math.isfinite(options["temperature"]) or options["temperature"] < 0:
        raise ValueError(f"temperature={options['temperature']}: must be a finite number >= 0")
    if options["mode"] not in ("auto", *envs.MODES):
        raise ValueError(f"mode={options['mode']!r}: valid modes are auto, {', '.join(envs.MODES)}")
    if options["invalid_action_policy"] not in POLICIES:
        raise ValueError(f"invalid_action_policy={options['invalid_action_policy']!r}: valid policies are {', '.join(POLICIES)}")
    try:
        kwargs = json.loads(options["env_kwargs"])
    except json.JSONDecodeError:
        kwargs = None
    if not isinstance(kwargs, dict):
        raise ValueError(f"env_kwargs={options['env_kwargs']!r}: expected a JSON object such as {{\"max_turns\": 4}}")
    models = model_names(options)
    if not 1 <= len(models) <= 2:
        raise ValueError(f"model={options['model']!r}: give one model, or two (before,after) for a paired comparison")
    for env_id in env_ids(options):
        try:
            spec = envs.spec(env_id)
        except ValueError as error:
            raise ValueError(f"env={env_id!r}: {error}") from None
        if spec.kind != "game":
            raise ValueError(f"env={env_id!r} is a task env; use `python -m benchmarks.evaluate sat ...`")
        try:
            game = env_factory(options, env_id)().game
        except ValueError as error:
            raise ValueError(f"env={env_id!r}: {error}") from None
        for name in opponent_names(options):
            if name.startswith("checkpoint:"):
                from trainers.models import check_model_name

                check_model_name(name.split(":", 1)[1])
                continue
            try:
                make_opponent(name, game)
            except ValueError as error:
                raise ValueError(f"opponent={name!r}: {error}") from None
    if options["out"]:
        check_output_path(options["out"], "out")


def run(options: dict) -> dict:
    check_options(options)
    import torch

    from trainers.evaluation.evaluate import model_exploitability
    from trainers.evaluation.out_of_domain import ood_outcomes, paired_comparison, summarize_outcomes

    if options["threads"]:
        torch.set_num_threads(options["threads"])
    opponents = {
        name: _policy(name.split(":", 1)[1], options) if name.startswith("checkpoint:") else name
        for name in opponent_names(options)
    }
    report = {"options": options, "models": {}}
    outcomes = {}
    for label, model in model_labels(options).items():
        policy = _policy(model, options)
        outcomes[label] = ood_outcomes(
            policy,
            env_ids(options),
            opponents,
            games=games_per_seat(options),
            seed=options["seed"],
            temperature=options["temperature"],
            make_env=lambda env_id: env_factory(options, env_id),
        )
        results = summarize_outcomes(outcomes[label])
        for env_id in env_ids(options):
            exact = model_exploitability(policy, env_factory(options, env_id)(), seed=options["seed"])
            if exact is not None:  # the game is small enough for exact analysis
                results[f"{env_id}/exploitability"] = exact[0]
                results[f"{env_id}/policy"] = exact[1]
        report["models"][label] = results
        for key, result in results.items():
            if isinstance(result, dict) and "games" in result:
                print(f"{label}: {_line(key, result)}", flush=True)
            elif key.endswith("/exploitability"):
                print(f"{label}: {key} {result:.4f}", flush=True)
    if len(outcomes) == 2:
        report["paired"] = paired_comparison(*outcomes.values())
        print(_paired_table(report, list(outcomes)), flush=True)
    return report


def model_labels(options: dict) -> dict[str, str]:
    """Label -> model: the model itself, or "before" and "after" for two checkpoints."""
    models = model_names(options)
    return dict(zip(("before", "after"), models)) if len(models) == 2 else {models[0]: models[0]}


def _policy(model: str, options: dict):
    from trainers.generation import TransformersBackend
    from trainers.models import load_model
    from trainers.rollouts.policy import LanguagePolicy

    loaded, tokenizer = load_model(model)
    return LanguagePolicy(
        TransformersBackend(loaded.requires_grad_(False), tokenizer),
        tokenizer,
        mode=mode_of(options),
        max_new_tokens=options["max_new_tokens"],
        temperature=options["temperature"],
    )


def _line(key: str, result: dict) -> str:
    def rate(name):
        low, high = result[f"{name}_ci95"]
        return f"{name} {result[f'{name}_rate']:.3f} [{low:.3f}, {high:.3f}]"

    return (
        f"{key}: {result['games']} games, mean return {result['mean_return']:+.3f}; "
        + "; ".join(rate(k) for k in ("win", "draw", "loss", "invalid"))
    )


def _paired_table(report: dict, models: list[str]) -> str:
    """Before/after win rates per env and opponent, and the paired test over all games."""
    before, after = (report["models"][m] for m in models)
    rows = [f"{'':<48} {'before':>8} {'after':>8}"]
    for key in before:
        if isinstance(before[key], dict) and "win_rate" in before[key] and key in after:
            rows.append(f"{'win rate ' + key:<48} {before[key]['win_rate']:>8.3f} {after[key]['win_rate']:>8.3f}")
    paired = report["paired"]
    low, high = paired["difference_ci95"]
    rows.append(
        f"paired score difference (win 1, draw 0.5, loss 0) over {paired['pairs']} games: "
        f"{paired['difference']:+.3f} [{low:+.3f}, {high:+.3f}], sign test p = {paired['sign_test_p']:.3g}"
    )
    return "\n".join(rows)


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
