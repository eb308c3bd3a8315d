"""The Gymnasium single-agent view of a game against fixed opponents."""

import gymnasium
import pytest

import envs
from envs.opponents import Opponent


def test_view_against_rule_based_kuhn_player_reports_the_hand_result():
    env = envs.make_gym("kuhn_poker", opponent="rule_based", seat=0)
    observation, info = env.reset(seed=0)
    assert info["seat"] == 0 and observation["legal_actions"] == ("[check]", "[bet]")
    _, reward, terminated, truncated, _ = env.step("\\boxed{[bet]}")
    # the rule-based player folds a J, calls with Q or K: the hand ends either way
    assert terminated and not truncated
    assert reward in (1.0, 2.0, -2.0)


class LowestCellOpponent(Opponent):
    """Always takes the lowest-numbered free cell: moves known in advance."""

    name = "lowest_cell"

    def action_probabilities(self, state, player):
        return {min(state.legal_actions()): 1.0}


def test_second_seat_sees_the_board_after_each_opponent_move():
    env = envs.make_gym("tic_tac_toe", opponent=LowestCellOpponent(), seat=1)
    observation, _ = env.reset(seed=4)
    assert "X|1|2\n3|4|5\n6|7|8\nYou are Player 1 (O). Move 2: you to play." in observation["prompt"]
    assert observation["legal_actions"] == ("[1]", "[2]", "[3]", "[4]", "[5]", "[6]", "[7]", "[8]")
    observation, reward, terminated, _, _ = env.step("\\boxed{[4]}")
    assert "X|X|2\n3|O|5\n6|7|8\nYou are Player 1 (O). Move 4: you to play." in observation["prompt"]
    assert (reward, terminated) == (0.0, False)


def test_step_and_render_before_reset_say_to_call_reset():
    env = envs.make_gym("tic_tac_toe")
    with pytest.raises(RuntimeError, match=r"SingleAgentEnv.step\(\) called before reset\(\); call reset\(\) first"):
        env.step(0)
    with pytest.raises(RuntimeError, match=r"render\(\) called before reset\(\)"):
        env.render()


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
