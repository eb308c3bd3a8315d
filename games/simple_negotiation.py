"""Simple Negotiation: two players trade Wood and Gold for a fixed number of turns.

SPIRAL's rules. Both players start with 10 Wood and 10 Gold. Player 0 values Wood at 5
and Gold at 15 per unit; player 1 values Wood at 15 and Gold at 5, so both gain by
trading player 0's Wood for player 1's Gold. Players alternate, player 0 first; on a turn
a player either makes an offer to the other player, or answers the offer made to them:
accept (the trade happens at once) or deny. A new offer implicitly denies the pending one.
After `max_turns` turns (default 10) the game ends and an offer still open lapses; the
player whose inventory value grew more wins (+1 / -1), equal gains are a draw (0 / 0).
There are no chance nodes.

Every move is an integer action, so that the game has a fixed action space with canonical
text (SPIRAL matched free-form offers against nothing, and models almost never produced a
legal one):

    0                "[Accept]"
    1                "[Deny]"
    2 ..             offers, "[Offer: 3 Wood -> 5 Gold]" (give side before "->")

An offer is `Offer(give_wood, give_gold, get_wood, get_gold)`, each 0..`max_quantity`
(default 10), with a non-empty give side and a non-empty get side and no resource on both
sides. Any net trade of the two resources is one such swap, so these are every offer
worth making: `max_quantity**2` Wood-for-Gold plus as many Gold-for-Wood offers. Offers
take ids 2, 3, ... in lexicographic order of `(give_wood, give_gold, get_wood, get_gold)`,
which puts the Gold-for-Wood offers first: id 2 is "[Offer: 1 Gold -> 1 Wood]".
`SimpleNegotiationGame.offer_from_action` and `.action_from_offer` convert both ways.

An offer is legal only if the offerer has what it gives and the other player has what it
asks for. Accept and Deny are legal only while an offer is pending to the player to move.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

from games.base import TERMINAL_PLAYER, Game, State, check_player

NUM_PLAYERS = 2
RESOURCES = ("Wood", "Gold")
START_INVENTORY = (10, 10)  # (wood, gold) of each player at the start
VALUES = ((5, 15), (15, 5))  # VALUES[player] = (value of one wood, value of one gold)
ACCEPT = 0
DENY = 1
FIRST_OFFER_ACTION = 2
MAX_QUANTITY_LIMIT = NUM_PLAYERS * max(START_INVENTORY)
"""No player can ever hold more of a resource than both players start with together."""


class Offer(NamedTuple):
    """What the offerer gives and what it asks for in return."""

    give_wood: int
    give_gold: int
    get_wood: int
    get_gold: int

    @property
    def give(self) -> tuple[int, int]:
        return self.give_wood, self.give_gold

    @property
    def get(self) -> tuple[int, int]:
        return self.get_wood, self.get_gold


def format_offer(offer: Offer) -> str:
    """Canonical text of an offer: "[Offer: 3 Wood -> 5 Gold]", zero quantities omitted."""
    return f"[Offer: {_bundle_text(offer.give)} -> {_bundle_text(offer.get)}]"


def _bundle_text(bundle: tuple[int, int]) -> str:
    return " + ".join(f"{n} {name}" for n, name in zip(bundle, RESOURCES) if n)


def _holding_text(inventory: tuple[int, int]) -> str:
    return " and ".join(f"{n} {name}" for n, name in zip(inventory, RESOURCES))


def _is_valid_offer(offer: Offer) -> bool:
    gives_something = offer.give_wood > 0 or offer.give_gold > 0
    asks_something = offer.get_wood > 0 or offer.get_gold > 0
    same_resource = (offer.give_wood > 0 and offer.get_wood > 0) or (
        offer.give_gold > 0 and offer.get_gold > 0
    )
    return gives_something and asks_something and not same_resource


def inventory_value(player: int, inventory: tuple[int, int]) -> int:
    """What `inventory` (wood, gold) is worth to `player`."""
    wood_value, gold_value = VALUES[player]
    return inventory[0] * wood_value + inventory[1] * gold_value


class SimpleNegotiationGame(Game):
    """Simple Negotiation over `max_turns` turns with offers of up to `max_quantity` units.

    An observation is four short lines: who the player is and its values, the turn and both
    inventories, and the offer pending to the player in plain words ("Player 1 offers you
    2 Gold for 5 Wood"). The inventories, the pending offer and the turns left decide
    everything that can still happen (every move is public and there is no chance), so
    the observation says nothing else by default, and says it briefly: a prompt's tokens
    are what a training step pays for, in the rollout and again, forward and backward,
    in the learner (a step's ~130 turns are ~130 distinct prompts).

    `shown_moves` (default 0) adds a line with that many of the latest moves (None: every
    move, as SPIRAL's transcript does); each listed move costs about 12 tokens at every
    later turn. The game is the same either way.

    `offer_notes=True` adds, as the `decision_note` of a player an offer is pending to (the
    prompt's last line, right before the answer), what accepting it would do: both
    players' gains after the trade and whether the player would then be ahead, behind or
    level. Deciding that from the offer text takes arithmetic on two values per resource,
    which a small model does not do reliably, so the notes set the accept/deny decision
    apart the way Kuhn Poker's `card_notes` set the cards apart. Off by default (SPIRAL's
    prompt); the game is the same either way.
    """

    name = "simple_negotiation"

    def __init__(self, max_turns: int = 10, max_quantity: int = 10, shown_moves: int | None = 0, offer_notes: bool = False):
        if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(
                f"simple_negotiation: max_turns must be an integer >= 1, got {max_turns!r}"
            )
        if (
            isinstance(max_quantity, bool)
            or not isinstance(max_quantity, int)
            or not 1 <= max_quantity <= MAX_QUANTITY_LIMIT
        ):
            raise ValueError(
                "simple_negotiation: max_quantity must be an integer in "
                f"1..{MAX_QUANTITY_LIMIT} (the most of one resource a player can hold), "
                f"got {max_quantity!r}"
            )
        if shown_moves is not None and (isinstance(shown_moves, bool) or not isinstance(shown_moves, int) or shown_moves < 0):
            raise ValueError(
                f"simple_negotiation: shown_moves must be an integer >= 0 or null (every move), got {shown_moves!r}"
            )
        if not isinstance(offer_notes, bool):
            raise ValueError(f"simple_negotiation: offer_notes must be true or false, got {offer_notes!r}")
        self.max_turns = max_turns
        self.max_quantity = max_quantity
        self.shown_moves = shown_moves
        self.offer_notes = offer_notes
        quantities = range(max_quantity + 1)
        self._offers: tuple[Offer, ...] = tuple(
            offer
            for offer in itertools.starmap(Offer, itertools.product(quantities, repeat=4))
            if _is_valid_offer(offer)
        )
        self._offer_ids = {offer: FIRST_OFFER_ACTION + i for i, offer in enumerate(self._offers)}

    def num_players(self) -> int:
        return NUM_PLAYERS

    def num_distinct_actions(self) -> int:
        return FIRST_OFFER_ACTION + len(self._offers)

    def max_game_length(self) -> int:
        return self.max_turns

    def min_game_length(self) -> int:
        return self.max_turns  # an accepted offer does not end the game

    def params(self) -> dict:
        shown = {} if self.shown_moves == 0 else {"shown_moves": self.shown_moves}
        notes = {"offer_notes": True} if self.offer_notes else {}
        return {"max_turns": self.max_turns, "max_quantity": self.max_quantity, **shown, **notes}

    def new_initial_state(self) -> "SimpleNegotiationState":
        return SimpleNegotiationState(self)

    # -- the action space -------------------------------------------------------------
    def offer_actions(self) -> range:
        """Ids of all offers, in their documented order."""
        return range(FIRST_OFFER_ACTION, self.num_distinct_actions())

    def offer_from_action(self, action: int) -> Offer:
        """The offer with id `action`; ValueError for Accept, Deny or an unknown id."""
        if not (isinstance(action, int) and action in self.offer_actions()):
            raise ValueError(
                f"simple_negotiation: offer ids are {FIRST_OFFER_ACTION}.."
                f"{self.num_distinct_actions() - 1}, got {action!r}"
            )
        return self._offers[action - FIRST_OFFER_ACTION]

    def action_from_offer(self, offer: tuple[int, int, int, int]) -> int:
        """The id of `offer` (any 4-tuple give_wood, give_gold, get_wood, get_gold)."""
        action = self._offer_ids.get(tuple(offer))
        if action is None:
            raise ValueError(
                f"simple_negotiation: {offer!r} is not an offer; an offer is (give_wood, "
                f"give_gold, get_wood, get_gold), each 0..{self.max_quantity}, giving one "
                "resource for some of the other"
            )
        return action

    def action_text(self, action: int) -> str:
        """Canonical text of any action id (the same in every state)."""
        if action == ACCEPT:
            return "[Accept]"
        if action == DENY:
            return "[Deny]"
        return format_offer(self.offer_from_action(action))


class SimpleNegotiationState(State):
    def __init__(self, game: SimpleNegotiationGame):
        super().__init__(game)
        self._inventories = [list(START_INVENTORY) for _ in range(NUM_PLAYERS)]
        self._pending: tuple[int, Offer] | None = None  # (offerer, offer)

    # -- whose turn -----------------------------------------------------------------
    def current_player(self) -> int:
        if len(self._history) >= self.game.max_turns:
            return TERMINAL_PLAYER
        return len(self._history) % NUM_PLAYERS

    # -- moves ------------------------------------------------------------------------
    def _legal_actions(self) -> list[int]:
        player = self.current_player()
        mine, theirs = self._inventories[player], self._inventories[1 - player]
        # The only pending offer is always the one the other player just made to us.
        actions = [ACCEPT, DENY] if self._pending is not None else []
        for action, (give_wood, give_gold, get_wood, get_gold) in enumerate(
            self.game._offers, FIRST_OFFER_ACTION
        ):
            if (
                give_wood <= mine[0]
                and give_gold <= mine[1]
                and get_wood <= theirs[0]
                and get_gold <= theirs[1]
            ):
                actions.append(action)
        return actions

    def _apply_action(self, action: int) -> None:
        player = self.current_player()
        if action == ACCEPT:
            offerer, offer = self._pending
            # Nothing changes inventories between an offer and its answer, so the trade
            # the offer was checked against is still possible.
            giver, taker = self._inventories[offerer], self._inventories[1 - offerer]
            for r in range(len(RESOURCES)):
                giver[r] += offer.get[r] - offer.give[r]
                taker[r] += offer.give[r] - offer.get[r]
            self._pending = None
        elif action == DENY:
            self._pending = None
        else:
            self._pending = (player, self.game.offer_from_action(action))
        if len(self._history) + 1 == self.game.max_turns:
            self._pending = None  # an offer still open when the turns run out lapses

    def action_to_string(self, action: int) -> str:
        return self.game.action_text(action)

    # -- outcome ----------------------------------------------------------------------
    def returns(self) -> list[float]:
        if not self.is_terminal():
            return [0.0, 0.0]
        gain0, gain1 = self.gain(0), self.gain(1)
        if gain0 == gain1:
            return [0.0, 0.0]
        return [1.0, -1.0] if gain0 > gain1 else [-1.0, 1.0]

    def inventory(self, player: int) -> tuple[int, int]:
        """(wood, gold) that `player` holds now."""
        check_player(self, player)
        return tuple(self._inventories[player])

    def gain(self, player: int) -> int:
        """How much `player`'s inventory value has grown since the start (may be < 0)."""
        return inventory_value(player, self.inventory(player)) - inventory_value(
            player, START_INVENTORY
        )

    def score_margin(self, player: int) -> float:
        """`player`'s gain minus the other's, over `20 * max_quantity`.

        With these values the difference of gains is 10 times the difference of the units
        the two hold, so a trade of q units for q' moves the receiver's margin by
        `(q - q') / max_quantity` (at most just under 1). Its sign at the end is the
        outcome's.
        """
        check_player(self, player)
        return (self.gain(player) - self.gain(1 - player)) / (20 * self.game.max_quantity)

    def pending_offer(self) -> tuple[int, Offer] | None:
        """(offerer, offer) awaiting an answer from the player to move, or None."""
        return self._pending

    def turns_played(self) -> int:
        return len(self._history)

    # -- per-player views -------------------------------------------------------------
    def information_state_string(self, player: int) -> str:
        # Every move is public and the rules fix everything else, so a player's
        # information set is the asking player plus the full move sequence.
        check_player(self, player)
        return f"{player}:" + ",".join(map(str, self._history))

    def observation_string(self, player: int) -> str:
        check_player(self, player)
        other = 1 - player
        wood_value, gold_value = VALUES[player]
        mine, theirs = self.inventory(player), self.inventory(other)
        played, total = self.turns_played(), self.game.max_turns
        lines = [
            f"You are Player {player}; a Wood is worth {wood_value} to you, a Gold {gold_value}.",
            (f"Turn {played + 1} of {total}." if played < total else f"All {total} turns played.")
            + f" You hold {_holding_text(mine)} (gain {self.gain(player):+d});"
            f" Player {other} holds {_holding_text(theirs)}.",
        ]
        shown = len(self._history) if self.game.shown_moves is None else min(self.game.shown_moves, len(self._history))
        if shown:
            moves = (
                f"{'you' if turn % NUM_PLAYERS == player else f'Player {other}'} {self.game.action_text(self._history[turn])}"
                for turn in range(len(self._history) - shown, len(self._history))
            )
            label = "Moves so far" if shown == len(self._history) else f"Last {shown} move{'s' if shown > 1 else ''}"
            lines.append(f"{label}: {'; '.join(moves)}.")
        if self._pending is not None:
            offerer, offer = self._pending
            trade = f"{_bundle_text(offer.give)} for {_bundle_text(offer.get)}"
            lines.append(f"You offer Player {other} {trade}." if offerer == player else f"Player {offerer} offers you {trade}.")
        if self.is_terminal():
            outcome = self.returns()[player]
            verdict = "You win" if outcome > 0 else "You lose" if outcome < 0 else "A draw"
            lines.append(
                f"Game over. Your gain {self.gain(player):+d}, "
                f"Player {other}'s gain {self.gain(other):+d}: {verdict}."
            )
        elif self.current_player() != player:
            lines.append(f"Player {other} is to move.")
        return "\n".join(lines)

    def legal_actions_text(self, player: int) -> str:
        """``[Accept], [Deny], [Offer: N Gold -> M Wood], [Offer: N Wood -> M Gold] (N, M from 1
        to 10, at most what each side holds)``: a pattern for each resource `player` can give
        and the other can pay with, and one fixed range note. The ranges derived from the
        legal offers (``N from 1 to 8; M from 1 to 10``) would change with every trade."""
        mine, theirs = self.inventory(player), self.inventory(1 - player)
        answers = ["[Accept]", "[Deny]"] if self._pending is not None else []
        # Gold-for-Wood first, as the legal offers are numbered (`SimpleNegotiationGame._offers`)
        offers = [
            f"[Offer: N {RESOURCES[give]} -> M {RESOURCES[get]}]"
            for give, get in ((1, 0), (0, 1))
            if mine[give] > 0 and theirs[get] > 0
        ]
        note = f" (N, M from 1 to {self.game.max_quantity}, at most what each side holds)" if offers else ""
        return ", ".join(answers + offers) + note

    def accepted(self) -> "SimpleNegotiationState":
        """A copy of this state with the pending offer accepted (the trade done by the rules
        themselves), for notes and analysis that ask what accepting would change."""
        if self._pending is None or self.is_terminal():
            raise ValueError("simple_negotiation: no offer is pending to accept")
        twin = self.clone()
        twin.apply_action(ACCEPT)
        return twin

    def decision_note(self, player: int) -> str:
        if not self.game.offer_notes or self._pending is None or self._pending[0] == player:
            return ""
        return self._acceptance_note(player)

    def _acceptance_note(self, player: int) -> str:
        """What accepting the offer pending to `player` would leave both players' gains at."""
        other, after = 1 - player, self.accepted()
        my_gain, their_gain = after.gain(player), after.gain(other)
        lead = my_gain - their_gain
        standing = f"ahead by {lead}" if lead > 0 else f"behind by {-lead}" if lead < 0 else "level"
        return (
            f"If you accept: your gain becomes {my_gain:+d}, Player {other}'s {their_gain:+d} "
            f"(you would be {standing})."
        )

    def clone(self) -> "SimpleNegotiationState":
        twin = SimpleNegotiationState.__new__(SimpleNegotiationState)
        twin.game = self.game
        twin._history = self._history.copy()
        twin._inventories = [inventory.copy() for inventory in self._inventories]
        twin._pending = self._pending
        return twin
