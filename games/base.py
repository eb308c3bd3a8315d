"""The rules-engine protocol every game implements.

Modelled on OpenSpiel's Python games: chance is explicit (chance nodes list their
outcomes with probabilities), actions are integers, and each player has a view of the
state (`observation_string`) and a unique key of its information set
(`information_state_string`). Exact analysis (`games.analysis`) and cross-checks against
OpenSpiel rely on exactly this protocol, so a game must not hide randomness elsewhere.

A game file holds a `Game` subclass that only makes initial states and a `State`
subclass whose rules live in `_apply_action` and `returns`.
"""

from __future__ import annotations

import abc
import copy
import operator
from typing import Sequence

CHANCE_PLAYER = -1
"""`current_player()` at a chance node (OpenSpiel's kChancePlayerId)."""
TERMINAL_PLAYER = -4
"""`current_player()` once the game is over (OpenSpiel's kTerminalPlayerId)."""


class IllegalActionError(ValueError):
    """Raised when `apply_action` gets an action that is not legal in the state."""


class Game(abc.ABC):
    """A game's static facts and a factory of initial states."""

    name: str = ""

    @abc.abstractmethod
    def num_players(self) -> int:
        """Number of (non-chance) players."""

    @abc.abstractmethod
    def num_distinct_actions(self) -> int:
        """Size of the action-id space; legal actions are a subset of range(this)."""

    @abc.abstractmethod
    def new_initial_state(self) -> "State":
        """A fresh state at the start of the game."""

    @abc.abstractmethod
    def max_game_length(self) -> int:
        """Upper bound on the number of player (non-chance) actions in one game."""

    def min_game_length(self) -> int:
        """Lower bound on the number of player actions in a game played to its end with legal
        moves (a forfeit can end one sooner). Sizes the first wave of a step's games
        (`trainers.rollouts.step_size`); a game of fixed length returns its length."""
        return 1

    def params(self) -> dict:
        """The parameters this game was built with (for logs and manifests)."""
        return {}

    def max_utility(self) -> float:
        """Largest return any player can get; the forfeit penalty for invalid answers."""
        return 1.0

    def is_zero_sum(self) -> bool:
        """True when the returns of every terminal state sum to zero."""
        return True

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class State(abc.ABC):
    """One position in a game; mutated in place by `apply_action`."""

    def __init__(self, game: Game):
        self.game = game
        self._history: list[int] = []

    # -- whose turn -----------------------------------------------------------------
    @abc.abstractmethod
    def current_player(self) -> int:
        """The player to move, `CHANCE_PLAYER`, or `TERMINAL_PLAYER`."""

    def is_chance_node(self) -> bool:
        return self.current_player() == CHANCE_PLAYER

    def is_terminal(self) -> bool:
        return self.current_player() == TERMINAL_PLAYER

    # -- moves ------------------------------------------------------------------------
    @abc.abstractmethod
    def _legal_actions(self) -> list[int]:
        """Legal actions of the player to move (never called at chance/terminal)."""

    def legal_actions(self) -> list[int]:
        """Sorted legal action ids; at a chance node the outcomes; empty when terminal."""
        if self.is_terminal():
            return []
        if self.is_chance_node():
            return [a for a, _ in self.chance_outcomes()]
        return self._legal_actions()

    def chance_outcomes(self) -> list[tuple[int, float]]:
        """`[(action, probability), ...]` at a chance node."""
        raise ValueError(f"{type(self).__name__} has no chance nodes")

    @abc.abstractmethod
    def _apply_action(self, action: int) -> None:
        """Apply a legal action (the rules live here)."""

    def is_legal(self, action: int) -> bool:
        """Whether `action` may be applied now (games may override with an O(1) test)."""
        return action in self.legal_actions()

    def apply_action(self, action: int) -> None:
        """Apply `action`, which must be legal; raises `IllegalActionError` otherwise."""
        try:
            action = operator.index(action)  # numpy integers are welcome, floats are not
        except TypeError:
            raise IllegalActionError(f"actions are integers, got {action!r}") from None
        if not self.is_legal(action):
            raise IllegalActionError(
                f"action {action!r} is not legal here; legal actions: {self.legal_actions()}"
            )
        self._apply_action(action)
        self._history.append(action)

    def history(self) -> list[int]:
        """All actions applied so far, chance outcomes included."""
        return list(self._history)

    @abc.abstractmethod
    def action_to_string(self, action: int) -> str:
        """Canonical text of `action` in this state, e.g. "[bet]" (what a model answers)."""

    # -- outcome ----------------------------------------------------------------------
    @abc.abstractmethod
    def returns(self) -> list[float]:
        """Total reward of each player so far (final once terminal)."""

    # -- per-player views -------------------------------------------------------------
    @abc.abstractmethod
    def observation_string(self, player: int) -> str:
        """What `player` may know now, as human-readable text."""

    @abc.abstractmethod
    def information_state_string(self, player: int) -> str:
        """A unique key of `player`'s information set (equal iff indistinguishable)."""

    def decision_note(self, player: int) -> str:
        """Text that bears on the decision of `player`, the player to move; "" by default.

        The prompt puts it after everything else, the last line read before the answer,
        for a fact the choice turns on (what accepting an offer would do, which cell
        completes a line): on SAT, sign counts written beside each variable's choice were
        learnt where the same counts two lines up were not. The place is no guarantee:
        Simple Negotiation's verdict there has not been learnt yet (docs/learning_runs).
        Only asked while the game is not over.
        """
        return ""

    def legal_actions_text(self, player: int) -> str:
        """The legal actions of `player`, the player to move, in the game's own few words for a
        chained turn's prompt (``envs.action_chain``); "" (the default) lets
        `describe_actions` derive patterns and ranges from the action strings.

        A game whose ranges follow its state (Simple Negotiation's offers stop at what each
        side holds) gets a different line at nearly every turn from the derived ranges; a
        fixed wording that the rules explain keeps the line the same across turns, so the
        prompts of a batch share it and it is run once, not once a prompt.
        """
        return ""

    def score_margin(self, player: int) -> float | None:
        """How far `player` is ahead of the others now, on the game's own scale; None by default.

        A game may define it where its outcome is decided by who is ahead at the end: the
        sign of the final margin must be the sign of the player's return. Training with
        ``reward=margin`` (``trainers.rollouts.rewards``) credits each turn with the change
        of its player's margin from that turn to the end.
        """
        return None

    def position_key(self) -> str | None:
        """A key of the position, when the path to it does not matter; None by default.

        A game may return one only if two states with equal keys have the same player to
        move, legal actions, observation for every player and returns at the end of every
        continuation (perfect information, no chance). Exact analysis then works on the few
        positions instead of the many histories (`games.positions`).
        """
        return None

    def clone(self) -> "State":
        return copy.deepcopy(self)

    def __str__(self) -> str:
        return self.observation_string(0)


def check_player(state: State, player: int) -> None:
    """Raise a clear error for a player id outside the game."""
    if not 0 <= player < state.game.num_players():
        raise ValueError(
            f"player must be in 0..{state.game.num_players() - 1}, got {player!r}"
        )


def format_actions(state: State, actions: Sequence[int]) -> list[str]:
    """Canonical strings of `actions` in `state`."""
    return [state.action_to_string(a) for a in actions]
