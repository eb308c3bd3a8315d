"""Kuhn Poker: the smallest poker, over one or several hands.

Three cards J < Q < K, one dealt to each of two players, ante 1 chip each. A player may
check or bet 1; facing a bet, fold or call. Check-check or a call goes to showdown, where
the higher card wins the pot. With `hands=1` this is exactly OpenSpiel's `kuhn_poker`
(same chance nodes, action ids, terminal histories and returns; game value -1/18 for the
first player). With `hands=N` the players play N hands, the first player alternating
(player 0 opens hand 1), and the returns are the chips each won over all hands, so the
game stays zero-sum. This fixes SPIRAL's multi-hand variant, which took the winner of the
last hand as the winner of the game and never moved the bet into the pot.
"""

from __future__ import annotations

import enum

from games.base import CHANCE_PLAYER, TERMINAL_PLAYER, Game, State, check_player

NUM_PLAYERS = 2
CARDS = "JQK"
ANTE = 1
BET_SIZE = 1


class Action(enum.IntEnum):
    PASS = 0  # check, or fold when facing a bet
    BET = 1  # bet, or call when facing a bet


PASS, BET = int(Action.PASS), int(Action.BET)  # plain ints for the hot paths


CARD_NOTES = {
    "J": "the lowest card: it wins no showdown",
    "Q": "the middle card: it beats J and loses to K",
    "K": "the highest card: it wins every showdown",
}
"""What each card is worth at a showdown, in words (`card_notes=True`)."""


class KuhnPokerGame(Game):
    """Kuhn Poker over `hands` hands (1 = the classic game).

    `card_notes=True` (the default) writes after the player's card what it is worth at a
    showdown (``Your card: J (the lowest card: it wins no showdown).``). The rules say the
    same; a small model whose states differ by one token ("J" or "K") may not tell them
    apart, and the words give each card its own, longer description (SmolLM2-135M's main
    job over three seeds: final exploitability 0.102 (0.097 to 0.120) with the notes,
    0.124 (0.123 to 0.210) without; docs/learning_runs). `card_notes=False` writes the
    card alone, as SPIRAL's prompt does. The game is the same either way.
    """

    name = "kuhn_poker"

    def __init__(self, hands: int = 1, card_notes: bool = True):
        if isinstance(hands, bool) or not isinstance(hands, int) or hands < 1:
            raise ValueError(f"kuhn_poker: hands must be an integer >= 1, got {hands!r}")
        if not isinstance(card_notes, bool):
            raise ValueError(f"kuhn_poker: card_notes must be true or false, got {card_notes!r}")
        self.hands = hands
        self.card_notes = card_notes

    def num_players(self) -> int:
        return NUM_PLAYERS

    def num_distinct_actions(self) -> int:
        return len(Action)

    def max_game_length(self) -> int:
        return 3 * self.hands

    def min_game_length(self) -> int:
        return 2 * self.hands  # check-check, bet-fold or bet-call

    def max_utility(self) -> float:
        return float((ANTE + BET_SIZE) * self.hands)

    def params(self) -> dict:
        return {"hands": self.hands, **({} if self.card_notes else {"card_notes": False})}

    def new_initial_state(self) -> "KuhnPokerState":
        return KuhnPokerState(self)


class _Hand:
    """The cards and bets of one hand; `first` is the player who acts first."""

    __slots__ = ("first", "cards", "bets")

    def __init__(self, first: int):
        self.first = first
        self.cards: list[int] = []  # cards[p] = rank of player p's card (dealt p0 then p1)
        self.bets: list[int] = []  # player actions in order, starting with `first`

    def to_act(self) -> int:
        return (self.first + len(self.bets)) % NUM_PLAYERS

    def is_over(self) -> bool:
        b = self.bets
        return len(b) == 3 or (len(b) == 2 and not (b[0] == PASS and b[1] == BET))

    def facing_bet(self) -> bool:
        return BET in self.bets

    def is_showdown(self) -> bool:
        """True when the hand ended without a fold (both cards are shown)."""
        return self.is_over() and not (self.bets[-1] == PASS and BET in self.bets)

    def result(self) -> tuple[int, int]:
        """(winner, chips the winner takes from the loser) of a finished hand."""
        if self.is_showdown():
            winner = 0 if self.cards[0] > self.cards[1] else 1
            called = BET in self.bets
            return winner, ANTE + (BET_SIZE if called else 0)
        folder = (self.first + len(self.bets) - 1) % NUM_PLAYERS
        return 1 - folder, ANTE


class KuhnPokerState(State):
    def __init__(self, game: KuhnPokerGame):
        super().__init__(game)
        self._hands: list[_Hand] = [_Hand(first=0)]
        self._chips = [0, 0]
        self._player = CHANCE_PLAYER  # kept up to date by _apply_action (hot path)

    # -- whose turn -----------------------------------------------------------------
    def current_player(self) -> int:
        return self._player

    def is_chance_node(self) -> bool:
        return self._player == CHANCE_PLAYER

    def is_terminal(self) -> bool:
        return self._player == TERMINAL_PLAYER

    def _next_player(self) -> int:
        hand = self._hands[-1]
        if len(hand.cards) < NUM_PLAYERS:
            return CHANCE_PLAYER
        if hand.is_over():
            return TERMINAL_PLAYER  # a finished non-final hand is replaced at once
        return hand.to_act()

    # -- moves ------------------------------------------------------------------------
    def _legal_actions(self) -> list[int]:
        return [PASS, BET]

    def is_legal(self, action: int) -> bool:
        if self._player >= 0:
            return action == 0 or action == 1
        return action in self.legal_actions()

    def chance_outcomes(self) -> list[tuple[int, float]]:
        if not self.is_chance_node():
            raise ValueError("chance_outcomes() called outside a chance node")
        remaining = [c for c in range(len(CARDS)) if c not in self._hands[-1].cards]
        return [(c, 1.0 / len(remaining)) for c in remaining]

    def _apply_action(self, action: int) -> None:
        hand = self._hands[-1]
        if len(hand.cards) < NUM_PLAYERS:
            hand.cards.append(action)
        else:
            hand.bets.append(action)
            if hand.is_over():
                winner, amount = hand.result()
                self._chips[winner] += amount
                self._chips[1 - winner] -= amount
                if len(self._hands) < self.game.hands:
                    self._hands.append(_Hand(first=len(self._hands) % NUM_PLAYERS))
        self._player = self._next_player()

    def action_to_string(self, action: int) -> str:
        if self.is_chance_node():
            return f"Deal:{CARDS[action]}"
        facing = self._hands[-1].facing_bet()
        if action == PASS:
            return "[fold]" if facing else "[check]"
        if action == BET:
            return "[call]" if facing else "[bet]"
        raise ValueError(f"kuhn_poker has actions 0 (pass) and 1 (bet), got {action!r}")

    # -- outcome ----------------------------------------------------------------------
    def returns(self) -> list[float]:
        return [float(c) for c in self._chips]

    def hand_number(self) -> int:
        """1-based index of the hand being played (or the last hand once terminal)."""
        return len(self._hands)

    # -- per-player views -------------------------------------------------------------
    def information_state_string(self, player: int) -> str:
        check_player(self, player)
        parts = [str(player)]
        for hand in self._hands:
            if len(hand.cards) <= player:
                break
            mine = CARDS[hand.cards[player]]
            other = CARDS[hand.cards[1 - player]] if hand.is_showdown() else "?"
            bets = "".join("pb"[b] for b in hand.bets)
            parts.append(f"{mine}{other}:{bets}")
        return "|".join(parts)

    def observation_string(self, player: int) -> str:
        check_player(self, player)
        opponent = 1 - player
        lines = [f"You are Player {player}."]
        if self.game.hands > 1:
            lines.append(f"Hand {self.hand_number()} of {self.game.hands}.")
            lines.append(
                f"Chips won so far: you {self._chips[player]:+d}, "
                f"Player {opponent} {self._chips[opponent]:+d}."
            )
            for i, hand in enumerate(self._hands[:-1] if not self.is_terminal() else self._hands):
                lines.append(f"Hand {i + 1}: " + self._describe_finished(hand, player))
        hand = self._hands[-1]
        if not hand.is_over() or self.game.hands == 1:
            if len(hand.cards) > player:
                card = CARDS[hand.cards[player]]
                lines.append(f"Your card: {card} ({CARD_NOTES[card]})." if self.game.card_notes else f"Your card: {card}.")
            if hand.bets:
                moves = ", ".join(
                    f"Player {(hand.first + i) % 2} {self._bet_text(hand, i)}"
                    for i in range(len(hand.bets))
                )
                lines.append(f"Moves this hand: {moves}.")
            pot = 2 * ANTE + BET_SIZE * hand.bets.count(BET)
            lines.append(f"Pot: {pot} chips.")
            if hand.is_over():
                lines.append(self._describe_finished(hand, player))
        if self.is_terminal():
            lines.append(f"Game over. You won {self._chips[player]:+d} chips.")
        return "\n".join(lines)

    @staticmethod
    def _bet_text(hand: _Hand, index: int) -> str:
        facing = BET in hand.bets[:index]
        if hand.bets[index] == PASS:
            return "[fold]" if facing else "[check]"
        return "[call]" if facing else "[bet]"

    def _describe_finished(self, hand: _Hand, player: int) -> str:
        winner, amount = hand.result()
        who = "you" if winner == player else f"Player {winner}"
        mine = CARDS[hand.cards[player]]
        if hand.is_showdown():
            theirs = CARDS[hand.cards[1 - player]]
            return f"you had {mine}, Player {1 - player} had {theirs}; {who} won {amount} chip(s) at showdown."
        folder = 1 - winner
        folder_name = "you" if folder == player else f"Player {folder}"
        return f"you had {mine}; {folder_name} folded; {who} won {amount} chip(s)."
