"""Tic-tac-toe on a 3x3 board, the same game as OpenSpiel's `tic_tac_toe`.

Cells are numbered 0-8 row by row; the action id is the cell. Player 0 plays X and moves
first, player 1 plays O. Three in a row wins (+1 / -1); a full board without a line is a
draw (0 / 0). There are no chance nodes, and the 255,168 terminal histories and their
returns match OpenSpiel's exactly.

The state is a flat list and the winner is found by checking only the lines through the
cell just played, because benchmarks play thousands of random games per second through
the text layer on top of this engine.
"""

from __future__ import annotations

from games.base import TERMINAL_PLAYER, Game, State, check_player

NUM_PLAYERS = 2
NUM_CELLS = 9
SYMBOLS = "XO"  # SYMBOLS[player]
EMPTY = -1

LINES = (
    (0, 1, 2), (3, 4, 5), (6, 7, 8),  # rows
    (0, 3, 6), (1, 4, 7), (2, 5, 8),  # columns
    (0, 4, 8), (2, 4, 6),  # diagonals
)
LINES_THROUGH = tuple(tuple(line for line in LINES if cell in line) for cell in range(NUM_CELLS))
"""LINES_THROUGH[cell]: the lines a move on `cell` can complete."""
ACTION_TEXT = tuple(f"[{cell}]" for cell in range(NUM_CELLS))
# Text pieces built once: observation_string runs on every turn of every game.
CELL_TEXT = tuple({EMPTY: str(cell), 0: SYMBOLS[0], 1: SYMBOLS[1]} for cell in range(NUM_CELLS))
# The board comes first and the seat after it: text every prompt shares (the rules, this
# header) is computed once per batch by the learner, so what varies is kept short.
BOARD_HEADER = "Board (a number marks a free cell you can take):"
BOARD_TEMPLATE = "\n".join(["{}|{}|{}"] * 3)
SEAT_TEXT = tuple(f"You are Player {p} ({SYMBOLS[p]})." for p in range(NUM_PLAYERS))


class TicTacToeGame(Game):
    """Tic-tac-toe.

    `line_notes=True` adds, as the player's `decision_note` (the prompt's last line), which
    free cells complete a line of theirs and which would complete one of the opponent's
    (``You complete a line at: 2. Player 0 (X) completes a line at: 6.``). The board says
    the same to whoever reads it line by line; a 135M model that must find two marks and a
    gap among eight lines of a drawn grid may not, as Kuhn Poker's model did not tell a
    Jack from a King without `card_notes`. Off by default (SPIRAL's prompt); the game is
    the same either way.
    """

    name = "tic_tac_toe"

    def __init__(self, line_notes: bool = False):
        if not isinstance(line_notes, bool):
            raise ValueError(f"tic_tac_toe: line_notes must be true or false, got {line_notes!r}")
        self.line_notes = line_notes

    def params(self) -> dict:
        return {"line_notes": True} if self.line_notes else {}

    def num_players(self) -> int:
        return NUM_PLAYERS

    def num_distinct_actions(self) -> int:
        return NUM_CELLS

    def max_game_length(self) -> int:
        return NUM_CELLS

    def min_game_length(self) -> int:
        return 5  # the first player's third mark is the earliest win

    def new_initial_state(self) -> "TicTacToeState":
        return TicTacToeState(self)


class TicTacToeState(State):
    def __init__(self, game: TicTacToeGame):
        super().__init__(game)
        self._board = [EMPTY] * NUM_CELLS  # _board[cell] = player who took it, or EMPTY
        self._winner = EMPTY
        self._moves = 0

    # -- whose turn -----------------------------------------------------------------
    def current_player(self) -> int:
        if self._winner != EMPTY or self._moves == NUM_CELLS:
            return TERMINAL_PLAYER
        return self._moves % NUM_PLAYERS

    # The two overrides below skip current_player() on the hot path of random play.
    def is_terminal(self) -> bool:
        return self._winner != EMPTY or self._moves == NUM_CELLS

    def is_chance_node(self) -> bool:
        return False

    # -- moves ------------------------------------------------------------------------
    def _legal_actions(self) -> list[int]:
        board = self._board
        return [cell for cell in range(NUM_CELLS) if board[cell] == EMPTY]

    def _apply_action(self, action: int) -> None:
        player = self._moves % NUM_PLAYERS
        board = self._board
        board[action] = player
        self._moves += 1
        for a, b, c in LINES_THROUGH[action]:
            if board[a] == board[b] == board[c]:
                self._winner = player
                return

    def is_legal(self, action: int) -> bool:
        return (
            self._winner == EMPTY
            and type(action) is int
            and 0 <= action < NUM_CELLS
            and self._board[action] == EMPTY
        )

    def action_to_string(self, action: int) -> str:
        if type(action) is int and 0 <= action < NUM_CELLS:
            return ACTION_TEXT[action]
        raise ValueError(f"tic_tac_toe actions are cells 0..8, got {action!r}")

    # -- outcome ----------------------------------------------------------------------
    def returns(self) -> list[float]:
        if self._winner == EMPTY:
            return [0.0, 0.0]
        return [1.0, -1.0] if self._winner == 0 else [-1.0, 1.0]

    def winner(self) -> int | None:
        """The player who completed a line, or None (game still on, or a draw)."""
        return None if self._winner == EMPTY else self._winner

    # -- per-player views -------------------------------------------------------------
    def information_state_string(self, player: int) -> str:
        # Perfect information with perfect recall: a player knows the whole move sequence,
        # so the key is the asking player plus the history (OpenSpiel's partition too).
        check_player(self, player)
        return f"{player}:" + ",".join(map(str, self._history))

    def position_key(self) -> str:
        # The board decides whose turn it is, the legal moves, the winner and all that either
        # player sees, whatever order the marks went down in: 5,478 boards, not 549,946 paths.
        return "".join("." if p == EMPTY else SYMBOLS[p] for p in self._board)

    def observation_string(self, player: int) -> str:
        check_player(self, player)
        if self._winner != EMPTY:
            who = "You win" if self._winner == player else f"Player {1 - player} wins"
            status = f"Game over. {who} with three {SYMBOLS[self._winner]} in a row."
        elif self._moves == NUM_CELLS:
            status = "Game over. The board is full: a draw."
        else:
            to_move = self._moves % NUM_PLAYERS
            who = "you" if to_move == player else f"Player {to_move} ({SYMBOLS[to_move]})"
            status = f"Move {self._moves + 1}: {who} to play."
        return f"{BOARD_HEADER}\n{self._board_text()}\n{SEAT_TEXT[player]} {status}"

    def completing_cells(self, player: int) -> list[int]:
        """The free cells that would complete a line of `player`'s, in order."""
        board = self._board
        return [cell for cell in range(NUM_CELLS) if board[cell] == EMPTY and any(
            all(board[other] == player for other in line if other != cell) for line in LINES_THROUGH[cell])]

    def decision_note(self, player: int) -> str:
        if not self.game.line_notes:
            return ""
        other = 1 - player
        mine, theirs = self.completing_cells(player), self.completing_cells(other)
        if not mine and not theirs:
            return "No free cell completes a line for either player."
        notes = []
        if mine:
            notes.append(f"You complete a line at: {', '.join(map(str, mine))}.")
        if theirs:
            notes.append(f"Player {other} ({SYMBOLS[other]}) completes a line at: {', '.join(map(str, theirs))}.")
        return " ".join(notes)

    def _board_text(self) -> str:
        return BOARD_TEMPLATE.format(*[CELL_TEXT[cell][p] for cell, p in enumerate(self._board)])

    def clone(self) -> "TicTacToeState":
        twin = TicTacToeState.__new__(TicTacToeState)
        twin.game = self.game
        twin._history = self._history.copy()
        twin._board = self._board.copy()
        twin._winner = self._winner
        twin._moves = self._moves
        return twin
