"""The Gymnasium single-agent view of a game against fixed opponents."""

import gymnasium
import pytest

import envs


def test_view_against_rule_based_kuhn_player_reports_the_hand_result():
    env = envs.make_gym("kuhn_poker", opponent="rule_based", seat=0)
    observation, info = env.reset(seed=0)
    assert info["seat"] == 0 and observation["legal_actions"] == ("[check]", "[bet]")
    _, reward, terminated, truncated, _ = env.step("\\boxed{[bet]}")
    # the rule-based player folds a J, calls with Q or K: the hand ends either way
    assert terminated and not truncated
    assert reward in (1.0, 2.0, -2.0)


def test_second_seat_sees_the_opponent_move_first():
    env = envs.make_gym("tic_tac_toe", opponent="random", seat=1)
    observation, _ = env.reset(seed=4)
    assert observation["prompt"].count("X") >= 2  # the opponent's X is on the board
    assert len(observation["legal_actions"]) == 8


def test_random_seat_is_drawn_from_the_seed():
    env = envs.make_gym("tic_tac_toe", opponent="random", seat="random")
    seats = [env.reset(seed=s)[1]["seat"] for s in range(20)]
    assert set(seats) == {0, 1}
    assert seats == [env.reset(seed=s)[1]["seat"] for s in range(20)]


def test_rewards_over_an_episode_equal_the_game_return():
    env = envs.make_gym("kuhn_poker", hands=4, opponent="random", seat=1)
    observation, _ = env.reset(seed=2)
    total, done = 0.0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(observation["legal_actions"][-1])
        total += reward
        done = terminated or truncated
    assert total == env.env.state.returns()[1]


def test_gymnasium_registration():
    env = gymnasium.make("selfplay/tic_tac_toe-v0", opponent="rule_based")
    observation, _ = env.reset(seed=0)
    assert "Legal actions" in observation["prompt"]
    assert gymnasium.make("selfplay/sat-v0", n=3, k=5, l=5).reset(seed=0)[0].startswith("Find")


def test_bad_seat_and_opponent_are_clear_errors():
    with pytest.raises(ValueError, match="seat must be"):
        envs.make_gym("tic_tac_toe", seat=2)
    with pytest.raises(ValueError, match="random"):
        envs.make_gym("tic_tac_toe", opponent="grandmaster")
