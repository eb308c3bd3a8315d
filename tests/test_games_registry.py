"""The games registry: load by name with parameters, list, register, clear errors."""

import pytest

import games
from envs.checker import GameProtocolError, check_game
from games.kuhn_poker import KuhnPokerGame, KuhnPokerState
from games.simple_negotiation import SimpleNegotiationGame
from games.tic_tac_toe import TicTacToeGame


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so that registering in a test leaks nowhere."""
    monkeypatch.setattr(games, "_REGISTRY", dict(games._REGISTRY))


def test_list_games_names_the_built_in_games_sorted():
    names = games.list_games()
    assert {"kuhn_poker", "simple_negotiation", "tic_tac_toe"} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize(
    "name, cls, params",
    [
        ("kuhn_poker", KuhnPokerGame, {"hands": 1}),
        ("tic_tac_toe", TicTacToeGame, {}),
        ("simple_negotiation", SimpleNegotiationGame, {"max_turns": 10, "max_quantity": 10}),
    ],
)
def test_load_builds_each_game_with_its_defaults(name, cls, params):
    game = games.load(name)
    assert isinstance(game, cls)
    assert game.name == name
    assert game.params() == params
    assert game.num_players() == 2


def terminal_states(game, key=None):
    """Every terminal state of `game`; with `key`, states of equal key are walked once."""
    seen, terminals, stack = set(), [], [game.new_initial_state()]
    while stack:
        state = stack.pop()
        if key is not None:
            identity = key(state)
            if identity in seen:
                continue
            seen.add(identity)
        if state.is_terminal():
            terminals.append(state)
            continue
        for action in state.legal_actions():  # chance outcomes at chance nodes
            child = state.clone()
            child.apply_action(action)
            stack.append(child)
    return terminals


@pytest.mark.parametrize(
    "name, params, key, count, outcomes",
    [
        ("kuhn_poker", {}, None, 30, {-2, -1, 1, 2}),  # 6 deals x 5 betting lines
        ("kuhn_poker", {"hands": 2}, None, 900, {-4, -3, -2, -1, 0, 1, 2, 3, 4}),
        ("tic_tac_toe", {}, str, 958, {-1, 0, 1}),  # the 958 distinct final boards
        ("simple_negotiation", {"max_turns": 2, "max_quantity": 2}, None, 80, {-1, 0, 1}),
    ],
)
def test_every_terminal_state_of_a_zero_sum_game_sums_to_zero(name, params, key, count, outcomes):
    game = games.load(name, **params)
    assert game.is_zero_sum()
    terminals = terminal_states(game, key)
    assert len(terminals) == count
    assert all(sum(state.returns()) == 0 for state in terminals)
    assert {state.returns()[0] for state in terminals} == outcomes


class RakedKuhnPokerGame(KuhnPokerGame):
    """Kuhn Poker where the house keeps one chip of every pot: not zero-sum, yet it
    inherits `is_zero_sum() == True`, the mistake the checker must catch."""

    def new_initial_state(self):
        return RakedKuhnPokerState(self)


class RakedKuhnPokerState(KuhnPokerState):
    def returns(self):
        rake = 0.5 if self.is_terminal() else 0.0
        return [chips - rake for chips in super().returns()]


def test_a_game_wrongly_declared_zero_sum_is_caught_by_the_checker():
    check_game(KuhnPokerGame())
    with pytest.raises(GameProtocolError, match=r"sum to -1.0, but is_zero_sum\(\) is True"):
        check_game(RakedKuhnPokerGame())


def test_load_passes_parameters():
    assert games.load("kuhn_poker", hands=5).params() == {"hands": 5}
    assert repr(games.load("simple_negotiation", max_turns=4)) == (
        "SimpleNegotiationGame(max_turns=4, max_quantity=10)"
    )


def test_unknown_game_names_the_registered_ones():
    with pytest.raises(ValueError) as error:
        games.load("chess")
    message = str(error.value)
    assert "unknown game 'chess'" in message
    assert "kuhn_poker" in message and "tic_tac_toe" in message


def test_unknown_parameter_names_the_valid_ones(monkeypatch):
    expected = r"unknown parameter\(s\) \['players'\]; valid parameters: hands"
    with pytest.raises(ValueError, match=expected):
        games.load("kuhn_poker", players=3)
    with pytest.raises(ValueError, match="valid parameters: line_notes$"):
        games.load("tic_tac_toe", size=4)
    with pytest.raises(ValueError, match="valid parameters: max_turns, max_quantity, shown_moves, offer_notes$"):
        games.load("simple_negotiation", turns=4)
    monkeypatch.setitem(games._REGISTRY, "parameterless", lambda: None)
    with pytest.raises(ValueError, match="valid parameters: none"):
        games.load("parameterless", size=4)


def test_register_a_factory_and_a_module_path(registry):
    games.register_game("short_negotiation", lambda: SimpleNegotiationGame(max_turns=2))
    assert games.load("short_negotiation").max_game_length() == 2
    games.register_game("ttt_again", "games.tic_tac_toe:TicTacToeGame")
    assert isinstance(games.load("ttt_again"), TicTacToeGame)
    assert "short_negotiation" in games.list_games()


def test_register_refuses_to_replace_silently(registry):
    with pytest.raises(ValueError, match="already registered"):
        games.register_game("kuhn_poker", TicTacToeGame)
    games.register_game("kuhn_poker", TicTacToeGame, overwrite=True)
    assert isinstance(games.load("kuhn_poker"), TicTacToeGame)


@pytest.mark.parametrize("name", ["", None])
def test_register_needs_a_name(registry, name):
    with pytest.raises(ValueError, match="non-empty string"):
        games.register_game(name, TicTacToeGame)
