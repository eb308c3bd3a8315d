"""Tic-tac-toe: every terminal history and return equals OpenSpiel's; and views."""


import pyspiel
import pytest

import envs
import games
from games.base import TERMINAL_PLAYER, IllegalActionError


def play(cells):
    state = games.load("tic_tac_toe").new_initial_state()
    for cell in cells:
        state.apply_action(cell)
    return state


def test_matches_openspiel_on_every_history():
    """Walk both game trees in lockstep: same legal moves, player, terminals and returns."""
    counts = {"terminal": 0, "x_wins": 0, "o_wins": 0, "draws": 0}

    def walk(ours, theirs):
        assert ours.is_terminal() == theirs.is_terminal()
        if ours.is_terminal():
            returns = ours.returns()
            assert returns == theirs.returns()
            counts["terminal"] += 1
            counts["x_wins" if returns[0] > 0 else "o_wins" if returns[0] < 0 else "draws"] += 1
            return
        assert ours.current_player() == theirs.current_player()
        legal = ours.legal_actions()
        assert legal == theirs.legal_actions()
        for action in legal:
            child = ours.clone()
            child.apply_action(action)
            walk(child, theirs.child(action))

    walk(play([]), pyspiel.load_game("tic_tac_toe").new_initial_state())
    assert counts == {"terminal": 255168, "x_wins": 131184, "o_wins": 77904, "draws": 46080}


def test_row_column_and_diagonal_wins():
    assert play([0, 3, 1, 4, 2]).returns() == [1.0, -1.0]  # X: top row
    assert play([0, 1, 3, 4, 8, 7]).returns() == [-1.0, 1.0]  # O: middle column
    x_diagonal = play([2, 0, 4, 1, 6])
    assert x_diagonal.returns() == [1.0, -1.0] and x_diagonal.winner() == 0
    assert x_diagonal.current_player() == TERMINAL_PLAYER
    assert x_diagonal.legal_actions() == []


def test_full_board_without_a_line_is_a_draw():
    #  X | O | X
    #  X | O | O
    #  O | X | X
    state = play([0, 1, 2, 4, 3, 5, 7, 6, 8])
    assert state.is_terminal()
    assert state.winner() is None
    assert state.returns() == [0.0, 0.0]
    assert "Game over. The board is full: a draw." in state.observation_string(0)


def test_players_alternate_and_taken_cells_are_illegal():
    state = play([4])
    assert state.current_player() == 1
    assert state.legal_actions() == [0, 1, 2, 3, 5, 6, 7, 8]
    with pytest.raises(IllegalActionError):
        state.apply_action(4)
    with pytest.raises(IllegalActionError):
        state.apply_action(9)
    assert state.history() == [4]


def test_action_strings_are_bracketed_cell_numbers():
    state = play([])
    assert [state.action_to_string(a) for a in state.legal_actions()] == [
        f"[{cell}]" for cell in range(9)
    ]
    with pytest.raises(ValueError, match="cells 0..8"):
        state.action_to_string(9)


def test_observation_shows_free_cell_numbers_and_the_players_symbol():
    state = play([4, 0, 8])
    assert state.observation_string(1) == "\n".join(
        [
            "Board (a number marks a free cell you can take):",
            "O|1|2",
            "3|X|5",
            "6|7|X",
            "You are Player 1 (O). Move 4: you to play.",
        ]
    )
    assert "You are Player 0 (X)." in state.observation_string(0)
    assert "Move 4: Player 1 (O) to play." in state.observation_string(0)
    assert "Game over. You win" in play([0, 3, 1, 4, 2]).observation_string(0)
    assert "Game over. Player 0 wins" in play([0, 3, 1, 4, 2]).observation_string(1)


def test_information_state_names_the_player_and_the_move_order():
    a, b = play([0, 4, 8]), play([8, 4, 0])  # same board, different histories
    assert a.information_state_string(0) == "0:0,4,8"
    assert a.information_state_string(1) == "1:0,4,8"
    assert a.information_state_string(1) != b.information_state_string(1)
    assert play([]).information_state_string(0) == "0:"
    with pytest.raises(ValueError, match="player must be in 0..1"):
        a.information_state_string(2)


def test_clone_is_independent():
    state = play([4])
    twin = state.clone()
    twin.apply_action(0)
    assert state.history() == [4] and state.legal_actions() == [0, 1, 2, 3, 5, 6, 7, 8]
    assert twin.history() == [4, 0] and twin.current_player() == 0


def test_line_notes_name_the_cells_that_complete_a_line_on_the_players_own_turn():
    game = games.load("tic_tac_toe", line_notes=True)
    assert game.params() == {"line_notes": True} and games.load("tic_tac_toe").params() == {}
    state = game.new_initial_state()
    for cell in (4, 0, 8, 2):  # X: 4, 8; O: 0, 2
        state.apply_action(cell)
    assert state.completing_cells(1) == [1] and state.completing_cells(0) == []
    assert state.decision_note(0) == "Player 1 (O) completes a line at: 1."
    assert state.observation_string(0).endswith("Move 5: you to play.")  # the note is not in the observation
    state.apply_action(6)  # X: 4, 6, 8 (6-7-8 open at 7); O: 0, 2 (0-1-2 open at 1)
    assert state.completing_cells(0) == [7] and state.completing_cells(1) == [1]
    assert state.decision_note(1) == "You complete a line at: 1. Player 0 (X) completes a line at: 7."
    quiet = game.new_initial_state()
    assert quiet.decision_note(0) == "No free cell completes a line for either player."
    prompt = envs.make("tic_tac_toe", mode="choice", line_notes=True)
    prompt.reset(seed=0)
    assert prompt.turn_prompt().text.endswith("written as listed.\nNo free cell completes a line for either player.")
    plain = games.load("tic_tac_toe").new_initial_state()
    assert plain.observation_string(0).endswith("Move 1: you to play.") and plain.decision_note(0) == ""
    with pytest.raises(ValueError, match="line_notes"):
        games.load("tic_tac_toe", line_notes="yes")
