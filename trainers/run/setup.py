"""One run set-up for every backend: envs, policies, opponents, curriculum and thinking from a config.

The local trainer (``trainers.selfplay``), the Ray rollout workers (``trainers.backends.ray``),
the checks before a run (``trainers.run.preflight``) and the OpenRLHF agent all build the
objects of a run here, so the same config gives the same envs, the same policy options,
the same opponent and the same thinking strategy whichever backend plays:

    setup = RunSetup(config)
    env = setup.make_game_env("kuhn_poker")           # mode, invalid-action policy, turn limit, env_kwargs
    policy = setup.make_policy(backend, tokenizer)    # the run's sampling options, game mode
    task_policy = setup.make_policy(backend, tokenizer, mode=setup.task_mode)
    opponent = setup.fixed_opponent(device="cpu")     # random / rule_based / equilibrium / checkpoint:PATH / None
    task_env = setup.make_task_env("sat")             # with its curriculum and training exclusions
    setup.thinking                                    # trainers.rollouts.thinking strategy, chosen once

The free functions (`env_arguments`, `game_env_kwargs`, `policy_options`) are the pieces a
process that holds no `RunSetup` needs (the OpenRLHF launcher writes them into its job).
"""

from __future__ import annotations

import functools

import envs
from envs.tasks import HELDOUT_SIZE, level_of, task_hooks
from trainers.run.config import FIXED_OPPONENTS, TrainConfig
from trainers.rollouts.thinking import thinking_strategy

CURRICULUM_ENVS = {"saturn": "sat"}
"""The task env each curriculum schedules."""


def env_arguments(config: TrainConfig, env_id: str) -> dict:
    """The config's ``env_kwargs`` that `env_id` accepts (a multi-env run shares one ``env_kwargs``)."""
    accepted = set(envs.registry.parameters(env_id))
    return {k: v for k, v in config.env_kwargs.items() if k in accepted}


def game_env_kwargs(config: TrainConfig, env_id: str) -> dict:
    """The ``envs.make`` arguments of a game env in this run (``choice_chain`` only when it is
    not the envs' own default, so that a TextArena env, which takes no such argument, still
    says why it refuses choice mode)."""
    chain = {"choice_chain": config.choice_chain} if config.choice_chain != "auto" else {}
    return dict(
        mode=config.mode,
        **chain,
        invalid_action_policy=config.invalid_action_policy,
        turn_limit=config.turn_limit,
        **env_arguments(config, env_id),
    )


def policy_options(config: TrainConfig) -> dict:
    """The `LanguagePolicy` sampling options of a run."""
    return dict(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        batch_size=config.generation_batch_size,
    )


def env_kinds(config: TrainConfig) -> tuple[list[str], list[str]]:
    """``(game env ids, task env ids)`` of the run, in config order."""
    kinds = {env_id: envs.spec(env_id).kind for env_id in config.env}
    return [e for e, k in kinds.items() if k == "game"], [e for e, k in kinds.items() if k == "task"]


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


class RunSetup:
    """Builds the objects of one run from its config (see the module docstring)."""

    def __init__(self, config: TrainConfig, *, curriculum=None):
        self.config = config
        self.game_envs, self.task_envs = env_kinds(config)
        self.thinking = thinking_strategy(config)
        self.curriculum = make_curriculum(config) if curriculum is None else curriculum
        self._exclusions: dict[str, list] = {}

    # -- policies ------------------------------------------------------------------------
    @functools.cached_property
    def task_mode(self) -> str:
        """How tasks answer (``task_mode``): ``auto`` is choice mode (part by part,
        ``trainers.rollouts.parts``) when games use choice mode, thinking is plain and every
        task can spell its answers in parts, else the games' free-text mode (direct for
        choice games)."""
        mode = self.config.task_mode
        if mode != "auto":
            return mode
        if self.config.mode != "choice" or self.config.thinking == "markovian":  # Markovian traces are free text
            return "direct" if self.config.mode == "choice" else self.config.mode
        return "choice" if self.task_envs and not self.tasks_without_parts() else "direct"

    def tasks_without_parts(self) -> list[str]:
        """The task envs that cannot spell their answers as `envs.tasks.AnswerParts` (no choice mode for them)."""
        missing = []
        for env_id in self.task_envs:
            env = self.make_task_env(env_id)
            _, info = env.reset(seed=0)
            if task_hooks(env).answer_parts(info) is None:
                missing.append(env_id)
        return missing

    def make_policy(self, backend, tokenizer, *, mode: str | None = None):
        from trainers.rollouts.policy import LanguagePolicy

        return LanguagePolicy(backend, tokenizer, mode=mode or self.config.mode, **policy_options(self.config))

    def frozen_policy(self, path, *, device: str | None = None):
        """A playing policy on a frozen copy of the model saved at `path` (no gradients)."""
        from trainers.generation import TransformersBackend
        from trainers.models import load_model

        config = self.config
        frozen, tokenizer = load_model(str(path), dtype=config.dtype, base_model=config.model)
        backend = TransformersBackend(frozen.requires_grad_(False).to(device or config.device), tokenizer)
        return self.make_policy(backend, tokenizer)

    def fixed_opponent(self, *, device: str | None = None):
        """The run's opponent outside the league: a fixed player, a frozen checkpoint, or None."""
        opponent = self.config.opponent
        if opponent in ("none", "league"):
            return None
        if opponent.startswith("checkpoint:"):
            return self.frozen_policy(opponent.split(":", 1)[1], device=device)
        from envs.opponents import make_opponent

        return make_opponent(opponent, self.make_game_env(self.game_envs[0]).game)

    # -- envs ----------------------------------------------------------------------------
    def make_game_env(self, env_id: str):
        return envs.make(env_id, **game_env_kwargs(self.config, env_id))

    def make_task_env(self, env_id: str):
        """A task env with the run's curriculum (when it schedules this env) and exclusions."""
        kwargs = env_arguments(self.config, env_id)
        if self.curriculum is not None and CURRICULUM_ENVS.get(self.config.curriculum) == env_id:
            kwargs["curriculum"] = self.curriculum
        excluded = self.exclusions(env_id)
        if excluded:
            kwargs["exclude"] = excluded
        return envs.make(env_id, **kwargs)

    def heldout_size(self, env_id: str) -> int:
        scheduled = self.curriculum is not None and CURRICULUM_ENVS.get(self.config.curriculum) == env_id
        return self.curriculum.heldout_size if scheduled and self.curriculum.heldout_size else HELDOUT_SIZE

    def exclusions(self, env_id: str) -> list:
        """What training must never draw from `env_id`: the held-out items of every level the
        run may visit, and a benchmark's items (``envs.tasks``); computed once."""
        if env_id not in self._exclusions:
            probe = envs.make(env_id, **env_arguments(self.config, env_id))
            scheduled = self.curriculum is not None and CURRICULUM_ENVS.get(self.config.curriculum) == env_id
            level = level_of(probe)
            levels = list(self.curriculum.levels) if scheduled else ([] if level is None else [level])
            self._exclusions[env_id] = task_hooks(probe).exclusions(levels, self.heldout_size(env_id), self.config.benchmark)
        return self._exclusions[env_id]
