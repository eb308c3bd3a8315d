"""Environments: text protocol, PettingZoo/Gymnasium adapters, registry, wrappers.

    >>> import envs
    >>> env = envs.make("kuhn_poker", mode="direct")   # PettingZoo AEC env
    >>> env.reset(seed=0)
    >>> observation, reward, termination, truncation, info = env.last()
    >>> env.step("\\\\boxed{[bet]}")                      # raw model output or an action id

`envs.make("sat", ...)` gives a Gymnasium task env; `envs.make_gym(game_id, opponent=...)`
a single-agent Gymnasium view of a game; `envs.check(env_id)` walks a game through the
`games` protocol, runs the API checkers and fuzzes the text path.
"""

from envs.invalid import InvalidActionPolicy
from envs.protocol import MODES, TurnPrompt, parse_action, render_prompt
from envs import registry as _registry
from envs.registry import EnvSpec, gym_id, list_envs, make_gym, register, spec
from envs.markovian import MarkovianConfig, MarkovianTaskEnv, MarkovianTrace, check_markovian, make_markovian, char_codec
from envs import builtin as _builtin  # noqa: F401  (registers the built-in envs)

__all__ = [
    "MODES",
    "EnvSpec",
    "InvalidActionPolicy",
    "TurnPrompt",
    "check",
    "gym_id",
    "list_envs",
    "make",
    "make_gym",
    "parse_action",
    "register",
    "render_prompt",
    "spec",
]


THINKING = ("plain", "markovian")


def make(env_id: str, *, thinking: str = "plain", **kwargs):
    """Build the env `env_id` (see envs.registry.make); ``thinking="markovian"`` wraps a task
    env in Markovian thinking (envs.markovian: give ``codec=`` and optionally ``chunk``,
    ``carry``, ``head``, ``max_chunks``).

    The choice is made here, above both modules, so that the registry never imports the
    Markovian wrapper that imports it."""
    if thinking == "markovian":
        return make_markovian(env_id, **kwargs)
    if thinking != "plain":
        raise ValueError(f"thinking={thinking!r} is not valid; choose one of: {', '.join(THINKING)}")
    return _registry.make(env_id, **kwargs)


def check(env_id: str, *, thinking: str = "plain", **kwargs):
    """Run the API checkers and the text fuzzer on a registered env (see envs.checker);
    ``thinking="markovian"`` checks its Markovian form (see envs.markovian.check_markovian)."""
    if thinking == "markovian":
        return check_markovian(env_id, **kwargs)
    if thinking != "plain":
        raise ValueError(f"thinking={thinking!r} is not valid; choose one of: {', '.join(THINKING)}")
    from envs.checker import check_env

    return check_env(env_id, **kwargs)
