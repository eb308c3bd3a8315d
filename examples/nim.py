"""Registering a new environment: a complete game in one small file.

Nim with one pile: players alternately take 1, 2 or 3 stones; whoever takes the last
stone wins. The game implements the `games` protocol (a `Game` that makes states, a
`State` whose rules live in `_apply_action` and `returns`); the `register` call at the
bottom turns it into a text environment with prompts, answer parsing, the invalid-action
policy, PettingZoo and Gymnasium APIs, opponents and training support:

    import examples.nim, envs
    env = envs.make("nim", stones=10)          # PettingZoo AEC env
    envs.check("nim")                           # API checkers + text fuzzing
    gymnasium.make("selfplay/nim-v0")           # single-agent view vs a random player
"""

from __future__ import annotations

import envs
from games import Game, State, TERMINAL_PLAYER

MAX_TAKE = 3


class NimGame(Game):
    name = "nim"

    def __init__(self, stones: int = 7):
        if isinstance(stones, bool) or not isinstance(stones, int) or stones < 1:
            raise ValueError(f"nim: stones must be an integer >= 1, got {stones!r}")
        self.stones = stones

    def num_players(self) -> int:
        return 2

    def num_distinct_actions(self) -> int:
        return MAX_TAKE  # action a takes a + 1 stones

    def max_game_length(self) -> int:
        return self.stones

    def params(self) -> dict:
        return {"stones": self.stones}

    def new_initial_state(self) -> "NimState":
        return NimState(self)


class NimState(State):
    def __init__(self, game: NimGame):
        super().__init__(game)
        self.stones = game.stones

    def current_player(self) -> int:
        return TERMINAL_PLAYER if self.stones == 0 else len(self._history) % 2

    def _legal_actions(self) -> list[int]:
        return list(range(min(MAX_TAKE, self.stones)))

    def _apply_action(self, action: int) -> None:
        self.stones -= action + 1

    def action_to_string(self, action: int) -> str:
        return f"[take {action + 1}]"

    def returns(self) -> list[float]:
        if self.stones:
            return [0.0, 0.0]
        last = (len(self._history) - 1) % 2  # took the last stone
        return [1.0, -1.0] if last == 0 else [-1.0, 1.0]

    def observation_string(self, player: int) -> str:
        return f"You are Player {player}. Stones left: {self.stones}."

    def information_state_string(self, player: int) -> str:
        return f"{player}:{self.stones}:{len(self._history) % 2}"


envs.register(
    "nim",
    game=NimGame,
    title="Nim",
    rules="Players take turns removing 1, 2 or 3 stones from one pile. "
    "Whoever takes the last stone wins.",
)
