"""What a game's turn samples are trained on (the ``reward`` key).

``outcome`` (the default, SPIRAL's): every turn of a player gets that player's return in
its game, penalties for invalid answers included.

``margin``: every turn gets how much its player's score margin (`State.score_margin`:
how far the player is ahead of the others, on the game's own scale) grew from just
before that turn to the end of the game, plus the same invalid-answer penalties. Where
the outcome is decided by who is ahead at the end (Simple Negotiation: the larger gain
in inventory value wins), the margin is that outcome before it is rounded to win, draw
or loss, so a turn is credited with what it changed by how much, and not with what
happened before it (which it could not change). A self-play run on win/draw/loss drifts
to games nobody wins (every drawn game trains on nothing, docs/learning_runs); the
margin still tells a fair trade from a good one. Evaluation and the logged returns stay
the game's win/draw/loss outcome whatever is trained on.

``turn_margin``: every turn gets how much its player's margin grew from just before that
turn to just before the same player's next turn (to the end, for its last turn), plus the
same penalties: what the turn itself and the reply to it did, and nothing that came
after. The margin to the end is the sum of these, so ``margin`` is ``turn_margin``
undiscounted over a player's turns and this is it with discount 0. In a game where each
move's worth is settled at once (accepting a trade, an offer accepted or not in the
reply) it is the turn's own credit without the noise of every later trade. (A self-play
run on ``margin`` learnt to accept every offer, good or bad; in the few steps run so far
``turn_margin`` did not teach the model to tell them apart either: docs/learning_runs.)
"""

from __future__ import annotations

from trainers.learning.samples import TURN_KEY

GAME_REWARDS = ("outcome", "margin", "turn_margin")
MARGIN_KEY = "margin_before"
"""``sample.info`` key: the player's score margin just before its turn (``reward=margin``)."""


def has_margin(game) -> bool:
    """Whether `game`'s states define a score margin (``reward=margin`` needs one)."""
    score_margin = getattr(game.new_initial_state(), "score_margin", None)  # envs outside games.base (TextArena) have none
    return score_margin is not None and score_margin(0) is not None


def margin_now(env, player: int) -> float:
    """`player`'s score margin in the env's game as it stands."""
    return float(env.state.score_margin(player))


def assign_rewards(env, samples, reward: str) -> list[float]:
    """Set every sample's reward for a finished game; return the game's outcome per seat.

    The outcome (``env.episode_returns()``) is what results and evaluation report in
    either mode.
    """
    outcome = env.episode_returns()
    if reward == "outcome":
        for sample in samples:
            sample.reward = outcome[sample.role]
        return outcome
    state = env.state
    game_returns = state.returns() if state.is_terminal() else [0.0] * len(outcome)
    margin_after = _margin_after_each_turn(env, samples) if reward == "turn_margin" else None
    for sample in samples:
        # a forfeit or a truncated game pays the penalties as its whole outcome
        penalty = outcome[sample.role] - game_returns[sample.role]
        after = margin_now(env, sample.role) if margin_after is None else margin_after[sample.role, sample.info[TURN_KEY]]
        sample.reward = after - sample.info[MARGIN_KEY] + penalty
    return outcome


def _margin_after_each_turn(env, samples) -> dict[tuple[int, int], float]:
    """``{(player, turn): the player's margin just before its next turn}`` (the final margin
    after its last turn); a chained turn's part samples share their turn's entry."""
    before: dict[int, dict[int, float]] = {}
    for sample in samples:
        before.setdefault(sample.role, {})[sample.info[TURN_KEY]] = sample.info[MARGIN_KEY]
    after = {}
    for player, margins in before.items():
        turns = sorted(margins)
        for turn, following in zip(turns, turns[1:]):
            after[player, turn] = margins[following]
        after[player, turns[-1]] = margin_now(env, player)
    return after
