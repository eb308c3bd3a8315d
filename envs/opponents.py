"""Fixed opponents for evaluation and single-agent views of multi-player games.

An `Opponent` states its action probabilities in a state for the player to move, and
`act` samples from them with the caller's `random.Random`. Stating probabilities (not
only sampling) lets the exact analysis of `games.analysis` evaluate an opponent
(`tabular_policy(game, opponent.action_probabilities)`), which is how the tests pin
their strength to exact numbers. Every `act` draws exactly one `rng.random()`, so the
same seed gives the same game whichever opponent plays.

Opponents use only what their player may know: the Kuhn Poker rules read the player's
own card from its information state string; the Tic-tac-toe and negotiation rules read
public information (the move history, the inventories, the pending offer, the values
fixed by the rules).

    >>> opponent = make_opponent("rule_based", games.load("kuhn_poker"))
    >>> action = opponent.act(state, state.current_player(), random.Random(0))
"""

from __future__ import annotations

import abc
import random
import zlib

from games import Game, State
from games.analysis import cfr
from games.kuhn_poker import Action, KuhnPokerGame
from games.simple_negotiation import ACCEPT, DENY, VALUES
from games.tic_tac_toe import EMPTY, LINES

OPPONENT_NAMES = ("random", "rule_based", "equilibrium")
"""The opponents of the built-in games."""
LIBRARY_OPPONENTS = ("mcts",)
"""Opponents of adapter games only (OpenSpiel's MCTS bot for perfect-information games)."""
ALL_OPPONENTS = OPPONENT_NAMES + LIBRARY_OPPONENTS


class Opponent(abc.ABC):
    """A fixed policy for whichever player is to move."""

    name: str = ""

    @abc.abstractmethod
    def action_probabilities(self, state: State, player: int) -> dict[int, float]:
        """`{action: probability}` over legal actions of `player`, who is to move."""

    def act(self, state: State, player: int, rng: random.Random) -> int:
        """A legal action for `player`, sampled with one draw from `rng`."""
        if state.current_player() != player:
            raise ValueError(
                f"{self.name} opponent asked to act for player {player}, "
                f"but the player to move is {state.current_player()}"
            )
        draw = rng.random()
        cumulative = 0.0
        chosen = None
        for action, probability in sorted(self.action_probabilities(state, player).items()):
            if probability > 0:
                chosen = action
                cumulative += probability
                if draw < cumulative:
                    break
        return chosen  # the last positive action absorbs rounding in the cumulative sum

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomOpponent(Opponent):
    """Uniform over the legal actions (SPIRAL's random baseline)."""

    name = "random"

    def action_probabilities(self, state: State, player: int) -> dict[int, float]:
        legal = state.legal_actions()
        return {a: 1.0 / len(legal) for a in legal}


# -- rule-based play, one function per game ----------------------------------------------

def _kuhn_poker_rule(state: State, player: int, bluff: float) -> dict[int, float]:
    """Bet or call with a King; check, then call a bet, with a Queen (a bet is as often a
    bluff with a Jack as a King); check and fold with a Jack, bluff-betting it with
    probability `bluff`. The card comes from the player's information state
    ("p|<mine><theirs or ?>:<bets>|...", the hand being played last)."""
    current_hand = state.information_state_string(player).split("|")[-1]
    card, bets = current_hand[0], current_hand.split(":")[1]
    facing_bet = "b" in bets
    if card == "K" or (card == "Q" and facing_bet):
        return {Action.PASS.value: 0.0, Action.BET.value: 1.0}
    if card == "J" and not facing_bet:
        return {Action.PASS.value: 1.0 - bluff, Action.BET.value: bluff}
    return {Action.PASS.value: 1.0, Action.BET.value: 0.0}


def _tic_tac_toe_rule(state: State, player: int) -> dict[int, float]:
    """Complete a line if possible, else block the opponent's, else take the centre, else
    a corner, else any cell; uniform among equally good cells. The board is rebuilt from
    the public move history (player 0 moves first)."""
    board = [EMPTY] * 9
    for turn, cell in enumerate(state.history()):
        board[cell] = turn % 2
    legal = state.legal_actions()

    def completing(who: int) -> list[int]:
        return [
            cell for cell in legal
            if any(cell in line and sum(board[c] == who for c in line) == 2 for line in LINES)
        ]

    for cells in (completing(player), completing(1 - player), [c for c in legal if c == 4],
                  [c for c in legal if c in (0, 2, 6, 8)], legal):
        if cells:
            break
    return {c: 1.0 / len(cells) for c in cells}


def _simple_negotiation_rule(state: State, player: int) -> dict[int, float]:
    """Accept a pending offer iff it raises the player's inventory value without putting
    it behind the other player's gain (the game is won on the larger gain, so a trade
    that helps the other side more turns a draw into a loss). Otherwise offer the legal
    trade that widens the player's lead most among those the other side also gains from
    (values are fixed by the rules, so each side knows the other's); deny if there is
    none; with no pending offer and no such trade, make the offer that costs least."""
    other = 1 - player

    def change(who: int, receives: tuple[int, int], pays: tuple[int, int]) -> int:
        wood, gold = VALUES[who]
        return wood * (receives[0] - pays[0]) + gold * (receives[1] - pays[1])

    lead = state.gain(player) - state.gain(other)
    pending = state.pending_offer()
    if pending is not None:
        _, offer = pending  # made to us: we receive its give side and pay its get side
        mine, theirs = change(player, offer.give, offer.get), change(other, offer.get, offer.give)
        if mine > 0 and lead + mine - theirs >= 0:
            return {ACCEPT: 1.0}
    best, best_key = None, None
    for action in state.legal_actions():
        if action in (ACCEPT, DENY):
            continue
        offer = state.game.offer_from_action(action)
        mine, theirs = change(player, offer.get, offer.give), change(other, offer.give, offer.get)
        acceptable = mine > 0 and theirs > 0 and lead + mine - theirs > 0
        key = (acceptable, mine - theirs if acceptable else mine, -action)
        if best_key is None or key > best_key:
            best, best_key = action, key
    if not best_key[0] and pending is not None:
        return {DENY: 1.0}
    return {best: 1.0}


RULE_BASED_GAMES = ("kuhn_poker", "simple_negotiation", "tic_tac_toe")


class RuleBasedOpponent(Opponent):
    """A simple sensible player per game (see the `_<game>_rule` functions).

    bluff: Kuhn Poker only: probability of betting a Jack when not facing a bet
        (0 = never; the equilibrium first player bluffs with up to 1/3).
    """

    name = "rule_based"

    def __init__(self, *, bluff: float = 0.0):
        if not 0.0 <= bluff <= 1.0:
            raise ValueError(f"bluff must be a probability in [0, 1], got {bluff!r}")
        self.bluff = bluff

    @staticmethod
    def supports(game: Game) -> bool:
        return game.name in RULE_BASED_GAMES

    def action_probabilities(self, state: State, player: int) -> dict[int, float]:
        name = state.game.name
        if name == "kuhn_poker":
            return _kuhn_poker_rule(state, player, self.bluff)
        if name == "tic_tac_toe":
            return _tic_tac_toe_rule(state, player)
        if name == "simple_negotiation":
            return _simple_negotiation_rule(state, player)
        raise ValueError(
            f"no rule-based opponent for game {name!r}; available for: {', '.join(RULE_BASED_GAMES)}"
        )

    def __repr__(self) -> str:
        return f"RuleBasedOpponent(bluff={self.bluff!r})"


class EquilibriumOpponent(Opponent):
    """Kuhn Poker: plays an approximate Nash equilibrium of the single hand, computed by
    CFR on construction (per instance).

    With several hands it plays the single-hand equilibrium in every hand, in the role
    (first or second to act) it has there. Hands are independent and returns add up,
    so this guarantees at least the game value in each hand whatever the opponent does,
    and is therefore an equilibrium of the whole game.
    """

    name = "equilibrium"
    supported_games = ("kuhn_poker",)

    def __init__(self, game: Game, *, iterations: int = 1000, plus: bool = True):
        if not self.supports(game):
            raise ValueError(
                f"no equilibrium opponent for game {game.name!r}; "
                f"available for: {', '.join(self.supported_games)}"
            )
        self.iterations = iterations
        self.plus = plus
        # the single-hand average policy, keyed by single-hand information states
        self.policy = cfr(KuhnPokerGame(hands=1), iterations, plus=plus)

    @classmethod
    def supports(cls, game: Game) -> bool:
        return game.name in cls.supported_games

    def action_probabilities(self, state: State, player: int) -> dict[int, float]:
        if not self.supports(state.game):
            raise ValueError(f"the equilibrium opponent plays kuhn_poker, not {state.game.name!r}")
        parts = state.information_state_string(player).split("|")
        hand_index = len(parts) - 2  # parts[0] is the player id, then one part per hand
        role = (player - hand_index) % 2  # hand i (0-based) is opened by player i % 2
        card, bets = parts[-1][0], parts[-1].split(":")[1]
        return dict(self.policy[f"{role}|{card}?:{bets}"])

    def __repr__(self) -> str:
        return f"EquilibriumOpponent(iterations={self.iterations!r}, plus={self.plus!r})"


class MCTSOpponent(Opponent):
    """OpenSpiel's MCTS bot (UCT, random rollouts) for perfect-information OpenSpiel games.

    A fixed policy: the search is seeded from `seed` and the state's history, so a position
    always gets the same move, and `action_probabilities` puts probability 1 on it (the
    exact analysis and both seats of an evaluation see one and the same player).
    """

    name = "mcts"

    def __init__(self, game: Game, *, simulations: int = 200, rollouts: int = 1, uct_c: float = 2.0, seed: int = 0):
        from envs.openspiel_env import OpenSpielGame

        if not isinstance(game, OpenSpielGame) or not game.perfect_information:
            raise ValueError(
                f"the mcts opponent plays perfect-information OpenSpiel games (openspiel:<name>), not {game.name!r}"
            )
        if simulations < 1 or rollouts < 1:
            raise ValueError(f"simulations and rollouts must be >= 1, got {simulations} and {rollouts}")
        self.game = game
        self.simulations = simulations
        self.rollouts = rollouts
        self.uct_c = uct_c
        self.seed = seed

    def action_probabilities(self, state: State, player: int) -> dict[int, float]:
        import pyspiel

        seed = zlib.crc32(f"{self.seed}|{state.spiel_state.history_str()}".encode()) & 0x7FFFFFFF
        evaluator = pyspiel.RandomRolloutEvaluator(self.rollouts, seed)
        bot = pyspiel.MCTSBot(self.game.spiel_game, evaluator, self.uct_c, self.simulations, 64, True, seed, False)
        best = bot.step(state.spiel_state)
        return {a: float(a == best) for a in state.legal_actions()}

    def __repr__(self) -> str:
        return f"MCTSOpponent(simulations={self.simulations!r}, rollouts={self.rollouts!r}, seed={self.seed!r})"


def make_opponent(name: str, game: Game, **options) -> Opponent:
    """The opponent called `name` ("random", "rule_based", "equilibrium", "mcts") for `game`.

    `options` go to the opponent's constructor (e.g. `bluff=0.2` for "rule_based",
    `iterations=2000` for "equilibrium", `simulations=400` for "mcts"). Raises ValueError
    for an unknown name or a game the opponent cannot play.
    """
    if name == "random":
        return RandomOpponent(**options)
    if name == "rule_based":
        if not RuleBasedOpponent.supports(game):
            raise ValueError(
                f"no rule-based opponent for game {game.name!r}; "
                f"available for: {', '.join(RULE_BASED_GAMES)}"
            )
        return RuleBasedOpponent(**options)
    if name == "equilibrium":
        return EquilibriumOpponent(game, **options)
    if name == "mcts":
        return MCTSOpponent(game, **options)
    raise ValueError(f"unknown opponent {name!r}; valid opponents: {', '.join(ALL_OPPONENTS)}")
