"""The documented example: a new game in one file plus one register call."""

import gymnasium

import envs
import examples.nim  # noqa: F401  (registers "nim")
import games
from games import analysis


def test_registered_example_plays_through_text():
    env = envs.make("nim", stones=4, mode="direct")
    env.reset(seed=0)
    env.step("\\boxed{[take 3]}")  # player 0 leaves 1 stone
    env.step("[TAKE 1]")  # player 1 takes the last one
    assert env.terminations["player_0"]
    assert env._cumulative_rewards == {"player_0": -1.0, "player_1": 1.0}


def test_example_gets_gymnasium_opponents_and_analysis_for_free():
    env = gymnasium.make("selfplay/nim-v0", stones=5, opponent="random")
    observation, _ = env.reset(seed=0)
    assert "Stones left: 5" in observation["prompt"]
    game = games.load("nim", stones=5)
    # with 5 stones the first player wins by taking 1 (leaving a multiple of 4)
    policy = analysis.cfr(game, 300)
    assert analysis.expected_returns(game, policy)[0] > 0.95
