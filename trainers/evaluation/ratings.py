"""Elo ratings from match results, fitted by maximum likelihood (Bradley-Terry).

Players are named: the fixed opponents (``random``, ``rule_based``, ``equilibrium``) and
the policy as it was at a step (``step_00000040``; a league snapshot taken at that step is
the same player). Every evaluation adds its games to one table of pairwise results; the
ratings are the Bradley-Terry fit of the whole table on the Elo scale,

    P(i beats j) = 1 / (1 + 10 ** ((R_j - R_i) / 400)),

with a draw counted as half a win for each side. Fitting the whole table, instead of
updating game by game, makes the ratings independent of the order games were played in.
One virtual draw is added to every pair that has met, so a player that won every game
gets a large but finite rating. The anchor (``random`` when present) is fixed at 1000.
"""

from __future__ import annotations

import math

ANCHOR = "random"
ANCHOR_RATING = 1000.0
VIRTUAL_DRAWS = 1.0
_ITERATIONS = 2000
_TOLERANCE = 1e-10


class Ratings:
    """Accumulated pairwise results and their Elo fit; JSON-able state for checkpoints."""

    def __init__(self):
        self.results: dict[tuple[str, str], list[float]] = {}
        """(a, b) with a < b -> [a's score sum, games], a's score being 1 per win and 0.5 per draw."""

    def record(self, player: str, opponent: str, wins: float, draws: float, losses: float) -> None:
        """Add `player`'s wins, draws and losses against `opponent`."""
        if player == opponent:
            raise ValueError(f"a player cannot be rated against itself ({player!r})")
        if min(wins, draws, losses) < 0:
            raise ValueError("wins, draws and losses must be >= 0")
        games = wins + draws + losses
        score = wins + 0.5 * draws
        key, mine = ((player, opponent), score) if player < opponent else ((opponent, player), games - score)
        entry = self.results.setdefault(key, [0.0, 0.0])
        entry[0] += mine
        entry[1] += games

    def players(self) -> list[str]:
        return sorted({name for pair in self.results for name in pair})

    def fit(self) -> dict[str, float]:
        """Elo rating of every player (Bradley-Terry maximum likelihood, minorise-maximise iterations)."""
        players = self.players()
        if not players:
            return {}
        index = {name: i for i, name in enumerate(players)}
        wins = [0.0] * len(players)
        pairs = []
        for (a, b), (score_a, games) in self.results.items():
            if games <= 0:
                continue
            total = games + VIRTUAL_DRAWS
            wins[index[a]] += score_a + 0.5 * VIRTUAL_DRAWS
            wins[index[b]] += games - score_a + 0.5 * VIRTUAL_DRAWS
            pairs.append((index[a], index[b], total))
        strength = [1.0] * len(players)
        for _ in range(_ITERATIONS):
            denominators = [0.0] * len(players)
            for i, j, total in pairs:
                share = total / (strength[i] + strength[j])
                denominators[i] += share
                denominators[j] += share
            updated = [w / d if d > 0 else s for w, d, s in zip(wins, denominators, strength)]
            norm = math.exp(sum(math.log(s) for s in updated) / len(updated))
            updated = [s / norm for s in updated]
            change = max(abs(math.log(u) - math.log(s)) for u, s in zip(updated, strength))
            strength = updated
            if change < _TOLERANCE:
                break
        anchor = ANCHOR if ANCHOR in index else players[0]
        offset = ANCHOR_RATING - 400 * math.log10(strength[index[anchor]])
        return {name: offset + 400 * math.log10(strength[index[name]]) for name in players}

    def state_dict(self) -> dict:
        return {"results": [[a, b, score, games] for (a, b), (score, games) in sorted(self.results.items())]}

    def load_state_dict(self, state: dict) -> None:
        self.results = {(a, b): [score, games] for a, b, score, games in state["results"]}


def policy_name(step: int) -> str:
    """The rating name of the policy as it was at `step` (a league snapshot of that step shares it)."""
    return f"step_{step:08d}"
