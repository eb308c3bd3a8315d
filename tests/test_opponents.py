"""Fixed opponents (envs.opponents): legality, determinism, strength in exact numbers."""

from __future__ import annotations

import random
import statistics
from collections import Counter

import pytest

import games
from envs.opponents import (
    OPPONENT_NAMES,
    EquilibriumOpponent,
    RandomOpponent,
    RuleBasedOpponent,
    make_opponent,
)
from games import analysis
from games.simple_negotiation import ACCEPT, DENY

PASS, BET = 0, 1


def play(game, seats, seed):
    """One game with `seats[p]` playing player p; chance and opponents share one RNG."""
    rng = random.Random(seed)
    state = game.new_initial_state()
    while not state.is_terminal():
        if state.is_chance_node():
            actions, probabilities = zip(*state.chance_outcomes())
            state.apply_action(rng.choices(actions, probabilities)[0])
        else:
            player = state.current_player()
            action = seats[player].act(state, player, rng)
            assert action in state.legal_actions()
            state.apply_action(action)
    return state


def alternate(player, other, seed):
    """Seats for game `seed`: `player` moves first in even games, second in odd ones."""
    return [player, other] if seed % 2 == 0 else [other, player]


def seat_policies(game, by_player):
    """One policy mapping with each player's part from `by_player[p]`'s probabilities."""
    tree = analysis.game_tree(game)
    tables = [analysis.tabular_policy(tree, opponent.action_probabilities) for opponent in by_player]
    return tree, {key: tables[int(key.split("|")[0])][key] for key in tree.infoset_keys}


@pytest.fixture(scope="module")
def equilibrium():
    return EquilibriumOpponent(games.load("kuhn_poker"))


GAMES = [
    ("kuhn_poker", {}),
    ("kuhn_poker", {"hands": 3}),
    ("tic_tac_toe", {}),
    ("simple_negotiation", {}),
    ("simple_negotiation", {"max_turns": 6, "max_quantity": 4}),
]


# -- the interface ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, params, opponent",
    [(name, params, opponent) for name, params in GAMES for opponent in OPPONENT_NAMES
     if opponent != "equilibrium" or name == "kuhn_poker"],
)
def test_every_action_is_legal_in_every_seat(name, params, opponent):
    game = games.load(name, **params)
    player = make_opponent(opponent, game)
    for seed in range(30):
        play(game, [player, RandomOpponent()] if seed % 2 else [RandomOpponent(), player], seed)
        play(game, [player, player], seed)  # `play` asserts legality move by move


@pytest.mark.parametrize("name, params", GAMES)
def test_same_seed_same_game_and_one_draw_per_move(name, params):
    game = games.load(name, **params)
    seats = [make_opponent("rule_based", game), RandomOpponent()]
    assert play(game, seats, 7).history() == play(game, seats, 7).history()
    assert len({tuple(play(game, seats[::-1], seed).history()) for seed in range(10)}) > 1

    state = game.new_initial_state()
    while state.is_chance_node():
        state.apply_action(state.legal_actions()[0])
    for opponent in seats:
        rng, twin = random.Random(3), random.Random(3)
        opponent.act(state, state.current_player(), rng)
        twin.random()
        assert rng.getstate() == twin.getstate()


def test_act_for_the_wrong_player_is_an_error():
    state = games.load("tic_tac_toe").new_initial_state()
    with pytest.raises(ValueError, match="the player to move is 0"):
        RandomOpponent().act(state, 1, random.Random(0))


def test_make_opponent_names_what_exists():
    kuhn = games.load("kuhn_poker")
    assert isinstance(make_opponent("random", kuhn), RandomOpponent)
    assert make_opponent("rule_based", kuhn, bluff=0.25).bluff == 0.25
    assert make_opponent("equilibrium", kuhn, iterations=10).iterations == 10
    assert [make_opponent(n, kuhn).name for n in OPPONENT_NAMES] == list(OPPONENT_NAMES)
    with pytest.raises(ValueError, match="'minimax'; valid opponents: random, rule_based, equilibrium"):
        make_opponent("minimax", kuhn)
    with pytest.raises(ValueError, match="no equilibrium opponent for game 'tic_tac_toe'; available for"):
        make_opponent("equilibrium", games.load("tic_tac_toe"))

    class Nim:
        name = "nim"

    with pytest.raises(ValueError, match="no rule-based opponent for game 'nim'"):
        make_opponent("rule_based", Nim())
    with pytest.raises(ValueError, match="bluff must be a probability"):
        RuleBasedOpponent(bluff=1.5)


def test_random_opponent_is_uniform():
    state = games.load("tic_tac_toe").new_initial_state()
    state.apply_action(4)
    assert RandomOpponent().action_probabilities(state, 1) == {c: 1 / 8 for c in range(9) if c != 4}


# -- Kuhn Poker -------------------------------------------------------------------------------

def test_rule_based_kuhn_policy_in_full():
    policy = analysis.tabular_policy(games.load("kuhn_poker"), RuleBasedOpponent().action_probabilities)
    bets = {key: dist[BET] for key, dist in policy.items()}
    assert bets == {
        "0|J?:": 0.0, "0|Q?:": 0.0, "0|K?:": 1.0,  # open: bet only a King
        "0|J?:pb": 0.0, "0|Q?:pb": 1.0, "0|K?:pb": 1.0,  # facing a bet: fold only a Jack
        "1|J?:p": 0.0, "1|Q?:p": 0.0, "1|K?:p": 1.0,
        "1|J?:b": 0.0, "1|Q?:b": 1.0, "1|K?:b": 1.0,
    }
    bluffer = RuleBasedOpponent(bluff=0.25)
    bluffing = analysis.tabular_policy(games.load("kuhn_poker"), bluffer.action_probabilities)
    assert bluffing["0|J?:"] == bluffing["1|J?:p"] == {PASS: 0.75, BET: 0.25}
    assert bluffing["1|J?:b"] == {PASS: 1.0, BET: 0.0}


@pytest.mark.parametrize(
    "opponent",
    [RuleBasedOpponent(bluff=0.3), EquilibriumOpponent(games.load("kuhn_poker"), iterations=50)],
    ids=["rule_based", "equilibrium"],
)
def test_kuhn_opponents_use_only_their_information_state(opponent):
    # Every history of an information set (whatever the other player's cards, in any
    # hand) gets the same probabilities.
    game = games.load("kuhn_poker", hands=2)
    seen = {}
    pending = [game.new_initial_state()]
    while pending:
        state = pending.pop()
        if state.is_terminal():
            continue
        if not state.is_chance_node():
            player = state.current_player()
            key = state.information_state_string(player)
            probabilities = opponent.action_probabilities(state, player)
            assert seen.setdefault(key, probabilities) == probabilities
        for action in state.legal_actions():
            child = state.clone()
            child.apply_action(action)
            pending.append(child)
    assert len(seen) == 300


def test_rule_based_kuhn_beats_random_exactly_and_in_play():
    game = games.load("kuhn_poker")
    random_player, rules = RandomOpponent(), RuleBasedOpponent()
    tree, first = seat_policies(game, [rules, random_player])
    _, second = seat_policies(game, [random_player, rules])
    assert analysis.expected_returns(tree, first)[0] == pytest.approx(1 / 6, abs=1e-12)
    assert analysis.expected_returns(tree, second)[1] == pytest.approx(1 / 4, abs=1e-12)
    # in play, alternating seats: the exact mean is (1/6 + 1/4) / 2 = 5/24 chips a game
    chips = [play(game, alternate(rules, random_player, s), s).returns()[s % 2] for s in range(400)]
    assert statistics.mean(chips) == pytest.approx(0.3425)  # these seeds; SE 0.07
    assert statistics.mean(chips) > 0


def test_rule_based_wins_chips_over_several_hands():
    game = games.load("kuhn_poker", hands=5)
    random_player, rules = RandomOpponent(), RuleBasedOpponent()
    chips = [play(game, alternate(rules, random_player, s), s).returns()[s % 2] for s in range(400)]
    assert statistics.mean(chips) == pytest.approx(0.98)  # exact mean 5 * 5/24 = 1.04


def test_equilibrium_opponent_is_nearly_unexploitable(equilibrium):
    game = games.load("kuhn_poker")
    policy = analysis.tabular_policy(game, equilibrium.action_probabilities)
    assert analysis.exploitability(game, policy) < 2e-4  # CFR+, 1000 iterations: 8.7e-5
    assert analysis.expected_returns(game, policy)[0] == pytest.approx(-1 / 18, abs=1e-4)
    # The rule-based player is far more exploitable.
    rules = analysis.tabular_policy(game, RuleBasedOpponent().action_probabilities)
    assert analysis.exploitability(game, rules) == pytest.approx(1 / 6, abs=1e-12)


def test_equilibrium_opponent_plays_every_hand_of_a_longer_game_at_equilibrium(equilibrium):
    # Hand 2 is opened by player 1, so player 1 then plays the first-to-act role.
    tree = analysis.game_tree(games.load("kuhn_poker", hands=2))
    policy = analysis.tabular_policy(tree, equilibrium.action_probabilities)
    assert analysis.exploitability(tree, policy) < 4e-4  # twice the single hand's
    assert analysis.expected_returns(tree, policy) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert policy["1|KQ:bb|J?:"] == equilibrium.policy["0|J?:"]
    assert policy["0|JK:pbb|J?:p"] == equilibrium.policy["1|J?:p"]


def test_equilibrium_policy_is_computed_per_instance():
    game = games.load("kuhn_poker")
    short, long = EquilibriumOpponent(game, iterations=5), EquilibriumOpponent(game, iterations=500)
    assert short.policy != long.policy
    assert analysis.exploitability(game, short.policy) > analysis.exploitability(game, long.policy)


# -- Tic-tac-toe ------------------------------------------------------------------------------

def test_rule_based_tic_tac_toe_never_loses_moving_first():
    # Every line of play: the rules' every possible choice against every reply.
    game, rules = games.load("tic_tac_toe"), RuleBasedOpponent()
    outcomes = Counter()
    pending = [game.new_initial_state()]
    while pending:
        state = pending.pop()
        if state.is_terminal():
            outcomes[state.returns()[0]] += 1
            continue
        if state.current_player() == 0:
            moves = [a for a, p in rules.action_probabilities(state, 0).items() if p > 0]
        else:
            moves = state.legal_actions()
        for move in moves:
            child = state.clone()
            child.apply_action(move)
            pending.append(child)
    assert outcomes == {1.0: 408, 0.0: 64}


def test_rule_based_tic_tac_toe_against_random():
    game, rules, random_player = games.load("tic_tac_toe"), RuleBasedOpponent(), RandomOpponent()
    first = Counter(play(game, [rules, random_player], s).returns()[0] for s in range(500))
    second = Counter(play(game, [random_player, rules], s).returns()[1] for s in range(500))
    assert first == {1.0: 477, 0.0: 23}
    assert second == {1.0: 424, 0.0: 68, -1.0: 8}  # a random first player can fork it


@pytest.mark.parametrize(
    "moves, expected",
    [
        ([0, 3, 1, 4], {2: 1.0}),  # X completes the top row rather than block 5
        ([0, 4, 8, 2], {6: 1.0}),  # X blocks O's diagonal 2-4-6
        ([0], {4: 1.0}),  # centre
        ([4], {0: 0.25, 2: 0.25, 6: 0.25, 8: 0.25}),  # any corner
    ],
)
def test_rule_based_tic_tac_toe_priorities(moves, expected):
    state = games.load("tic_tac_toe").new_initial_state()
    for move in moves:
        state.apply_action(move)
    assert RuleBasedOpponent().action_probabilities(state, state.current_player()) == expected


# -- Simple Negotiation -----------------------------------------------------------------------

def test_rule_based_negotiation_never_falls_behind_random():
    # It accepts only trades that leave it level or ahead, and its own offers leave it
    # ahead, so it can never lose.
    game, rules, random_player = games.load("simple_negotiation"), RuleBasedOpponent(), RandomOpponent()
    first = Counter(play(game, [rules, random_player], s).returns()[0] for s in range(200))
    second = Counter(play(game, [random_player, rules], s).returns()[1] for s in range(200))
    assert first == {1.0: 140, 0.0: 60}
    assert second == {1.0: 157, 0.0: 43}


def test_rule_based_negotiation_offers_a_trade_both_sides_gain_from():
    game = games.load("simple_negotiation")
    state = game.new_initial_state()
    opening = RuleBasedOpponent().act(state, 0, random.Random(0))
    # Player 0 values Gold 15 and Wood 5: 4 Wood for 10 Gold gains it 130 and player 1
    # (Wood 15, Gold 5) 10; asking for more would leave player 1 no gain.
    assert game.offer_from_action(opening) == (4, 0, 0, 10)
    state.apply_action(opening)
    reply = RuleBasedOpponent().act(state, 1, random.Random(0))
    assert reply != ACCEPT  # it would put player 1 120 behind
    assert game.offer_from_action(reply) == (0, 4, 10, 0)


@pytest.mark.parametrize(
    "offer, accepted",
    [
        ((0, 1, 1, 0), True),  # player 1 gives 1 Gold for 1 Wood: both gain 10, still level
        ((0, 3, 2, 0), True),  # 3 Gold for 2 Wood: player 0 gains 35, player 1 only 15
        ((0, 1, 2, 0), False),  # player 0 would gain 5 but fall 20 behind
        ((3, 0, 0, 1), False),  # 3 Wood for 1 Gold: player 0 gains 15 - 15 = 0
    ],
)
def test_rule_based_negotiation_answers(offer, accepted):
    game = games.load("simple_negotiation")
    state = game.new_initial_state()
    state.apply_action(game.action_from_offer((0, 1, 1, 0)))  # player 0 offers; player 1 counters
    state.apply_action(game.action_from_offer(offer))
    decision = RuleBasedOpponent().act(state, 0, random.Random(0))
    if accepted:
        assert decision == ACCEPT
    else:  # it counters with its own offer rather than accept
        assert game.offer_from_action(decision) == (4, 0, 0, 10)


def test_rule_based_negotiation_denies_when_no_trade_suits_both():
    game = games.load("simple_negotiation")
    state = game.new_initial_state()
    for action in [game.action_from_offer((10, 0, 0, 10)), ACCEPT,  # all Wood for all Gold
                   game.action_from_offer((0, 1, 1, 0)), game.action_from_offer((1, 0, 0, 1))]:
        state.apply_action(action)
    # Player 0 holds Gold only, player 1 Wood only; player 0 gives Gold only for more
    # than 3 Wood each, which player 1 would never gain from.
    assert state.inventory(0) == (0, 20) and state.inventory(1) == (20, 0)
    assert RuleBasedOpponent().act(state, 0, random.Random(0)) == DENY
