"""Exact analysis (games.analysis): checked against OpenSpiel and hand-computed values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import games
from games import analysis
from games.base import CHANCE_PLAYER, TERMINAL_PLAYER, Game, State

pyspiel = pytest.importorskip("pyspiel")
from open_spiel.python import policy as openspiel_policy  # noqa: E402
from open_spiel.python.algorithms import best_response as openspiel_best_response  # noqa: E402
from open_spiel.python.algorithms import cfr as openspiel_cfr  # noqa: E402
from open_spiel.python.algorithms import exploitability as openspiel_exploitability  # noqa: E402
from open_spiel.python.algorithms import expected_game_score  # noqa: E402

KUHN_VALUE = -1.0 / 18.0  # the first player's value of single-hand Kuhn Poker
PASS, BET = 0, 1


@pytest.fixture(scope="module")
def kuhn():
    return games.load("kuhn_poker")


@pytest.fixture(scope="module")
def kuhn_tree(kuhn):
    return analysis.game_tree(kuhn)


@pytest.fixture(scope="module")
def openspiel_kuhn():
    return pyspiel.load_game("kuhn_poker")


@pytest.fixture(scope="module")
def key_map(kuhn, openspiel_kuhn):
    """Our information_state_string -> OpenSpiel's, found by playing both games alike."""
    mapping = {}

    def walk(ours, theirs):
        if ours.is_terminal():
            return
        if not ours.is_chance_node():
            key = ours.information_state_string(ours.current_player())
            mapping[key] = theirs.information_state_string()
        for action in ours.legal_actions():
            a, b = ours.clone(), theirs.clone()
            a.apply_action(action)
            b.apply_action(action)
            walk(a, b)

    walk(kuhn.new_initial_state(), openspiel_kuhn.new_initial_state())
    return mapping


def to_openspiel(policy, key_map, openspiel_game):
    tabular = openspiel_policy.TabularPolicy(openspiel_game)
    for ours, theirs in key_map.items():
        for action, probability in policy[ours].items():
            tabular.policy_for_key(theirs)[action] = probability
    return tabular


def random_policy(tree, seed):
    """A seeded random policy with every information state listed."""
    rng = np.random.default_rng(seed)
    return {
        key: dict(zip(actions, rng.dirichlet(np.ones(len(actions)))))
        for key, actions in zip(tree.infoset_keys, tree.infoset_actions)
    }


# -- the tree -------------------------------------------------------------------------------

def test_kuhn_tree_has_every_history_and_information_state(kuhn_tree):
    # 1 root + 3 first cards + 6 deals, then per deal 5 betting histories past the deal
    # (p, b, pp, pb, bp, bb, pbp, pbb -> 8 nodes after the deal node)
    assert kuhn_tree.num_nodes == 1 + 3 + 6 + 6 * 8
    assert len(kuhn_tree.infoset_keys) == 12
    assert (kuhn_tree.player == TERMINAL_PLAYER).sum() == 30
    assert sorted(kuhn_tree.infoset_keys)[:3] == ["0|J?:", "0|J?:pb", "0|K?:"]


# -- against OpenSpiel ------------------------------------------------------------------------

def test_uniform_policy_matches_openspiel(kuhn, kuhn_tree, openspiel_kuhn):
    uniform = openspiel_policy.UniformRandomPolicy(openspiel_kuhn)
    assert analysis.exploitability(kuhn, None) == pytest.approx(0.4583333333333333, abs=1e-12)
    assert analysis.exploitability(kuhn_tree, None) == pytest.approx(
        openspiel_exploitability.exploitability(openspiel_kuhn, uniform), abs=1e-12
    )
    assert analysis.nash_conv(kuhn_tree, None) == pytest.approx(
        openspiel_exploitability.nash_conv(openspiel_kuhn, uniform), abs=1e-12
    )
    expected = expected_game_score.policy_value(openspiel_kuhn.new_initial_state(), [uniform] * 2)
    assert analysis.expected_returns(kuhn_tree, None) == pytest.approx(list(expected), abs=1e-12)
    assert analysis.expected_returns(kuhn_tree, None) == pytest.approx([0.125, -0.125], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_policy_values_match_openspiel(kuhn_tree, openspiel_kuhn, key_map, seed):
    policy = random_policy(kuhn_tree, seed)
    theirs = to_openspiel(policy, key_map, openspiel_kuhn)
    expected = expected_game_score.policy_value(openspiel_kuhn.new_initial_state(), [theirs] * 2)
    assert analysis.expected_returns(kuhn_tree, policy) == pytest.approx(list(expected), abs=1e-12)
    for player in range(2):
        value, _ = analysis.best_response(kuhn_tree, policy, player)
        reference = openspiel_best_response.BestResponsePolicy(openspiel_kuhn, player, theirs)
        assert value == pytest.approx(reference.value(openspiel_kuhn.new_initial_state()), abs=1e-12)
    assert analysis.nash_conv(kuhn_tree, policy) == pytest.approx(
        openspiel_exploitability.nash_conv(openspiel_kuhn, theirs), abs=1e-12
    )


@pytest.mark.parametrize(
    "options, solver",
    [
        ({}, lambda g: openspiel_cfr._CFRSolver(
            g, regret_matching_plus=False, alternating_updates=False, linear_averaging=False)),
        ({"alternating": True}, openspiel_cfr.CFRSolver),
        ({"plus": True}, openspiel_cfr.CFRPlusSolver),
    ],
    ids=["vanilla-simultaneous", "vanilla-alternating", "cfr-plus"],
)
def test_cfr_average_policy_equals_openspiel_iterate_for_iterate(
    kuhn_tree, openspiel_kuhn, key_map, options, solver
):
    reference = solver(openspiel_kuhn)
    for _ in range(30):
        reference.evaluate_and_update_policy()
    theirs = reference.average_policy()
    ours = analysis.cfr(kuhn_tree, 30, **options)
    for key, distribution in ours.items():
        for action, probability in distribution.items():
            assert probability == pytest.approx(theirs.policy_for_key(key_map[key])[action], abs=1e-12)


# -- hand-computed values ---------------------------------------------------------------------

def test_best_response_to_always_betting(kuhn_tree):
    # Player 0 always bets. Player 1 calls with K (+2), calls with Q (+2 vs J, -2 vs K:
    # 0 > -1 for folding) and folds J (-1 > -2): (2 + 0 - 1) / 3 = 1/3.
    always_bet = {key: {PASS: 0.0, BET: 1.0} for key in kuhn_tree.infoset_keys if key.startswith("0")}
    value, br = analysis.best_response(kuhn_tree, always_bet, 1)
    assert value == pytest.approx(1.0 / 3.0, abs=1e-12)
    assert br["1|K?:b"] == {PASS: 0.0, BET: 1.0}
    assert br["1|Q?:b"] == {PASS: 0.0, BET: 1.0}
    assert br["1|J?:b"] == {PASS: 1.0, BET: 0.0}
    # after a check (never happens) every action is worth 0: ties go to the lowest action
    assert br["1|K?:p"] == {PASS: 1.0, BET: 0.0}
    assert set(br) == {key for key in kuhn_tree.infoset_keys if key.startswith("1")}
    played = analysis.expected_returns(kuhn_tree, {**always_bet, **br})
    assert played[1] == pytest.approx(value, abs=1e-12)


def test_best_response_to_a_player_who_never_bets(kuhn_tree):
    # Player 1 checks behind and folds to every bet: betting wins the ante, +1 always.
    # With a King checking wins +1 at showdown as well: the tie goes to the lower action.
    passive = {key: {PASS: 1.0, BET: 0.0} for key in kuhn_tree.infoset_keys if key.startswith("1")}
    value, br = analysis.best_response(kuhn_tree, passive, 0)
    assert value == pytest.approx(1.0, abs=1e-12)
    assert br["0|J?:"] == br["0|Q?:"] == {PASS: 0.0, BET: 1.0}
    assert br["0|K?:"] == {PASS: 1.0, BET: 0.0}


def test_best_response_rejects_a_bad_player(kuhn_tree):
    with pytest.raises(ValueError, match="player must be in 0..1"):
        analysis.best_response(kuhn_tree, None, 2)


# -- CFR convergence --------------------------------------------------------------------------

def test_vanilla_cfr_approaches_the_game_value(kuhn_tree):
    average = analysis.cfr(kuhn_tree, 1000)
    assert analysis.expected_returns(kuhn_tree, average)[0] == pytest.approx(KUHN_VALUE, abs=0.005)
    assert analysis.exploitability(kuhn_tree, average) < 0.008  # measured 0.0073


def test_cfr_plus_converges_much_faster_and_lands_in_the_equilibrium_family(kuhn_tree):
    average = analysis.cfr(kuhn_tree, 1000, plus=True)
    assert analysis.exploitability(kuhn_tree, average) < 2e-4  # measured 8.7e-5
    assert analysis.expected_returns(kuhn_tree, average)[0] == pytest.approx(KUHN_VALUE, abs=1e-4)
    # The first player bets a King three times as often as it bluffs a Jack, and never
    # bets a Queen; the second player always calls with a King, never with a Jack.
    alpha = average["0|J?:"][BET]
    assert 0.0 <= alpha <= 1.0 / 3.0 + 0.01
    assert average["0|K?:"][BET] == pytest.approx(3 * alpha, abs=0.02)
    assert average["0|Q?:"][BET] < 0.01
    assert average["1|K?:b"][BET] > 0.99 and average["1|J?:b"][BET] < 0.01


def test_cfr_rejects_a_bad_iteration_count(kuhn_tree):
    with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
        analysis.cfr(kuhn_tree, 0)


def test_two_hand_kuhn_is_twice_one_hand():
    # The hands are independent with the seats swapped, so values and exploitabilities add.
    tree = analysis.game_tree(games.load("kuhn_poker", hands=2))
    assert tree.num_nodes == 1768
    assert analysis.expected_returns(tree, None) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert analysis.exploitability(tree, None) == pytest.approx(2 * 0.4583333333333333, abs=1e-12)
    average = analysis.cfr(tree, 300, plus=True)
    assert analysis.expected_returns(tree, average)[0] == pytest.approx(0.0, abs=1e-3)
    assert analysis.exploitability(tree, average) < 2e-3


# -- policies ---------------------------------------------------------------------------------

def test_missing_information_states_mean_uniform(kuhn_tree):
    partial = {"0|K?:": {BET: 1.0}}
    explicit = analysis.uniform_policy(kuhn_tree)
    explicit["0|K?:"] = {PASS: 0.0, BET: 1.0}
    assert analysis.expected_returns(kuhn_tree, partial) == pytest.approx(
        analysis.expected_returns(kuhn_tree, explicit), abs=1e-15
    )
    assert analysis.expected_returns(kuhn_tree, {}) == analysis.expected_returns(kuhn_tree, None)


@pytest.mark.parametrize(
    "distribution",
    [{PASS: 0.5, BET: 0.6}, {PASS: -0.5, BET: 1.5}, {PASS: 0.5, BET: 0.25, 7: 0.25}],
    ids=["sum-not-one", "negative", "illegal-action"],
)
def test_malformed_policies_are_rejected(kuhn_tree, distribution):
    with pytest.raises(ValueError, match="must be a distribution over the legal actions"):
        analysis.expected_returns(kuhn_tree, {"0|K?:": distribution})


def test_tabular_policy_asks_once_per_information_state(kuhn):
    asked = []

    def check_with_queens(state, player):
        key = state.information_state_string(player)
        asked.append(key)
        card = key.split("|")[1][0]
        return {PASS: 1.0, BET: 0.0} if card == "Q" else {PASS: 0.5, BET: 0.5}

    policy = analysis.tabular_policy(kuhn, check_with_queens)
    assert sorted(asked) == sorted(policy) == sorted(analysis.game_tree(kuhn).infoset_keys)
    assert policy["0|Q?:"] == {PASS: 1.0, BET: 0.0}
    assert policy["1|K?:b"] == {PASS: 0.5, BET: 0.5}


# -- a game whose information sets span several depths ---------------------------------------

class _TreeGame(Game):
    """A game given as a nested spec, to build trees that Kuhn Poker cannot show.

    A node is ("chance", [(prob, child), ...]), (player, key, [child per action]) or
    a tuple of returns; a player's information set is `key`.
    """

    name = "tree_game"

    def __init__(self, spec):
        self.spec = spec

    def num_players(self):
        return 2

    def num_distinct_actions(self):
        return 2

    def max_game_length(self):
        return 10

    def new_initial_state(self):
        return _TreeState(self)


class _TreeState(State):
    def _node(self):
        node = self.game.spec
        for action in self._history:
            node = node[1][action][1] if node[0] == "chance" else node[2][action]
        return node

    def current_player(self):
        node = self._node()
        if node[0] == "chance":
            return CHANCE_PLAYER
        return node[0] if isinstance(node[1], str) else TERMINAL_PLAYER

    def _legal_actions(self):
        return list(range(len(self._node()[2])))

    def chance_outcomes(self):
        return [(a, p) for a, (p, _) in enumerate(self._node()[1])]

    def _apply_action(self, action):
        pass  # the history is the state

    def action_to_string(self, action):
        return str(action)

    def returns(self):
        return list(self._node()) if self.is_terminal() else [0.0, 0.0]

    def observation_string(self, player):
        return self.information_state_string(player)

    def information_state_string(self, player):
        return self._node()[1]


def _zero_sum(x):
    return (x, -x)


def test_best_response_with_an_information_set_at_two_depths():
    # Chance picks a branch. On the left, player 1 moves first and then player 0 decides
    # at "0:x"; on the right player 0 decides at "0:x" at once and, after action 1,
    # decides again at "0:x1". So "0:x" has histories at depths 2 and 1, and deciding
    # it needs the decision at "0:x1" (depth 2), which lies *below* its shallow history.
    left = (1, "1:", [(0, "0:x", [_zero_sum(3.0), _zero_sum(-2.0)]),
                      (0, "0:x", [_zero_sum(-1.0), _zero_sum(4.0)])])
    right = (0, "0:x", [_zero_sum(1.0), (0, "0:x1", [_zero_sum(-5.0), _zero_sum(2.0)])])
    game = _TreeGame(("chance", [(0.4, left), (0.6, right)]))
    opponent = {"1:": {0: 0.25, 1: 0.75}}
    value, br = analysis.best_response(game, opponent, 0)

    # brute force over player 0's four pure strategies
    def pure(action):
        return {action: 1.0, 1 - action: 0.0}

    best = max(
        analysis.expected_returns(game, {**opponent, "0:x": pure(a), "0:x1": pure(b)})[0]
        for a, b in itertools.product([0, 1], repeat=2)
    )
    # by hand: action 1 at "0:x" with action 1 at "0:x1":
    # 0.4 * (0.25 * -2 + 0.75 * 4) + 0.6 * 2 = 0.4 * 2.5 + 1.2 = 2.2
    assert value == pytest.approx(best, abs=1e-12) and value == pytest.approx(2.2, abs=1e-12)
    assert br == {"0:x": {0: 0.0, 1: 1.0}, "0:x1": {0: 0.0, 1: 1.0}}


def test_best_response_needs_perfect_recall():
    # player 0 forgets that it already moved: "0:" follows "0:"
    game = _TreeGame((0, "0:", [(0, "0:", [_zero_sum(1.0), _zero_sum(0.0)]), _zero_sum(0.5)]))
    with pytest.raises(ValueError, match="perfect recall"):
        analysis.best_response(game, None, 0)


def test_inconsistent_information_sets_are_rejected():
    shared_by_two_players = _TreeGame((0, "k", [(1, "k", [_zero_sum(1.0)]), _zero_sum(0.0)]))
    with pytest.raises(ValueError, match="share the information state"):
        analysis.game_tree(shared_by_two_players)
    different_actions = _TreeGame(
        (0, "a", [(1, "b", [_zero_sum(1.0)]), (1, "b", [_zero_sum(0.0), _zero_sum(1.0)])])
    )
    with pytest.raises(ValueError, match="has legal actions"):
        analysis.game_tree(different_actions)
