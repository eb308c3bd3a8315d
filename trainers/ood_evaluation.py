"""Out-of-domain evaluation: SPIRAL's protocol on games the policy never trained on.

SPIRAL asks whether self-play on a few games makes a better player of games it never
saw: it plays the checkpoint against fixed opponents in both seats on an out-of-domain
set and tracks those win rates during training. `SPIRAL_OOD` is that set as this suite
has it (TextArena's Pig Dice, Liar's Dice, Snake and Truth-and-Deception, OpenSpiel's
Nim), `ood_outcomes` plays it game by game (the same seeds for every checkpoint, so
two checkpoints meet the same deals and dice: a paired comparison), `evaluate_ood`
summarises it with 95% intervals, and `paired_comparison` compares two checkpoints.

Games are played in free text (``direct`` by default): TextArena's moves cannot be
listed, so choice mode does not apply to them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import envs
from trainers.evaluation import summarize
from trainers.policy import LanguagePolicy
from trainers.rollout import GameSetup, play_games
from trainers.seeds import derive_seed

SPIRAL_OOD = (
    "textarena:PigDice-v0-short",
    "textarena:LiarsDice-v0",
    "openspiel:nim",
    "textarena:Snake-v0",
    "textarena:TruthAndDeception-v0",
)
PRESETS = {"spiral_ood": SPIRAL_OOD}
OOD_TURN_LIMIT = 50
"""SPIRAL cuts games at 50 turns as a draw."""


def preset_envs(name: str) -> tuple[str, ...]:
    if name not in PRESETS:
        raise ValueError(f"unknown game preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class Outcome:
    """One evaluation game, keyed so that two checkpoints' games pair up."""

    env_id: str
    opponent: str
    seat: int
    index: int
    value: float
    """The evaluated policy's return."""
    invalid: bool

    @property
    def key(self) -> tuple:
        return (self.env_id, self.opponent, self.seat, self.index)

    @property
    def score(self) -> float:
        """Win 1, draw 0.5, loss 0."""
        return 1.0 if self.value > 0 else 0.0 if self.value < 0 else 0.5


def env_maker(env_id: str, *, mode: str = "direct", invalid_action_policy: str = "forfeit", turn_limit: int = OOD_TURN_LIMIT, **env_kwargs):
    """A function making fresh envs of `env_id` for evaluation."""
    return functools.partial(
        envs.make, env_id, mode=mode, invalid_action_policy=invalid_action_policy, turn_limit=turn_limit, **env_kwargs
    )


def ood_outcomes(
    policy: LanguagePolicy,
    env_ids,
    opponents: dict,
    *,
    games: int,
    seed: int,
    temperature: float | None = None,
    make_env=env_maker,
) -> list[Outcome]:
    """`games` games per env, opponent and seat; `opponents` maps a name to a fixed
    opponent's name or a frozen `LanguagePolicy`. Seeds depend on (seed, env, seat, game)
    only, so every policy evaluated with the same seed meets the same chance."""
    outcomes = []
    for env_index, env_id in enumerate(env_ids):
        make = make_env(env_id)
        probe = make()
        for name, opponent in opponents.items():
            if isinstance(opponent, str):
                from envs.opponents import make_opponent

                opponent = make_opponent(opponent, probe.game)
            for seat in range(probe.game.num_players()):
                base = derive_seed(seed, env_index, seat)
                setups = [
                    GameSetup(env_id, make(), derive_seed(base, i), frozenset({seat}), i) for i in range(games)
                ]
                _, results, _ = play_games(setups, policy, seed=base, opponent=opponent, temperature=temperature)
                outcomes += [
                    Outcome(env_id, name, seat, r.game_id, r.returns[seat], r.invalid[seat] > 0) for r in results
                ]
    return outcomes


def summarize_outcomes(outcomes: list[Outcome]) -> dict:
    """`{"<env>/<opponent>": rates with 95% intervals and "per_seat"}`, and `"all/<opponent>"`
    over every env."""
    groups: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(f"{outcome.env_id}/{outcome.opponent}", []).append(outcome)
        groups.setdefault(f"all/{outcome.opponent}", []).append(outcome)
    summary = {}
    for key, group in groups.items():
        seats = sorted({o.seat for o in group})
        summary[key] = summarize([(o.value, o.invalid) for o in group])
        if not key.startswith("all/"):
            summary[key]["per_seat"] = {
                str(s): summarize([(o.value, o.invalid) for o in group if o.seat == s]) for s in seats
            }
    return summary


def evaluate_ood(policy: LanguagePolicy, env_ids=SPIRAL_OOD, *, games: int, seed: int, opponents=("random",), **options) -> dict:
    """What training records at an evaluation step: `summarize_outcomes` of the OOD set."""
    return summarize_outcomes(
        ood_outcomes(policy, env_ids, {name: name for name in opponents}, games=games, seed=seed, **options)
    )


def paired_comparison(before: list[Outcome], after: list[Outcome]) -> dict:
    """Score difference after - before over the games both played (same env, opponent,
    seat and seed): mean with a 95% interval (normal approximation of the paired
    differences) and the two-sided exact sign test's p-value."""
    previous = {o.key: o.score for o in before}
    differences = [o.score - previous[o.key] for o in after if o.key in previous]
    if not differences:
        raise ValueError("the two evaluations share no game to pair (different envs, opponents or seeds?)")
    n = len(differences)
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(variance / n)
    better, worse = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    return {
        "pairs": n,
        "score_before": sum(previous[o.key] for o in after if o.key in previous) / n,
        "score_after": sum(o.score for o in after if o.key in previous) / n,
        "difference": mean,
        "difference_ci95": [mean - half, mean + half],
        "better": better,
        "worse": worse,
        "sign_test_p": sign_test(better, worse),
    }


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact sign test (ties dropped): P(a split at least this uneven | p = 1/2)."""
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(better, worse) + 1)) / 2**n
    return min(1.0, 2 * tail)
