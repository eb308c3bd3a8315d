"""How many games a step plays when `samples_per_step` sizes it (SPIRAL trains on a fixed
number of turn samples per step, not a fixed number of games).

A game's length is not known before it is played (a Kuhn Poker hand gives the learner 2-3
turns in self-play, a TicTacToe game 5-9), so games are played in waves:

1. the share of each game env is `samples_per_step` split evenly (`sample_shares`: envs
   listed first take the remainder), so a multi-game run trains on every game alike;
2. the first wave of an env plays `share / guess` games (rounded up), the guess being
   `FIRST_WAVE_TURNS` moved into the range of learner turns a game of that env can give
   (`first_wave_turns`: a Simple Negotiation game in choice-mode self-play always gives
   ten, so its first wave is exactly the 13 games a step keeps, not 16); every later wave
   plays enough games to cover the shortfall at the mean turns per game seen so far, plus
   one (`wave_size`), until the env's learner turns reach its share;
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


def learner_turn_range(fewest: int, most: int, *, num_players: int, learner_seats: int) -> tuple[int, int]:
    """The fewest and most learner turns a game of `fewest`..`most` player turns gives when the
    learner holds `learner_seats` of its `num_players` seats (turns taken in rotation; a
    guess, which only sizes the first wave, for games that do not rotate)."""
    if learner_seats >= num_players:
        return fewest, most
    return fewest * learner_seats // num_players, -(-most * learner_seats // num_players)


def first_wave_turns(fewest: int, most: int) -> int:
    """The first wave's guess of learner turns per game: `FIRST_WAVE_TURNS`, raised to the
    fewest a game can give and lowered to the most (a game of fixed length gets its length)."""
    return max(1, min(max(FIRST_WAVE_TURNS, fewest), most))


def wave_size(share: int, turns: list[int], first_guess: int = FIRST_WAVE_TURNS) -> int:
    """Games the next wave plays for an env whose played games gave `turns` learner turns each
    (0 when the share is reached); the first wave guesses `first_guess` turns a game."""
    shortfall = share - sum(turns)
    if shortfall <= 0:
        return 0
    if not turns:
        return math.ceil(share / first_guess)
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
