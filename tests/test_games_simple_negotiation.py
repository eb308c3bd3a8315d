"""Simple Negotiation: action space, legality, trades, the turn limit and the returns."""

import random

import pytest

import envs
import games
from games.base import TERMINAL_PLAYER, IllegalActionError
from games.simple_negotiation import ACCEPT, DENY, Offer, format_offer


@pytest.fixture
def game():
    return games.load("simple_negotiation")


def offer(game, give_wood=0, give_gold=0, get_wood=0, get_gold=0):
    return game.action_from_offer((give_wood, give_gold, get_wood, get_gold))


def play(game, actions):
    state = game.new_initial_state()
    for action in actions:
        state.apply_action(action)
    return state


# -- the action space -------------------------------------------------------------------


def test_action_layout(game):
    assert game.num_distinct_actions() == 2 + 2 * 10 * 10
    assert game.action_text(ACCEPT) == "[Accept]" and ACCEPT == 0
    assert game.action_text(DENY) == "[Deny]" and DENY == 1
    assert game.action_text(2) == "[Offer: 1 Gold -> 1 Wood]"
    assert game.action_text(3) == "[Offer: 1 Gold -> 2 Wood]"
    assert game.action_text(12) == "[Offer: 2 Gold -> 1 Wood]"
    assert game.action_text(101) == "[Offer: 10 Gold -> 10 Wood]"
    assert game.action_text(102) == "[Offer: 1 Wood -> 1 Gold]"
    assert game.action_text(201) == "[Offer: 10 Wood -> 10 Gold]"
    assert offer(game, give_wood=3, get_gold=5) == 102 + 2 * 10 + 4


def test_every_action_round_trips_through_its_offer_and_text(game):
    texts = [game.action_text(a) for a in range(game.num_distinct_actions())]
    assert len(set(texts)) == len(texts)
    offers = [game.offer_from_action(a) for a in game.offer_actions()]
    assert offers == sorted(offers)  # lexicographic in (give_wood, give_gold, get_wood, get_gold)
    for action, o in zip(game.offer_actions(), offers):
        assert game.action_from_offer(o) == action
        assert texts[action] == format_offer(o)
        # exactly one resource given, the other one asked for
        assert (o.give_wood > 0) != (o.give_gold > 0)
        assert (o.give_wood > 0) == (o.get_gold > 0) and (o.give_gold > 0) == (o.get_wood > 0)


def test_action_space_scales_with_max_quantity():
    small = games.load("simple_negotiation", max_quantity=3)
    assert small.num_distinct_actions() == 2 + 18
    assert small.action_text(19) == "[Offer: 3 Wood -> 3 Gold]"
    assert small.params() == {"max_turns": 10, "max_quantity": 3}


def test_format_offer_omits_zero_quantities():
    assert format_offer(Offer(3, 0, 0, 5)) == "[Offer: 3 Wood -> 5 Gold]"
    assert format_offer(Offer(3, 2, 0, 5)) == "[Offer: 3 Wood + 2 Gold -> 5 Gold]"


@pytest.mark.parametrize(
    "bad",
    [
        (0, 0, 0, 5),  # gives nothing
        (5, 0, 0, 0),  # asks for nothing
        (1, 0, 1, 0),  # wood for wood
        (2, 1, 0, 1),  # gold on both sides
        (11, 0, 0, 1),  # above max_quantity
        (1, 2, 3),  # not four quantities
    ],
)
def test_action_from_offer_rejects_non_offers(game, bad):
    with pytest.raises(ValueError, match="is not an offer"):
        game.action_from_offer(bad)


@pytest.mark.parametrize("action", [ACCEPT, DENY, 202, -1])
def test_offer_from_action_rejects_non_offer_ids(game, action):
    with pytest.raises(ValueError, match="offer ids are 2..201"):
        game.offer_from_action(action)


# -- playing --------------------------------------------------------------------------


def test_opening_moves_are_all_offers(game):
    state = game.new_initial_state()
    assert state.current_player() == 0
    assert state.legal_actions() == list(range(2, 202))
    assert state.pending_offer() is None
    with pytest.raises(IllegalActionError):
        state.apply_action(ACCEPT)


def test_accepted_trade_moves_resources_and_both_gain(game):
    state = play(game, [offer(game, give_wood=5, get_gold=5)])
    assert state.current_player() == 1
    assert state.pending_offer() == (0, Offer(5, 0, 0, 5))
    assert state.legal_actions()[:2] == [ACCEPT, DENY]
    state.apply_action(ACCEPT)
    assert state.inventory(0) == (5, 15) and state.inventory(1) == (15, 5)
    assert state.gain(0) == -25 + 75 and state.gain(1) == 75 - 25
    assert state.pending_offer() is None
    assert ACCEPT not in state.legal_actions() and DENY not in state.legal_actions()


def test_equal_gains_after_ten_turns_are_a_draw(game):
    state = play(game, [offer(game, give_wood=5, get_gold=5), ACCEPT])
    while not state.is_terminal():
        state.apply_action(offer(game, give_wood=1, get_gold=1))  # never answered
    assert state.turns_played() == 10
    assert state.returns() == [0.0, 0.0]


def test_lopsided_trade_wins_for_the_player_who_gained_more(game):
    # Player 0 gives 5 Wood for 1 Gold: player 0 gains -25 + 15 = -10, player 1 +75 - 5 = +70.
    state = play(game, [offer(game, give_wood=5, get_gold=1), ACCEPT])
    state.apply_action(offer(game, give_gold=1, get_wood=1))
    for _ in range(7):
        state.apply_action(DENY if state.pending_offer() else offer(game, give_gold=1, get_wood=1))
    assert state.turns_played() == 10 and state.is_terminal()
    assert (state.gain(0), state.gain(1)) == (-10, 70)
    assert state.returns() == [-1.0, 1.0]


def test_a_counter_offer_denies_the_pending_one_and_can_be_accepted(game):
    state = play(
        game,
        [
            offer(game, give_wood=2, get_gold=8),  # player 0 asks a lot
            offer(game, give_gold=3, get_wood=6),  # player 1 counters instead of answering
        ],
    )
    assert state.pending_offer() == (1, Offer(0, 3, 6, 0))
    state.apply_action(ACCEPT)  # player 0 accepts the counter: 6 Wood for 3 Gold
    assert state.inventory(0) == (4, 13) and state.inventory(1) == (16, 7)
    assert (state.gain(0), state.gain(1)) == (-30 + 45, 90 - 15)


def test_deny_clears_the_offer_and_changes_nothing(game):
    state = play(game, [offer(game, give_wood=5, get_gold=5), DENY])
    assert state.pending_offer() is None
    assert state.inventory(0) == state.inventory(1) == (10, 10)
    assert state.current_player() == 0
    assert state.legal_actions() == list(range(2, 202))


def test_offers_are_limited_to_what_each_player_holds(game):
    # After player 0 trades all 10 Wood for 2 Gold: player 0 (0, 12), player 1 (20, 8).
    state = play(game, [offer(game, give_wood=10, get_gold=2), ACCEPT])
    assert state.inventory(0) == (0, 12) and state.inventory(1) == (20, 8)
    legal = state.legal_actions()  # player 0 has no Wood to give
    assert offer(game, give_wood=1, get_gold=1) not in legal
    assert offer(game, give_gold=10, get_wood=10) in legal
    assert len(legal) == 100
    state.apply_action(offer(game, give_gold=1, get_wood=1))
    legal = state.legal_actions()  # player 1 may not ask for Wood (player 0 has none)
    assert offer(game, give_gold=8, get_wood=1) not in legal
    assert offer(game, give_wood=10, get_gold=10) in legal
    assert legal[:2] == [ACCEPT, DENY] and len(legal) == 2 + 100
    with pytest.raises(IllegalActionError):
        state.apply_action(offer(game, give_gold=1, get_wood=1))


def test_offers_may_not_ask_for_more_than_the_other_player_has(game):
    # Player 1 gives up 9 of its 10 Gold: player 1 then holds (19, 1).
    state = play(game, [offer(game, give_wood=9, get_gold=9), ACCEPT])
    assert state.inventory(1) == (19, 1)
    legal = state.legal_actions()
    assert offer(game, give_wood=1, get_gold=1) in legal
    assert offer(game, give_wood=1, get_gold=2) not in legal


def test_legal_actions_text_names_exactly_the_patterns_with_legal_offers_in_fixed_words(game):
    # after these trades player 0 holds (0, 12), then player 1 nothing to ask Wood for
    state = play(game, [offer(game, give_wood=10, get_gold=2), ACCEPT])
    note = " (N, M from 1 to 10, at most what each side holds)"
    assert state.legal_actions_text(0) == "[Offer: N Gold -> M Wood]" + note
    state.apply_action(offer(game, give_gold=1, get_wood=1))
    assert state.legal_actions_text(1) == "[Accept], [Deny], [Offer: N Wood -> M Gold]" + note
    assert game.new_initial_state().legal_actions_text(0) == "[Offer: N Gold -> M Wood], [Offer: N Wood -> M Gold]" + note
    rng = random.Random(0)
    for _ in range(30):  # every legal action fits a named pattern within the note's bounds
        state = game.new_initial_state()
        while not state.is_terminal():
            player = state.current_player()
            text = state.legal_actions_text(player)
            mine, theirs = state.inventory(player), state.inventory(1 - player)
            seen = set()
            for action in state.legal_actions():
                if action in (ACCEPT, DENY):
                    assert text.startswith("[Accept], [Deny], ")
                    continue
                o = game.offer_from_action(action)
                give, get = (0, 1) if o.give_wood else (1, 0)
                seen.add(f"[Offer: N {('Wood', 'Gold')[give]} -> M {('Wood', 'Gold')[get]}]")
                assert 1 <= o.give[give] <= min(10, mine[give]) and 1 <= o.get[get] <= min(10, theirs[get])
            assert sorted(seen) == sorted(p for p in ("[Offer: N Gold -> M Wood]", "[Offer: N Wood -> M Gold]") if p in text)
            assert ("[Accept]" in text) == (state.pending_offer() is not None)
            state.apply_action(rng.choice(state.legal_actions()))


def test_turn_limit_ends_the_game_and_an_open_offer_lapses():
    game = games.load("simple_negotiation", max_turns=3)
    assert game.max_game_length() == 3
    state = play(game, [offer(game, give_wood=1, get_gold=1), DENY])
    state.apply_action(offer(game, give_wood=4, get_gold=4))
    assert state.is_terminal() and state.current_player() == TERMINAL_PLAYER
    assert state.legal_actions() == []
    assert state.pending_offer() is None
    assert state.returns() == [0.0, 0.0]
    with pytest.raises(IllegalActionError):
        state.apply_action(ACCEPT)


def test_accepting_on_the_last_turn_counts():
    game = games.load("simple_negotiation", max_turns=2)
    # Player 0 gives 1 Wood for 10 Gold: player 0 gains -5 + 150, player 1 +15 - 50.
    state = play(game, [offer(game, give_wood=1, get_gold=10), ACCEPT])
    assert state.is_terminal()
    assert (state.gain(0), state.gain(1)) == (145, -35)
    assert state.returns() == [1.0, -1.0]


def test_random_games_always_have_a_legal_move_and_are_zero_sum(game):
    rng = random.Random(11)
    outcomes = set()
    for _ in range(200):
        state = game.new_initial_state()
        while not state.is_terminal():
            legal = state.legal_actions()
            assert legal
            state.apply_action(rng.choice(legal))
        returns = state.returns()
        assert sum(returns) == 0 and returns[0] in (-1.0, 0.0, 1.0)
        assert sum(state.inventory(0)) + sum(state.inventory(1)) == 40
        outcomes.add(returns[0])
    assert outcomes == {-1.0, 0.0, 1.0}


def test_clone_is_independent(game):
    state = play(game, [offer(game, give_wood=5, get_gold=5)])
    twin = state.clone()
    twin.apply_action(ACCEPT)
    assert state.inventory(0) == (10, 10) and state.pending_offer() is not None
    assert twin.inventory(0) == (5, 15) and twin.pending_offer() is None


# -- views ------------------------------------------------------------------------------


def test_observation_shows_values_turn_inventories_and_the_pending_offer(game):
    state = play(game, [offer(game, give_wood=5, get_gold=4)])
    assert state.observation_string(1) == "\n".join(
        [
            "You are Player 1; a Wood is worth 15 to you, a Gold 5.",
            "Turn 2 of 10. You hold 10 Wood and 10 Gold (gain +0); Player 0 holds 10 Wood and 10 Gold.",
            "Player 0 offers you 5 Wood for 4 Gold.",
        ]
    )
    mine = state.observation_string(0)
    assert "a Wood is worth 5 to you, a Gold 15." in mine
    assert "worth 15 to you" not in mine  # the other player's values stay private
    assert "You offer Player 1 5 Wood for 4 Gold." in mine
    assert mine.endswith("Player 1 is to move.")
    traded = play(game, [offer(game, give_wood=5, get_gold=4), ACCEPT])
    assert "Turn 3 of 10. You hold 5 Wood and 14 Gold (gain +35); Player 1 holds 15 Wood and 6 Gold." in traded.observation_string(0)
    assert "offer" not in traded.observation_string(0)


def test_observation_lists_moves_only_when_asked():
    moves = lambda g: [offer(g, give_wood=1, get_gold=n) for n in (1, 2, 3)]  # noqa: E731
    game = games.load("simple_negotiation")
    assert "Moves" not in play(game, moves(game)).observation_string(0) and "Last" not in play(game, moves(game)).observation_string(0)
    two = games.load("simple_negotiation", shown_moves=2)
    text = play(two, moves(two)).observation_string(0)
    assert "Last 2 moves: Player 1 [Offer: 1 Wood -> 2 Gold]; you [Offer: 1 Wood -> 3 Gold].\n" in text
    every = games.load("simple_negotiation", shown_moves=None)
    assert "Moves so far: you [Offer: 1 Wood -> 1 Gold]; Player 1 [Offer: 1 Wood -> 2 Gold]; you [Offer: 1 Wood -> 3 Gold].\n" in (
        play(every, moves(every)).observation_string(0)
    )
    assert two.params()["shown_moves"] == 2
    assert "shown_moves" not in game.params()
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="shown_moves"):
            games.load("simple_negotiation", shown_moves=bad)


def test_final_observation_states_the_result():
    game = games.load("simple_negotiation", max_turns=2)
    state = play(game, [offer(game, give_wood=1, get_gold=10), ACCEPT])
    assert state.observation_string(0).endswith(
        "Game over. Your gain +145, Player 1's gain -35: You win."
    )
    assert state.observation_string(1).endswith(
        "Game over. Your gain -35, Player 0's gain +145: You lose."
    )


def test_information_state_is_the_player_and_the_move_sequence(game):
    a = play(game, [offer(game, give_wood=5, get_gold=5), DENY])
    b = play(game, [offer(game, give_wood=5, get_gold=4), DENY])
    assert a.information_state_string(0) == f"0:{offer(game, give_wood=5, get_gold=5)},1"
    assert a.information_state_string(1) != a.information_state_string(0)
    assert a.information_state_string(0) != b.information_state_string(0)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"max_turns": 0}, "max_turns must be an integer >= 1"),
        ({"max_turns": 2.5}, "max_turns must be an integer >= 1"),
        ({"max_turns": True}, "max_turns must be an integer >= 1"),
        ({"max_quantity": 0}, "max_quantity must be an integer in 1..20"),
        ({"max_quantity": 21}, "max_quantity must be an integer in 1..20"),
        ({"offer_notes": "yes"}, "offer_notes must be true or false"),
    ],
)
def test_rejects_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        games.load("simple_negotiation", **params)


# -- the score margin and the offer notes ------------------------------------------------


def test_score_margin_is_the_difference_of_gains_scaled_by_max_quantity(game):
    state = play(game, [offer(game, give_gold=1, get_wood=6), ACCEPT])
    # Player 0 gave 1 Gold (-15) for 6 Wood (+30): +15; Player 1 gave 6 Wood (-90) for 1 Gold (+5): -85.
    assert (state.gain(0), state.gain(1)) == (15, -85)
    assert state.score_margin(0) == pytest.approx(100 / 200)
    assert state.score_margin(1) == pytest.approx(-100 / 200)
    assert game.new_initial_state().score_margin(0) == 0.0
    with pytest.raises(ValueError, match="player must be in 0..1"):
        state.score_margin(2)


def test_final_score_margin_has_the_sign_of_the_outcome(game):
    rng = random.Random(3)
    signs = set()
    for _ in range(200):
        state = game.new_initial_state()
        while not state.is_terminal():
            legal = state.legal_actions()
            state.apply_action(ACCEPT if ACCEPT in legal and rng.random() < 0.5 else rng.choice(legal))
        for player in (0, 1):
            margin, outcome = state.score_margin(player), state.returns()[player]
            assert (margin > 0) - (margin < 0) == outcome
            signs.add(outcome)
    assert signs == {-1.0, 0.0, 1.0}


def test_offer_notes_state_what_accepting_would_leave_as_the_decision_note_and_nothing_else_changes():
    noted = games.load("simple_negotiation", offer_notes=True)
    plain = games.load("simple_negotiation")
    assert noted.params()["offer_notes"] is True and "offer_notes" not in plain.params()
    rng = random.Random(5)
    checked = 0
    for _ in range(100):
        state = noted.new_initial_state()
        twin = plain.new_initial_state()
        while not state.is_terminal():
            player = state.current_player()
            text = state.decision_note(player)
            assert state.observation_string(player) == twin.observation_string(player)
            assert twin.decision_note(player) == ""
            pending = state.pending_offer()
            if pending is not None and pending[0] != player:
                after = state.clone()
                after.apply_action(ACCEPT)
                mine, theirs = after.gain(player), after.gain(1 - player)
                lead = mine - theirs
                standing = f"ahead by {lead}" if lead > 0 else f"behind by {-lead}" if lead < 0 else "level"
                note = (f"If you accept: your gain becomes {mine:+d}, Player {1 - player}'s {theirs:+d} "
                        f"(you would be {standing}).")
                assert text == note
                checked += 1
            else:
                assert text == ""
            # the other player's view never carries the note
            assert state.decision_note(1 - player) == ""
            action = rng.choice(state.legal_actions())
            state.apply_action(action)
            twin.apply_action(action)
    assert checked > 50
    env = envs.make("simple_negotiation", mode="choice", offer_notes=True)
    env.reset(seed=0)
    prompt = env.turn_prompt()
    env.step(prompt.action_ids[prompt.choices.index("[Offer: 1 Wood -> 1 Gold]")])
    last_line = env.turn_prompt().text.splitlines()[-1]
    assert last_line.startswith("If you accept: your gain becomes") and last_line.endswith(").")
    with pytest.raises(ValueError, match="no offer is pending"):
        noted.new_initial_state().accepted()
