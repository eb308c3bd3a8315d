"""How many games a step plays when `samples_per_step` sizes it (SPIRAL trains on a fixed
number of turn samples per step, not a fixed number of games).

A game's length is not known before it is played (a Kuhn Poker hand gives the learner 2-3
turns in self-play, a TicTacToe game 5-9), so games are played in waves:

1. the share of each game env is `samples_per_step` split evenly (`sample_shares`: envs
   listed first take the remainder), so a multi-game run trains on every game alike;
2. the first wave of an env plays `share / FIRST_WAVE_TURNS` games (rounded up); every
   later wave plays enough games to cover the shortfall at the mean turns per game seen so
   far, plus one (`wave_size`), until the env's learner turns reach its share;
3. the step keeps each env's shortest run of games, in game order, whose learner turns
   reach the share (`games_kept`), and every turn of those games: a game is never split,
   because its return is what every one of its turns is trained on. Played games beyond
   that are dropped (at most one wave's overshoot).

A step therefore trains on at least `samples_per_step` turns and at most the share plus one
game's turns less one, per env. Everything above depends only on the games' outcomes, which
depend only on the run's seed: the same seed gives the same games and samples, on every
backend. Roles stay balanced as games do: in self-play every game trains every seat, and
against an opponent the learner's seat alternates between an env's games
(`opponent_seat=alternate`). Turns are answers: a Markovian trace's chunks count once.
"""

from __future__ import annotations

import math

DEFAULT_SAMPLES_PER_STEP = 128
"""SPIRAL's step: 128 turn samples, split over the run's games."""

FIRST_WAVE_TURNS = 8
"""The first wave's guess of learner turns per game: a short game overshoots less than a
long one undershoots costs (one more wave of sequential rounds)."""


def default_step_size(env_ids: list[str]) -> tuple[int, int]:
    """(games_per_step, samples_per_step) of a run that sets neither key.

    A game registered with its own `games_per_step` (Kuhn Poker: 512 hands, twelve states)
    keeps it when it is the run's only game; every other run trains on
    `DEFAULT_SAMPLES_PER_STEP` turn samples, so a step costs the same whatever the game's
    length (a TicTacToe game has up to nine turns over thousands of states, a negotiation
    ten). An id no registry knows is left for the run's own env check to name.
    """
    from envs import registry

    specs = []
    for env_id in env_ids:
        try:
            specs.append(registry.spec(env_id))
        except ValueError:
            continue
    games = [s for s in specs if s.kind == "game"]
    if len(games) == 1 and games[0].games_per_step:
        return games[0].games_per_step, 0
    return 0, DEFAULT_SAMPLES_PER_STEP


def sample_shares(samples: int, envs: list[str]) -> dict[str, int]:
    """`samples` split evenly over `envs`; the first `samples mod len(envs)` envs get one more
    (no share at all in a run without games)."""
    if not envs:
        return {}
    base, extra = divmod(samples, len(envs))
    return {env: base + (index < extra) for index, env in enumerate(envs)}


def wave_size(share: int, turns: list[int]) -> int:
    """Games the next wave plays for an env whose played games gave `turns` learner turns each
    (0 when the share is reached)."""
    shortfall = share - sum(turns)
    if shortfall <= 0:
        return 0
    if not turns:
        return math.ceil(share / FIRST_WAVE_TURNS)
    if not sum(turns):
        raise ValueError(f"{len(turns)} games gave the learner no turn to train on; the step cannot reach its samples")
    return math.ceil(shortfall * len(turns) / sum(turns)) + 1


def games_kept(share: int, turns: list[int]) -> int:
    """The fewest leading games whose turns reach `share` (all of them if they do not)."""
    total = 0
    for count, game_turns in enumerate(turns, start=1):
        total += game_turns
        if total >= share:
            return count
    return len(turns)
