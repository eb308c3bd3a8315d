"""The environments that ship with the suite, registered in one place.

Rules that depend on a game's parameters are functions of the game, so that the prompt
states the game actually played (e.g. `envs.make("simple_negotiation", max_turns=4)`
says 4 turns).
"""

from __future__ import annotations

from envs.registry import register
from games.simple_negotiation import START_INVENTORY, SimpleNegotiationGame

KUHN_POKER_RULES = (
    "Kuhn Poker uses three cards: J < Q < K. Each player antes 1 chip and gets one card; "
    "the other card stays hidden. Without a bet on the table you may [check] or [bet] "
    "(1 chip). Facing a bet you may [fold] (give up the pot) or [call] (match the bet). "
    "If both check, or a bet is called, the higher card wins the pot. "
    "Win as many chips as you can."
)

TIC_TAC_TOE_RULES = (
    "Two players take turns marking an empty cell of a 3x3 board; Player 0 plays X and "
    "moves first, Player 1 plays O. Cells are numbered 0-8 row by row. Three of your marks "
    "in a row, column or diagonal win; a full board without a line is a draw."
)


def simple_negotiation_rules(game: SimpleNegotiationGame) -> str:
    """The rules of `game`, with its starting inventory and number of turns."""
    wood, gold = START_INVENTORY
    turns = f"{game.max_turns} turn{'' if game.max_turns == 1 else 's'}"
    return (
        f"Two players trade Wood and Gold. Each starts with {wood} Wood and {gold} Gold but "
        "values them differently (your values are shown below). On your turn make an offer "
        "([Offer: what you give -> what you get]), [Accept] the offer made to you, or [Deny] "
        f"it; a new offer replaces the pending one. After {turns} the player whose inventory "
        "value grew more wins; equal gains are a draw."
    )


register(
    "kuhn_poker",
    game="kuhn_poker",
    title="Kuhn Poker",
    rules=KUHN_POKER_RULES,
    description="Kuhn Poker (hands=1 is OpenSpiel's game; hands=N plays N hands, chips decide).",
    games_per_step=512,
)
register(
    "tic_tac_toe",
    game="tic_tac_toe",
    title="Tic-Tac-Toe",
    rules=TIC_TAC_TOE_RULES,
    description="TicTacToe; win +1, loss -1, draw 0.",
)
register(
    "simple_negotiation",
    game="simple_negotiation",
    title="Simple Negotiation",
    rules=simple_negotiation_rules,
    description="SPIRAL's two-resource trading game; the larger value gain wins.",
)
register(
    "sat",
    entry_point="envs.sat:SatEnv",
    description="Saturn SAT task: find a satisfying assignment (single-agent, Gymnasium).",
)
