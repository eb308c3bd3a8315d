"""Exact best response over positions (games.positions), on TicTacToe's 5,478 boards.

The figures are cross-checked with OpenSpiel's best response, which walks all 549,946
histories of its own tic_tac_toe.
"""

import random

import pytest

from games import positions
from games.kuhn_poker import KuhnPokerGame
from games.tic_tac_toe import TicTacToeGame


@pytest.fixture(scope="module")
def graph():
    return positions.position_graph(TicTacToeGame())


def minimax_policy(graph) -> dict:
    """Uniform over the moves that keep the game-theoretic value, at every position."""
    value = []  # value[i]: return of player 0 under perfect play from position i
    policy = {}
    for index, after in enumerate(graph.children):
        if not after:
            value.append(graph.returns[index][0])
            continue
        options = [value[c] for c in after]
        best = max(options) if graph.player[index] == 0 else min(options)
        value.append(best)
        keep = [a for a, v in zip(graph.actions[index], options) if v == best]
        policy[graph.keys[index]] = {a: 1 / len(keep) for a in keep}
    return policy


def position(moves: list[int]) -> str:
    state = TicTacToeGame().new_initial_state()
    for move in moves:
        state.apply_action(move)
    return state.position_key()


def test_tic_tac_toe_has_5478_positions_4520_with_a_player_to_move(graph):
    assert len(graph.keys) == 5478 and len(set(graph.keys)) == 5478
    assert len(graph.decision_positions) == 4520
    assert graph.keys[-1] == "........."  # the root is numbered last
    # transpositions are one position: X4 O0 X1 and X1 O0 X4 reach the same board
    assert position([4, 0, 1]) == position([1, 0, 4]) == "OX..X...."
    assert all(all(c < i for c in after) for i, after in enumerate(graph.children))  # children first


def test_the_board_is_all_a_tic_tac_toe_prompt_shows():
    # What position_key promises, checked on every history of up to five moves (18,730 of
    # them, 2,350 boards): equal keys, equal player to move, legal actions and views, and so
    # the same prompt for the model.
    import envs

    env = envs.make("tic_tac_toe", mode="choice")
    seen = {}
    frontier = [TicTacToeGame().new_initial_state()]
    for _ in range(6):
        following = []
        for state in frontier:
            view = (state.current_player(), tuple(state.legal_actions()), state.observation_string(0),
                    state.observation_string(1), None if state.is_terminal() else env.prompt_for(state).text)
            assert seen.setdefault(state.position_key(), view) == view
            for action in state.legal_actions():
                child = state.clone()
                child.apply_action(action)
                following.append(child)
        frontier = following
    assert len(seen) == 1 + 9 + 72 + 252 + 756 + 1260


def test_uniform_random_play(graph):
    # Exact fractions; OpenSpiel's best response over all histories gives the same values.
    assert positions.expected_returns(graph, None) == pytest.approx([187 / 630, -187 / 630], abs=1e-12)
    x_value, x_policy = positions.best_response(graph, None, 0)
    o_value, _ = positions.best_response(graph, None, 1)
    assert x_value == pytest.approx(191 / 192, abs=1e-12)  # X against a random O
    assert o_value == pytest.approx(874 / 945, abs=1e-12)  # O against a random X
    assert positions.exploitability(graph, None) == pytest.approx((191 / 192 + 874 / 945) / 2, abs=1e-12)
    opening = [a for a, p in x_policy["........."].items() if p == 1.0]
    assert opening in ([0], [2], [6], [8])  # against a random O a corner wins most (the centre: 0.990)


def test_perfect_play_is_unexploitable(graph):
    policy = minimax_policy(graph)
    assert [positions.best_response(graph, policy, p)[0] for p in (0, 1)] == [0.0, 0.0]
    assert positions.exploitability(graph, policy) == 0.0


def test_a_policy_that_misses_one_forced_block_is_exploited_there(graph):
    # After X4 O0 X1, X threatens 1-4-7; this O plays 8 instead of blocking at 7 and loses.
    # A perfect O answers X4 with one of the four corners, so X reaches this board with
    # probability 1/4 (by X4 then X1, or by X1 then X4: O0 is one of four perfect answers to
    # the edge opening too) and draws everywhere else: X's best response gets 1/4.
    policy = minimax_policy(graph)
    blunder = position([4, 0, 1])
    assert policy[blunder] == {7: 1.0}
    policy[blunder] = {8: 1.0}
    x_value, x_policy = positions.best_response(graph, policy, 0)
    assert x_value == pytest.approx(0.25, abs=1e-12)
    assert x_policy[position([4, 0])][1] == 1.0  # X steers to the blunder
    assert positions.best_response(graph, policy, 1)[0] == 0.0  # the blunder is O's: X stays perfect
    assert positions.exploitability(graph, policy) == pytest.approx(0.125, abs=1e-12)


def test_only_games_with_a_position_key_have_a_position_graph():
    assert positions.small_position_graph(KuhnPokerGame()) is None  # imperfect information: histories
    with pytest.raises(ValueError, match="position_key"):
        positions.position_graph(KuhnPokerGame())
    assert positions.small_position_graph(TicTacToeGame(), max_decision_positions=4519) is None
    with pytest.raises(positions.TooManyPositions):
        positions.position_graph(TicTacToeGame(), max_decision_positions=100)


@pytest.mark.parametrize("distribution", [{0: 0.5, 1: 0.6}, {0: 1.0, 9: 0.5}, {0: -0.5, 1: 1.5}])
def test_malformed_policies_are_rejected(graph, distribution):
    with pytest.raises(ValueError, match="distribution over the legal actions"):
        positions.exploitability(graph, {".........": distribution})


def random_policy(graph, seed: int) -> dict:
    rng = random.Random(seed)
    policy = {}
    for index in graph.decision_positions:
        weights = [rng.random() ** 4 for _ in graph.actions[index]]
        policy[graph.keys[index]] = {a: w / sum(weights) for a, w in zip(graph.actions[index], weights)}
    return policy


@pytest.mark.slow
def test_best_response_matches_openspiel_over_all_histories(graph):
    pyspiel = pytest.importorskip("pyspiel")
    from open_spiel.python import policy as openspiel_policy
    from open_spiel.python.algorithms import best_response as openspiel_best_response

    table = random_policy(graph, seed=0)
    game = pyspiel.load_game("tic_tac_toe")

    class PositionPolicy(openspiel_policy.Policy):
        """The table, read at any OpenSpiel history through its board."""

        def action_probabilities(self, state, player_id=None):
            board = str(state).replace("\n", "").replace("x", "X").replace("o", "O")
            return table[board]

    wrapped = PositionPolicy(game, [0, 1])
    for player in (0, 1):
        expected = openspiel_best_response.BestResponsePolicy(game, player, wrapped).value(game.new_initial_state())
        assert positions.best_response(graph, table, player)[0] == pytest.approx(expected, abs=1e-12)
    assert 0.5 < positions.exploitability(graph, table) < 1.0

