"""TextArena games through the adapter: TextArena's rules, our protocol, policy and seeding."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("textarena")

import envs

# SPIRAL's out-of-domain games as this release names them, and the five-resource negotiation
SPIRAL_GAMES = [
    "textarena:PigDice-v0-short",
    "textarena:LiarsDice-v0",
    "textarena:Nim-v0",
    "textarena:Snake-v0",
    "textarena:TruthAndDeception-v0",
    "textarena:SimpleNegotiation-v0",
]


@pytest.mark.parametrize("env_id", SPIRAL_GAMES)
def test_spiral_games_pass_the_checker(env_id):
    report = envs.check(env_id, fuzz_examples=40, cycles=10)
    assert report.passed == [
        "pettingzoo.api_test",
        "pettingzoo.seed_test",
        "pettingzoo.parallel_api_test",
        "gymnasium.check_env(single-agent view)",
        "text fuzzing",
    ]
    assert report.fuzz_invalid > 0


def test_negotiation_is_the_five_resource_game_with_textarenas_messages():
    env = envs.make("textarena:SimpleNegotiation-v0", mode="direct")
    env.reset(seed=0)
    text = env.turn_prompt().text
    assert text.startswith("You are playing SimpleNegotiation (TextArena's SimpleNegotiation-v0) as Player 0.")
    for resource in ("Wheat", "Wood", "Sheep", "Brick", "Ore"):
        assert f"[{resource}]" in text
    assert text.endswith("for example \\boxed{[Accept]}. Do not explain.")
    env.step("I offer \\boxed{[Offer: 1 Wheat -> 1 Ore]}")
    assert env.turns == 1 and "made the following offer" in env.transcript(1)


def test_same_seed_same_game_and_the_global_random_is_untouched():
    def play(seed):
        env = envs.make("textarena:PigDice-v0-short", mode="direct")
        env.reset(seed=seed)
        rng = random.Random(0)
        while not env.is_over():
            env.step(f"\\boxed{{{rng.choice(['roll', 'hold'])}}}")
        return env.transcript(0), env.episode_returns()

    random.seed(123)
    before = random.getstate()
    first = play(5)
    assert random.getstate() == before
    assert play(5) == first and play(6) != first
    assert sorted(first[1]) == [-1.0, 1.0]


def test_invalid_moves_follow_our_policy():
    env = envs.make("textarena:PigDice-v0-short", mode="direct")  # default forfeit: no retry
    env.reset(seed=0)
    env.step("\\boxed{[fly]}")  # TextArena refuses it
    assert env.is_over() and env.episode_returns() == [-1.0, 1.0]
    assert env.infos["player_0"]["invalid_actions"] == 1 and env.infos["player_0"]["last_error"] == "illegal"

    env = envs.make("textarena:PigDice-v0-short", mode="direct", invalid_action_policy="textarena")
    env.reset(seed=0)
    env.step("no move at all")  # ours: no answer, one retry with feedback
    assert not env.is_over() and "contained no move" in env.turn_prompt().text
    env.step("\\boxed{[fly]}")
    assert env.is_over() and env.episode_returns() == [-1.0, 1.0]
    assert env.infos["player_0"]["unparseable_actions"] == 1 and env.infos["player_0"]["invalid_actions"] == 2

    env = envs.make("textarena:PigDice-v0-short", mode="direct", invalid_action_policy={"retries": 1, "offender_reward": -1.5, "other_reward": 0.5})
    env.reset(seed=0)
    env.step("\\boxed{[fly]}")
    assert "Your previous move was invalid" in env.turn_prompt().text
    env.step("\\boxed{roll}")  # a legal move after the retry: the game goes on, player 1 next or again 0
    assert env.moves_played == ["[roll]"]


def test_turn_limit_is_a_draw():
    env = envs.make("textarena:PigDice-v0", mode="direct", turn_limit=3)
    env.reset(seed=0)
    while not env.is_over():
        env.step("\\boxed{[roll]}")
    assert env.turns == 3 and env.episode_returns() == [0.0, 0.0] and all(env.truncations.values())


def test_bad_requests_are_refused_by_name():
    with pytest.raises(ValueError, match="mode='choice' is not available for TextArena games.*valid modes: think, direct"):
        envs.make("textarena:PigDice-v0", mode="choice")
    with pytest.raises(ValueError, match="ends_game=True"):
        envs.make("textarena:PigDice-v0", invalid_action_policy={"ends_game": False})
    with pytest.raises(ValueError, match="unknown TextArena env 'SimpleNegotiation-v1' in textarena 0.7.4; ids of that game: SimpleNegotiation-v0"):
        envs.make("textarena:SimpleNegotiation-v1")
    with pytest.raises(ValueError, match="'PigDice-v0-raw' is not supported: a wrapper variant of PigDice-v0"):
        envs.make("textarena:PigDice-v0-raw")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['winning'\]"):
        envs.make("textarena:PigDice-v0", winning=3)
    assert envs.make("textarena:PigDice-v0", winning_score=7)._game_kwargs["winning_score"] == 7


def test_list_envs_has_the_release_games():
    supported = envs.list_envs("textarena")
    assert {"textarena:PigDice-v0", "textarena:SimpleNegotiation-v0", "textarena:Snake-v0"} <= set(supported)
    assert not any(e.endswith(("-raw", "-train")) for e in supported)


def test_a_textarena_game_plays_through_the_trainer(tmp_path):
    pytest.importorskip("torch")
    from trainers.selfplay import main

    out = tmp_path / "run"
    code = main([
        "model=tiny-random", "tensorboard=false", "progress=false", "steps=1", "games_per_step=4",
        "eval_games=2", "save_every=1", "threads=1", "max_new_tokens=8", "mode=direct",
        "env=textarena:PigDice-v0-short", f"out={out}",
    ])
    assert code == 0
    final = json.loads((out / "eval" / "step_00000001.json").read_text())
    assert final["textarena:PigDice-v0-short/random"]["games"] == 4
