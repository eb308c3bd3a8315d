"""What a run checks and prepares before the model loads: every mistake that can be found
early is found here, before anything is written (see `preflight`).
"""

from __future__ import annotations

import envs
from trainers.config import FIXED_OPPONENTS, TrainConfig
from trainers.run_dir import check_run_dir


def preflight(config: TrainConfig) -> dict | None:
    """Every check that can fail before the model loads or anything is written; returns the
    saved config of a resumed run. Raises ValueError naming what is wrong."""
    from envs.opponents import make_opponent
    from trainers.models import check_model_name

    kinds = {env_id: envs.spec(env_id).kind for env_id in config.env}
    accepted = {key for env_id in config.env for key in envs.registry.parameters(env_id)}
    ignored = sorted(set(config.env_kwargs) - accepted)
    if ignored:
        raise ValueError(
            f"env_kwargs {ignored} are not accepted by any selected env ({', '.join(config.env)}); "
            f"accepted: {', '.join(sorted(accepted)) or 'none'}"
        )
    game_envs = [env_id for env_id, kind in kinds.items() if kind == "game"]
    if config.opponent != "none" and not game_envs:
        raise ValueError(f"opponent={config.opponent} needs a game env; {', '.join(config.env)} are tasks")
    if config.mode == "choice" and config.format_phase == "on" and not [k for k in kinds.values() if k == "task"]:
        raise ValueError("format_phase=on teaches the free-text answer format; choice mode has none (use mode=direct or think)")
    for env_id in game_envs:
        env = envs.make(env_id, **{k: v for k, v in config.env_kwargs.items() if k in envs.registry.parameters(env_id)})
        if config.opponent in FIXED_OPPONENTS:
            make_opponent(config.opponent, env.game)  # raises if it cannot play this game
        if config.eval_opponents != ["auto"]:
            for name in config.eval_opponents:
                make_opponent(name, env.game)
    if config.thinking == "markovian" and game_envs and config.mode != "think":
        raise ValueError(
            f"thinking=markovian reasons in free text: games need mode=think (mode is {config.mode}); tasks always do"
        )
    if config.thinking == "markovian" and config.backend != "local":
        raise ValueError(f"thinking=markovian runs with backend=local for now (backend is {config.backend})")
    if config.curriculum != "none" and "sat" not in config.env:
        raise ValueError(f"curriculum={config.curriculum} applies to the sat env; env is {','.join(config.env)}")
    if config.benchmark:
        if "sat" not in config.env:
            raise ValueError("benchmark= names SAT formulas to keep out of training; add env=sat")
        from curricula.sat import load_benchmark_formulas

        load_benchmark_formulas(config.benchmark)  # raises for a missing or damaged folder
    check_model_name(config.model)
    if config.generation == "vllm":
        if config.backend != "local":
            raise ValueError(f"generation=vllm is the local rollout engine; backend={config.backend} generates with its own engines")
        from trainers.generation.vllm_backend import find_vllm_python

        find_vllm_python(config.vllm_python)  # raises, naming the setup command, if it is missing
    if config.opponent.startswith("checkpoint:"):
        check_model_name(config.opponent.split(":", 1)[1])
    return check_run_dir(config)


def eval_opponents(config: TrainConfig, game) -> list[str]:
    """The fixed evaluation opponents for `game`: the configured ones, or with `auto` every
    fixed opponent that can play it."""
    from envs.opponents import make_opponent

    if config.eval_opponents != ["auto"]:
        return list(config.eval_opponents)
    names = []
    for name in FIXED_OPPONENTS:
        try:
            make_opponent(name, game)
        except ValueError:
            continue
        names.append(name)
    return names


def make_curriculum(config: TrainConfig):
    if config.curriculum != "saturn":
        return None
    from curricula.curriculum import saturn_curriculum

    return saturn_curriculum()


def sat_exclusions(config: TrainConfig, curriculum) -> list:
    """Formulas training must never draw: the curriculum's held-out sets and a benchmark's test and held-out files."""
    from curricula.sat import heldout_instances

    levels = curriculum.levels if curriculum is not None else [tuple(envs.make("sat", **_sat_kwargs(config)).level)]
    size = curriculum.heldout_size if curriculum is not None else 20
    excluded = [instance for level in levels for instance in heldout_instances(level, size=size)]
    if config.benchmark:
        from curricula.sat import load_benchmark_formulas

        excluded += load_benchmark_formulas(config.benchmark)
    return excluded


def _sat_kwargs(config: TrainConfig) -> dict:
    accepted = set(envs.registry.parameters("sat"))
    return {k: v for k, v in config.env_kwargs.items() if k in accepted}
