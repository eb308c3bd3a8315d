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
"""

from __future__ import annotations

GAME_REWARDS = ("outcome", "margin")
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
    for sample in samples:
        # a forfeit or a truncated game pays the penalties as its whole outcome
        penalty = outcome[sample.role] - game_returns[sample.role]
        sample.reward = margin_now(env, sample.role) - sample.info[MARGIN_KEY] + penalty
    return outcome
