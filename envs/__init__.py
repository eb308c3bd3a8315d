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
from envs.registry import EnvSpec, gym_id, list_envs, make, make_gym, register, spec
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


def check(env_id: str, *, thinking: str = "plain", **kwargs):
    """Run the API checkers and the text fuzzer on a registered env (see envs.checker);
    ``thinking="markovian"`` checks its Markovian form (see envs.markovian.check_markovian)."""
    if thinking == "markovian":
        from envs.markovian import check_markovian

        return check_markovian(env_id, **kwargs)
    from envs.checker import check_env

    return check_env(env_id, **kwargs)
