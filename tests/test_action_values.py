"""`analysis.action_values` / `state_values`: the true Q(I, a) and V(I) under a policy profile,
by hand on Kuhn Poker and against OpenSpiel's own tree walk (`action_value.TreeWalkCalculator`)."""

from __future__ import annotations

import pytest

import games
from games import analysis

pyspiel = pytest.importorskip("pyspiel")
from open_spiel.python import policy as spiel_policy  # noqa: E402
from open_spiel.python.algorithms import action_value  # noqa: E402

PASS, BET = 0, 1


def test_uniform_kuhn_values_by_hand():
    q = analysis.action_values(games.load("kuhn_poker"), None)
    jack = q["0|J?:"]
    # bet with the Jack: the opponent folds half the time (+1) and calls half the time (-2)
    assert jack[BET] == pytest.approx(0.5 * 1 + 0.5 * -2)
    # check: showdown lost (-1) half the time; else a bet, which the Jack folds (-1) or calls (-2)
    assert jack[PASS] == pytest.approx(0.5 * -1 + 0.5 * (0.5 * -1 + 0.5 * -2))
    assert analysis.state_values(games.load("kuhn_poker"), None)["0|J?:"] == pytest.approx(0.5 * jack[PASS] + 0.5 * jack[BET])


def test_the_first_players_state_values_average_to_the_games_value():
    game = games.load("kuhn_poker")
    policy = analysis.cfr(game, 200)
    values = analysis.state_values(game, policy)
    first = [values[f"0|{card}?:"] for card in "JQK"]
    assert sum(first) / 3 == pytest.approx(analysis.expected_returns(game, policy)[0])


def _histories(game) -> dict[str, list[int]]:
    """One history reaching each information state of our game."""
    found: dict[str, list[int]] = {}

    def walk(state, history):
        if state.is_terminal():
            return
        if state.is_chance_node():
            for action, _ in state.chance_outcomes():
                child = state.clone()
                child.apply_action(action)
                walk(child, history + [action])
            return
        found.setdefault(state.information_state_string(state.current_player()), history)
        for action in state.legal_actions():
            child = state.clone()
            child.apply_action(action)
            walk(child, history + [action])

    walk(game.new_initial_state(), [])
    return found


@pytest.mark.parametrize("policy_name", ["uniform", "cfr"])
def test_action_values_equal_openspiels_tree_walk(policy_name):
    ours = games.load("kuhn_poker")
    theirs = pyspiel.load_game("kuhn_poker")
    policy = None if policy_name == "uniform" else analysis.cfr(ours, 30)
    histories = _histories(ours)

    def their_state(history):
        state = theirs.new_initial_state()
        for action in history:
            state.apply_action(action)
        return state

    tabular = spiel_policy.TabularPolicy(theirs)
    if policy is not None:
        for key, history in histories.items():
            state = their_state(history)
            row = tabular.state_lookup[state.information_state_string()]
            for action, prob in policy[key].items():
                tabular.action_probability_array[row][action] = prob
    walked = action_value.TreeWalkCalculator(theirs)([tabular, tabular], tabular)

    q = analysis.action_values(ours, policy)
    assert set(q) == set(histories)
    for key, history in histories.items():
        row = tabular.state_lookup[their_state(history).information_state_string()]
        for action, value in q[key].items():
            assert value == pytest.approx(walked.action_values[row][action], abs=1e-12)
