"""Every registered env (and the documented example) passes the one checker; a broken
game fails it with its defect named."""

import gymnasium
import pytest

import envs
import examples.nim  # noqa: F401  (registers "nim")
import games
from envs.checker import GameProtocolError, check_game


@pytest.mark.parametrize("env_id", envs.list_envs())
def test_every_registered_env_passes_the_checker(env_id):
    report = envs.check(env_id, fuzz_examples=150)
    assert "text fuzzing" in report.passed
    assert report.fuzz_examples == 150
    assert report.fuzz_invalid > 0
    if report.kind == "game":
        assert {"pettingzoo.api_test", "pettingzoo.seed_test", "pettingzoo.parallel_api_test"} <= set(report.passed)
        assert report.fuzz_valid > 0  # the fuzzer does reach legal answers


def test_multi_hand_kuhn_passes_too():
    report = envs.check("kuhn_poker", hands=3, fuzz_examples=50)
    assert {"pettingzoo.api_test", "pettingzoo.seed_test", "pettingzoo.parallel_api_test", "text fuzzing"} <= set(report.passed)
    assert report.fuzz_examples == 50 and report.fuzz_valid > 0 and report.fuzz_invalid > 0
    assert envs.make("kuhn_poker", hands=3).game.hands == 3  # the checked env plays three hands


# -- the game-protocol walk: each defect of a game is named before any API test runs -----

TEST_ENV_ID = "checker_test_game"


class MatchingPenniesState(games.State):
    def current_player(self):
        return games.TERMINAL_PLAYER if len(self._history) == 2 else len(self._history)

    def _legal_actions(self):
        return [0, 1]

    def _apply_action(self, action):
        pass

    def action_to_string(self, action):
        return ("[heads]", "[tails]")[action]

    def returns(self):
        if not self.is_terminal():
            return [0.0, 0.0]
        return [1.0, -1.0] if self._history[0] == self._history[1] else [-1.0, 1.0]

    def observation_string(self, player):
        return f"You are Player {player}. Coins shown: {len(self._history)}."

    def information_state_string(self, player):
        return f"{player}:{len(self._history)}"


class MatchingPenniesGame(games.Game):
    """Each player shows heads or tails once, in turn; player 0 wins if they match."""

    name = TEST_ENV_ID
    state_class = MatchingPenniesState

    def num_players(self):
        return 2

    def num_distinct_actions(self):
        return 2

    def max_game_length(self):
        return 2

    def new_initial_state(self):
        return self.state_class(self)


def broken(**methods):
    """A MatchingPenniesGame whose states override `methods`."""
    state_class = type("BrokenState", (MatchingPenniesState,), methods)
    return type("BrokenGame", (MatchingPenniesGame,), {"state_class": state_class})


@pytest.fixture
def register_test_game(monkeypatch):
    """Register a game under TEST_ENV_ID for one test; every registry is restored after."""
    monkeypatch.setattr(envs.registry, "_SPECS", dict(envs.registry._SPECS))
    monkeypatch.setattr(games, "_REGISTRY", dict(games._REGISTRY))

    def register(game_class):
        envs.register(TEST_ENV_ID, game=game_class, overwrite=True)
        return TEST_ENV_ID

    yield register
    gymnasium.registry.pop(envs.gym_id(TEST_ENV_ID), None)


def test_the_sound_test_game_passes_every_check(register_test_game):
    report = envs.check(register_test_game(MatchingPenniesGame), fuzz_examples=20, cycles=10)
    assert report.passed[0] == "game protocol" and "pettingzoo.api_test" in report.passed
    assert report.protocol_states > 7  # the 7 states of the tree, and the playouts


@pytest.mark.parametrize(
    "game_class, defect",
    [
        (broken(returns=lambda self: [1.0, 0.0] if self.is_terminal() else [0.0, 0.0]),
         r"after actions \[1, 1\]: returns\(\) \[1.0, 0.0\] sum to 1.0, but is_zero_sum\(\) is True"),
        (broken(returns=lambda self: [0.0]),
         r"after actions \[\]: returns\(\) has 1 entries for a 2-player game"),
        (broken(action_to_string=lambda self, action: ("[Heads]", "[ heads ]")[action]),
         r"legal actions 0 and 1 are rendered as '\[Heads\]' and '\[ heads \]', which the answer parser cannot tell apart"),
        (broken(action_to_string=lambda self, action: ("[heads]", "}")[action]),
         r"action 1 is rendered as '}', which the answer parser cannot read back"),
        (broken(_legal_actions=lambda self: [0, 1, 2]),
         r"legal_actions\(\) holds \[2\], outside range\(num_distinct_actions\(\)\) = range\(2\)"),
        (broken(_legal_actions=lambda self: [0, 1, 1]),
         r"legal_actions\(\) lists \[1\] more than once"),
        (broken(current_player=lambda self: games.TERMINAL_PLAYER if len(self._history) == 2 else 2),
         r"current_player\(\) is 2 at a non-terminal, non-chance state; players are 0..1"),
        (broken(current_player=lambda self: len(self._history) % 2),
         r"has not ended after 3 player actions, more than max_game_length\(\) = 2"),
    ],
    ids=["not-zero-sum", "returns-length", "same-text", "unreadable-text", "action-out-of-range",
         "duplicate-action", "player-out-of-range", "endless"],
)
def test_a_broken_game_fails_with_its_defect_named(register_test_game, game_class, defect):
    with pytest.raises(GameProtocolError, match=defect):
        envs.check(register_test_game(game_class), fuzz_examples=5, cycles=5)


def test_a_game_shorter_than_its_stated_minimum_fails():
    """`min_game_length()` sizes a training step's first wave of games; the checker holds a
    game to it (Matching Pennies always lasts two moves: three is a false minimum)."""
    overstated = type("OverstatedGame", (MatchingPenniesGame,), {"min_game_length": lambda self: 3})
    with pytest.raises(GameProtocolError, match=r"ended after 2 player actions, fewer than min_game_length\(\) = 3"):
        check_game(overstated())
    exact = type("ExactGame", (MatchingPenniesGame,), {"min_game_length": lambda self: 2})
    check_game(exact())


def test_a_game_that_understates_its_length_cannot_hang_the_checker():
    endless = broken(current_player=lambda self: len(self._history) % 2)
    endless.max_game_length = lambda self: 10**12
    with pytest.raises(GameProtocolError, match=r"not ended after 1000 actions \(the checker's cap\)"):
        check_game(endless(), action_cap=1_000)
