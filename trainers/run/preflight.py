"""What a run checks and prepares before the model loads: every mistake that can be found
early is found here, before anything is written (see `preflight`).
"""

from __future__ import annotations

import envs
from trainers.run.config import TrainConfig
from trainers.run.run_dir import check_run_dir
from trainers.run.setup import CURRICULUM_ENVS, RunSetup, env_arguments


def preflight(config: TrainConfig) -> dict | None:
    """Every check that can fail before the model loads or anything is written; returns the
    saved config of a resumed run. Raises ValueError naming what is wrong."""
    from envs.opponents import ALL_OPPONENTS, make_opponent
    from games.positions import DEFAULT_MAX_DECISION_POSITIONS, small_position_graph
    from trainers.rollouts.decision_credit import MARGIN_CREDITS
    from trainers.models import check_model_name
    from trainers.evaluation.out_of_domain import check_ood_envs

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
    setup = RunSetup(config)
    task_kinds = [k for k in kinds.values() if k == "task"]
    free_text_tasks = task_kinds and setup.task_mode != "choice"
    if config.mode == "choice" and config.format_phase == "on" and not free_text_tasks:
        raise ValueError("format_phase=on teaches the free-text answer format; choice mode has none "
                         "(use mode=direct or think, and task_mode=direct or think for tasks)")
    if config.backend == "ray" and not game_envs:
        raise ValueError(
            f"backend=ray plays game rollouts in Ray workers; {', '.join(config.env)} "
            f"{'is a task' if len(config.env) == 1 else 'are tasks'}, whose rollouts run in the driver: use backend=local"
        )
    game_env_objects = {env_id: envs.make(env_id, **env_arguments(config, env_id)) for env_id in game_envs}
    for env in game_env_objects.values():
        if config.opponent in ALL_OPPONENTS:
            make_opponent(config.opponent, env.game)  # raises if it cannot play this game
        if config.eval_opponents != ["auto"]:
            for name in config.eval_opponents:
                make_opponent(name, env.game)
    if config.reward != "outcome":
        if not game_env_objects:
            raise ValueError(f"reward={config.reward} says what game turns are trained on; {', '.join(config.env)} has no game env")
        _require_margin(game_env_objects, f"reward={config.reward} needs", "use reward=outcome")
    if config.game_credit != "turn":
        if not game_env_objects or config.mode != "choice":
            raise ValueError(f"game_credit={config.game_credit} credits game choices by the policy's choice distribution; "
                             + (f"{', '.join(config.env)} has no game env" if not game_env_objects else f"games answer in mode={config.mode} (use mode=choice)"))
        if config.game_credit in MARGIN_CREDITS:
            _require_margin(game_env_objects, f"game_credit={config.game_credit} values a choice's options by", "use game_credit=turn")
        else:
            unsolvable = [env_id for env_id, env in game_env_objects.items() if small_position_graph(env.game) is None]
            if unsolvable:
                raise ValueError(f"game_credit=solved values a choice's options by solving the game over its positions "
                                 f"(games/positions.py); {', '.join(unsolvable)} cannot be (no position_key, chance, or more "
                                 f"than {DEFAULT_MAX_DECISION_POSITIONS:,} positions): use game_credit=turn")
    from trainers.learning.diagnostics import diagnosed_trees

    diagnosed_trees(config, game_env_objects)
    if config.thinking == "markovian" and game_envs and config.mode != "think":
        raise ValueError(
            f"thinking=markovian reasons in free text: games need mode=think (mode is {config.mode}); tasks always do"
        )
    if config.choice_chain != "auto" and (config.mode != "choice" or not game_envs):
        raise ValueError(f"choice_chain={config.choice_chain} sets how choice-mode game turns are asked; "
                         f"this run has {'no game env' if not game_envs else f'mode={config.mode}'}")
    if config.task_mode != "auto" and not task_kinds:
        raise ValueError(f"task_mode sets how tasks answer; {', '.join(config.env)} has no task env")
    if config.task_mode == "choice":
        missing = setup.tasks_without_parts()
        if missing:
            raise ValueError(f"task_mode=choice answers part by part; {', '.join(missing)} cannot spell its answers in parts "
                             f"(envs.tasks.AnswerParts): use task_mode=direct or think")
        if config.thinking == "markovian":
            raise ValueError("thinking=markovian reasons in free text; task_mode=choice picks answers part by part (use task_mode=direct or think)")
    if config.task_credit != "answer" and (not task_kinds or setup.task_mode != "choice"):
        raise ValueError(f"task_credit={config.task_credit} credits the parts of a task answer chosen part by part; "
                         + (f"{', '.join(config.env)} has no task env" if not task_kinds else f"tasks answer in {setup.task_mode} mode (use task_mode=choice)"))
    if config.thinking == "markovian" and config.backend != "local":
        raise ValueError(f"thinking=markovian runs with backend=local for now (backend is {config.backend})")
    scheduled = CURRICULUM_ENVS.get(config.curriculum)
    if scheduled and scheduled not in config.env:
        raise ValueError(f"curriculum={config.curriculum} applies to the {scheduled} env; env is {','.join(config.env)}")
    if config.benchmark:
        if "sat" not in config.env:
            raise ValueError("benchmark= names SAT formulas to keep out of training; add env=sat")
        from curricula.sat import load_benchmark_formulas

        load_benchmark_formulas(config.benchmark)  # raises for a missing or damaged folder
    if config.eval_envs:
        check_ood_envs(config.eval_envs, mode=config.eval_envs_mode)  # names the valid ids for a bad one
    if config.eval_transfer:
        try:
            import reasoning_gym  # noqa: F401
        except ImportError:
            raise ValueError("eval_transfer needs reasoning-gym: pip install 'selfplay-suite[transfer]' (or eval_transfer=0)") from None
    check_model_name(config.model)
    if config.generation == "vllm":
        if config.backend != "local":
            raise ValueError(f"generation=vllm is the local rollout engine; backend={config.backend} generates with its own engines")
        from trainers.generation.vllm_backend import find_vllm_python

        find_vllm_python(config.vllm_python)  # raises, naming the setup command, if it is missing
    if config.opponent.startswith("checkpoint:"):
        check_model_name(config.opponent.split(":", 1)[1])
    return check_run_dir(config)


def sat_exclusions(config: TrainConfig, curriculum) -> list:
    """Formulas SAT training must never draw: the curriculum's held-out sets and a benchmark's
    test and held-out files (``RunSetup.exclusions``, kept under this name for the OpenRLHF launcher)."""
    return RunSetup(config, curriculum=curriculum).exclusions("sat")


def _require_margin(game_env_objects: dict, needs: str, instead: str) -> None:
    """Raise ``"<needs> a score margin ..., which <envs> does not define; <instead>"`` for the
    game envs whose states have no score margin."""
    from trainers.rollouts.rewards import has_margin

    lacking = [env_id for env_id, env in game_env_objects.items() if not has_margin(env.game)]
    if lacking:
        raise ValueError(f"{needs} a score margin (State.score_margin), which {', '.join(lacking)} does not define; {instead}")
