"""One checker for every registered environment.

`check_env(env_id)` runs, for a game env: PettingZoo's `api_test`, `seed_test`,
`parallel_api_test` (on the parallel form) and Gymnasium's `check_env` (on the
single-agent view); for a task env: Gymnasium's `check_env`. Then it fuzzes the text
path with arbitrary strings from hypothesis (derandomised, so a run is reproducible):
no input may crash the env, and every answer is either a legal action (the state
advances with exactly the action the answer names) or an invalid action (counted in
`infos`), never both and never neither.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from functools import partial

from envs.parsing import extract_answer, normalize_action_text
from envs.registry import make, make_gym, spec

# Pieces that make near-miss answers much more likely than uniform text does.
_FUZZ_PIECES = [
    "\\boxed{", "}", "{", "[", "]", "\\text{", "\\boxed", " ", "\n", "\\", "$",
    "[bet]", "[Bet]", "[call]", "[fold]", "[check]", "[4]", "[ 4 ]", "[Accept]", "[Deny]",
    "[Offer: 1 Wood -> 1 Gold]", "[Offer:10 Gold->10 Wood]", "0101", "\\boxed{}", "BET", "4",
]


@dataclass
class CheckReport:
    env_id: str
    kind: str
    passed: list[str] = field(default_factory=list)
    fuzz_examples: int = 0
    fuzz_valid: int = 0
    fuzz_invalid: int = 0

    def __str__(self) -> str:
        return (
            f"{self.env_id} ({self.kind}): passed {', '.join(self.passed)}; fuzzed "
            f"{self.fuzz_examples} answers ({self.fuzz_valid} legal, {self.fuzz_invalid} invalid)"
        )


def check_env(env_id: str, *, fuzz_examples: int = 200, cycles: int = 50, **make_kwargs) -> CheckReport:
    """Check `env_id` (built with `make_kwargs`); raises AssertionError on any failure."""
    entry = spec(env_id)
    report = CheckReport(env_id, entry.kind)
    with warnings.catch_warnings():
        # the API testers warn that text observations are not numpy arrays: by design
        warnings.simplefilter("ignore")
        if entry.kind == "game":
            _check_game_apis(env_id, make_kwargs, cycles, report)
            _fuzz_game(env_id, make_kwargs, fuzz_examples, report)
        else:
            from gymnasium.utils.env_checker import check_env as gym_check_env

            gym_check_env(make(env_id, **make_kwargs), skip_render_check=True)
            report.passed.append("gymnasium.check_env")
            _fuzz_task(env_id, make_kwargs, fuzz_examples, report)
    return report


def _check_game_apis(env_id: str, make_kwargs: dict, cycles: int, report: CheckReport) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from pettingzoo.test import api_test, parallel_api_test, seed_test

    from envs.parallel import GameParallelEnv

    api_test(make(env_id, **make_kwargs), num_cycles=cycles, verbose_progress=False)
    report.passed.append("pettingzoo.api_test")
    seed_test(partial(make, env_id, **make_kwargs), num_cycles=cycles)
    report.passed.append("pettingzoo.seed_test")
    parallel_api_test(GameParallelEnv(make(env_id, **make_kwargs)), num_cycles=cycles)
    report.passed.append("pettingzoo.parallel_api_test")
    gym_check_env(make_gym(env_id, **make_kwargs), skip_render_check=True)
    report.passed.append("gymnasium.check_env(single-agent view)")


def _fuzz_strategy(pieces: list[str]):
    from hypothesis import strategies as st

    piece = st.one_of(st.text(max_size=12), st.sampled_from(_FUZZ_PIECES + pieces))
    return st.one_of(st.text(), st.lists(piece, max_size=8).map("".join))


def _run_fuzz(property_fn, examples: int, pieces: list[str]) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(text=_fuzz_strategy(pieces), seed=st.integers(0, 2**16), moves=st.integers(0, 12))
    def fuzz(text, seed, moves):
        property_fn(text, seed, moves)

    fuzz()


def _action_strings(env, games_to_play: int = 5, limit: int = 40) -> list[str]:
    """Legal action strings seen in a few random games, with case and spacing variants."""
    seen: list[str] = []
    rng = random.Random(0)
    for game in range(games_to_play):
        env.reset(seed=game)
        while env.agents and not env.terminations[env.agent_selection]:
            prompt = env.turn_prompt()
            seen.extend(c for c in prompt.choices if c not in seen)
            env.step(rng.choice(prompt.action_ids))
    seen = seen[:limit]
    return seen + [c.upper() for c in seen] + [c.replace("[", "[ ").replace("]", " ]") for c in seen]


def _fuzz_game(env_id: str, make_kwargs: dict, examples: int, report: CheckReport) -> None:
    env = make(env_id, **make_kwargs)

    def answer_is_handled(text: str, seed: int, moves: int) -> None:
        env.reset(seed=seed)
        rng = random.Random(seed)
        for _ in range(moves):  # reach a mid-game position
            agent = env.agent_selection
            if env.terminations[agent] or env.truncations[agent]:
                break
            env.step(rng.choice(env.turn_prompt().action_ids))
        agent = env.agent_selection
        if env.terminations[agent] or env.truncations[agent]:
            env.reset(seed=seed)
            agent = env.agent_selection
        prompt = env.turn_prompt()
        invalid_before = env.infos[agent]["invalid_actions"]
        history_before = len(env.state.history())
        env.step(text)  # must not raise
        invalid = env.infos[agent]["invalid_actions"] - invalid_before
        advanced = len(env.state.history()) > history_before
        assert invalid in (0, 1), f"{invalid} invalid actions counted for one answer {text!r}"
        if invalid:
            report.fuzz_invalid += 1
            answer = extract_answer(text)
            named = answer is not None and normalize_action_text(answer) in {
                normalize_action_text(c) for c in prompt.choices
            }
            assert not named, f"answer {text!r} names a legal action but was rejected"
        else:
            assert advanced, f"answer {text!r} was neither applied nor counted invalid"
            played = env.state.history()[history_before]
            chosen = prompt.choices[prompt.action_ids.index(played)]
            assert normalize_action_text(extract_answer(text)) == normalize_action_text(chosen), (
                f"answer {text!r} was applied as {chosen!r}"
            )
            report.fuzz_valid += 1
        report.fuzz_examples += 1

    _run_fuzz(answer_is_handled, examples, _action_strings(env))
    report.passed.append("text fuzzing")


def _fuzz_task(env_id: str, make_kwargs: dict, examples: int, report: CheckReport) -> None:
    env = make(env_id, **make_kwargs)

    def answer_is_scored(text: str, seed: int, moves: int) -> None:
        env.reset(seed=seed)
        _, reward, terminated, truncated, info = env.step(text)  # must not raise
        assert terminated or truncated, "a single-turn task must end after one answer"
        assert isinstance(reward, float), f"reward must be a float, got {type(reward).__name__}"
        if reward > 0:
            report.fuzz_valid += 1
        else:
            report.fuzz_invalid += 1
        report.fuzz_examples += 1

    _run_fuzz(answer_is_scored, examples, [])
    report.passed.append("text fuzzing")
