"""Kuhn Poker: the classic game equals OpenSpiel's; the multi-hand game scores chips."""

import random

import pyspiel
import pytest

import games
from games.base import CHANCE_PLAYER, TERMINAL_PLAYER, IllegalActionError

J, Q, K = 0, 1, 2
PASS, BET = 0, 1


def all_states(state):
    """Every state reachable from `state` (itself included), depth first."""
    yield state
    for action in state.legal_actions():
        child = state.clone()
        child.apply_action(action)
        yield from all_states(child)


def play(history, hands=1):
    state = games.load("kuhn_poker", hands=hands).new_initial_state()
    for action in history:
        state.apply_action(action)
    return state


def spiel_terminal_returns(state, prefix=()):
    """{history: returns} over all terminal histories of an OpenSpiel state."""
    if state.is_terminal():
        return {prefix: tuple(state.returns())}
    out = {}
    for action in state.legal_actions():
        out.update(spiel_terminal_returns(state.child(action), prefix + (action,)))
    return out


# -- one hand: identical to OpenSpiel --------------------------------------------------


def test_single_hand_matches_openspiel_terminal_histories_and_returns():
    ours = {
        tuple(s.history()): tuple(s.returns())
        for s in all_states(play([]))
        if s.is_terminal()
    }
    theirs = spiel_terminal_returns(pyspiel.load_game("kuhn_poker").new_initial_state())
    assert len(ours) == len(theirs) == 30  # 6 deals x 5 betting sequences
    assert ours == theirs


def test_single_hand_matches_openspiel_chance_legal_actions_and_information_sets():
    spiel_game = pyspiel.load_game("kuhn_poker")
    ours_to_theirs = {}
    theirs_to_ours = {}
    for state in all_states(play([])):
        spiel_state = spiel_game.new_initial_state()
        for action in state.history():
            spiel_state.apply_action(action)
        assert state.legal_actions() == spiel_state.legal_actions()
        if state.is_chance_node():
            ours, theirs = state.chance_outcomes(), spiel_state.chance_outcomes()
            assert [a for a, _ in ours] == [a for a, _ in theirs]
            assert [p for _, p in ours] == pytest.approx([p for _, p in theirs])
        elif not state.is_terminal():
            assert state.current_player() == spiel_state.current_player()
            for player in (0, 1):
                key = state.information_state_string(player)
                # OpenSpiel's keys omit the player, so pair them with it
                spiel_key = (player, spiel_state.information_state_string(player))
                assert ours_to_theirs.setdefault(key, spiel_key) == spiel_key
                assert theirs_to_ours.setdefault(spiel_key, key) == key
    # the same partition of decision nodes into information sets (12 per player)
    assert len({k for k in ours_to_theirs if k.startswith("0")}) == 12
    assert len({k for k in ours_to_theirs if k.startswith("1")}) == 12


def test_single_hand_action_strings_and_flow():
    state = play([])
    assert state.current_player() == CHANCE_PLAYER
    assert state.chance_outcomes() == [(J, 1 / 3), (Q, 1 / 3), (K, 1 / 3)]
    assert state.action_to_string(K) == "Deal:K"
    state.apply_action(K)
    assert state.chance_outcomes() == [(J, 0.5), (Q, 0.5)]
    state.apply_action(J)
    assert state.current_player() == 0
    assert [state.action_to_string(a) for a in state.legal_actions()] == ["[check]", "[bet]"]
    state.apply_action(PASS)
    state.apply_action(BET)
    assert [state.action_to_string(a) for a in state.legal_actions()] == ["[fold]", "[call]"]
    state.apply_action(BET)
    assert state.current_player() == TERMINAL_PLAYER
    assert state.returns() == [2.0, -2.0]  # K beats J, 2 chips each in the pot
    assert state.legal_actions() == []
    with pytest.raises(IllegalActionError):
        state.apply_action(PASS)


def test_single_hand_fold_wins_the_ante():
    assert play([J, K, BET, PASS]).returns() == [1.0, -1.0]
    assert play([J, K, PASS, PASS]).returns() == [-1.0, 1.0]


@pytest.mark.parametrize("hands", [0, -1, 1.5, True, "2"])
def test_rejects_bad_number_of_hands(hands):
    with pytest.raises(ValueError, match="hands must be an integer >= 1"):
        games.load("kuhn_poker", hands=hands)


# -- several hands: chips won over all hands -------------------------------------------


def test_two_hands_first_player_alternates_and_chips_add_up():
    # Hand 1 (player 0 opens): K vs J, player 0 bets, player 1 folds -> player 0 +1.
    state = play([K, J, BET, PASS], hands=2)
    assert state.hand_number() == 2
    assert state.returns() == [1.0, -1.0]
    state.apply_action(J)
    state.apply_action(Q)
    assert state.current_player() == 1  # player 1 opens hand 2
    # Hand 2: J vs Q, player 1 checks, player 0 bets, player 1 calls -> player 1 +2.
    for action in (PASS, BET, BET):
        state.apply_action(action)
    assert state.is_terminal()
    assert state.returns() == [-1.0, 1.0]


def test_three_hands_returns_are_chips_won_not_last_hand_winner():
    history = [
        Q, K, PASS, BET, BET,  # hand 1, player 0 opens: Q loses to K called -> p1 +2
        K, J, BET, BET,  # hand 2, player 1 opens and bets, player 0 calls with K -> p0 +2
        J, Q, BET, PASS,  # hand 3, player 0 bluffs with J, player 1 folds -> p0 +1
    ]
    state = play(history, hands=3)
    assert state.is_terminal()
    assert state.returns() == [1.0, -1.0]
    assert games.load("kuhn_poker", hands=3).max_game_length() == 9


def test_two_hands_every_terminal_is_zero_sum_and_bounded():
    terminals = [s for s in all_states(play([], hands=2)) if s.is_terminal()]
    assert len(terminals) == 30 * 30
    for state in terminals:
        returns = state.returns()
        assert sum(returns) == 0
        assert abs(returns[0]) <= 4  # at most 2 chips per hand


def test_three_hands_random_play_is_zero_sum():
    rng = random.Random(7)
    game = games.load("kuhn_poker", hands=3)
    for _ in range(300):
        state = game.new_initial_state()
        moves = 0
        while not state.is_terminal():
            if state.is_chance_node():
                actions, probs = zip(*state.chance_outcomes())
                state.apply_action(rng.choices(actions, probs)[0])
            else:
                state.apply_action(rng.choice(state.legal_actions()))
                moves += 1
        assert sum(state.returns()) == 0
        assert 6 <= moves <= 9


def _view(history, player):
    """What `player` knows after `history`, computed independently from the rules text:
    per hand its own card, the opponent's card only if the hand reached a showdown, and
    the betting sequence."""
    view, i = [], 0
    while i < len(history):
        cards = history[i : i + 2]
        i += len(cards)
        if len(cards) <= player:
            break  # this player's card of the hand is not dealt yet
        bets = []
        while i < len(history):
            bets.append(history[i])
            i += 1
            if len(bets) == 3 or (len(bets) == 2 and bets != [PASS, BET]):
                break
        finished = len(bets) == 3 or (len(bets) == 2 and bets != [PASS, BET])
        folded = finished and bets[-1] == PASS and BET in bets
        shown = cards[1 - player] if finished and not folded else None
        view.append((cards[player], shown, tuple(bets)))
    return player, tuple(view)


def test_two_hand_information_sets_are_exactly_what_the_player_knows():
    key_to_view = {}
    view_to_key = {}
    for state in all_states(play([], hands=2)):
        for player in (0, 1):
            key = state.information_state_string(player)
            view = _view(state.history(), player)
            assert key_to_view.setdefault(key, view) == view
            assert view_to_key.setdefault(view, key) == key


def test_folded_card_stays_hidden_and_showdown_card_is_shown():
    after_fold_j = play([K, J, BET, PASS, Q, K], hands=2)
    after_fold_q = play([K, Q, BET, PASS, Q, K], hands=2)
    assert after_fold_j.information_state_string(0) == after_fold_q.information_state_string(0)
    assert after_fold_j.information_state_string(0) == "0|K?:bp|Q?:"
    after_showdown_j = play([K, J, PASS, PASS, Q, K], hands=2)
    after_showdown_q = play([K, Q, PASS, PASS, Q, K], hands=2)
    assert after_showdown_j.information_state_string(0) == "0|KJ:pp|Q?:"
    assert after_showdown_q.information_state_string(0) == "0|KQ:pp|Q?:"
    assert "Player 1 had J" in after_showdown_j.observation_string(0)
    assert "Player 1 had" not in after_fold_j.observation_string(0)


def test_observation_is_a_function_of_the_information_state():
    observation_of = {}
    for state in all_states(play([], hands=2)):
        for player in (0, 1):
            key = state.information_state_string(player)
            observation = state.observation_string(player)
            assert observation_of.setdefault(key, observation) == observation


def test_observation_never_reveals_the_opponents_current_card():
    game = games.load("kuhn_poker", hands=2)
    for state in all_states(play([], hands=2)):
        if state.is_chance_node() or state.is_terminal():
            continue
        history = state.history()
        hand_start = 0 if state.hand_number() == 1 else _hand2_start(history)
        for player in (0, 1):
            opponent_card_at = hand_start + (1 - player)
            own_card = history[hand_start + player]
            observations = set()
            for card in (J, Q, K):
                if card == own_card:
                    continue
                variant = game.new_initial_state()
                for i, action in enumerate(history):
                    variant.apply_action(card if i == opponent_card_at else action)
                observations.add(variant.observation_string(player))
            assert len(observations) == 1, (history, player)


def _hand2_start(history):
    """Index of the first card of hand 2 (the two deals of hand 1 and its bets come first)."""
    bets = []
    for i in range(2, len(history)):
        bets.append(history[i])
        if len(bets) == 3 or (len(bets) == 2 and bets != [PASS, BET]):
            return i + 1
    raise AssertionError("hand 1 has not finished")


def test_observation_text_of_a_multi_hand_game():
    state = play([K, J, BET, PASS, Q, K, PASS], hands=2)
    text = state.observation_string(0)
    assert "Hand 2 of 2." in text
    assert "Chips won so far: you +1, Player 1 -1." in text
    assert "Your card: Q (the middle card: it beats J and loses to K)." in text
    assert "Moves this hand: Player 1 [check]." in text


def test_card_notes_describe_the_card_and_change_nothing_else():
    from games.analysis import exploitability, uniform_policy

    plain, noted = games.load("kuhn_poker", card_notes=False), games.load("kuhn_poker")
    for cards, note in ((0, "J (the lowest card: it wins no showdown)"), (2, "K (the highest card: it wins every showdown)")):
        state = noted.new_initial_state()
        state.apply_action(cards)
        state.apply_action(1)
        assert f"Your card: {note}." in state.observation_string(0)
        bare = plain.new_initial_state()
        bare.apply_action(cards)
        bare.apply_action(1)
        assert bare.information_state_string(0) == state.information_state_string(0)
    assert noted.params() == {"hands": 1} and plain.params() == {"hands": 1, "card_notes": False}
    assert exploitability(noted, uniform_policy(noted)) == pytest.approx(exploitability(plain, uniform_policy(plain)))
    with pytest.raises(ValueError, match="card_notes must be true or false"):
        games.load("kuhn_poker", card_notes="yes")
