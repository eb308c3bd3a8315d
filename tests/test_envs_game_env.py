"""The PettingZoo text env over a game: turns, rewards, invalid answers, limits, seeds."""

import numpy as np
import pytest

import envs
import examples.nim  # noqa: F401  (registers "nim", whose rules are a string)
from benchmarks.parse_adversarial import adversarial_answers
from envs.game_env import GameEnv
from envs.invalid import InvalidActionPolicy
from envs.parallel import GameParallelEnv
from envs.sat import SatEnv
from envs.spaces import TEXT_CHARSET


def finish(env):
    """Collect final cumulative rewards as PettingZoo's agent loop would see them."""
    seen = {}
    for agent in env.agent_iter():
        _, reward, termination, truncation, _ = env.last()
        seen[agent] = reward
        env.step(None)
    return seen


def test_bet_fold_pays_the_bettor_one_chip():
    env = envs.make("kuhn_poker", mode="direct")
    env.reset(seed=3)
    assert env.agent_selection == "player_0"
    env.step("\\boxed{[bet]}")
    env.step("I give up. \\boxed{[Fold]}")
    assert finish(env) == {"player_0": 1.0, "player_1": -1.0}


def test_observation_has_prompt_legal_actions_and_mask():
    env = envs.make("kuhn_poker", mode="think")
    env.reset(seed=0)
    observation = env.observe("player_0")
    assert observation["legal_actions"] == ("[check]", "[bet]")
    assert observation["action_mask"].tolist() == [1, 1]
    assert "Your card:" in observation["prompt"] and "Think step by step" in observation["prompt"]
    waiting = env.observe("player_1")
    assert waiting["legal_actions"] == () and waiting["action_mask"].tolist() == [0, 0]
    assert env.observation_space("player_0").contains(observation)


def test_integer_actions_work_like_text():
    env = envs.make("tic_tac_toe")
    env.reset(seed=0)
    for cell in (0, 3, 1, 4, 2):  # X takes the top row
        env.step(np.int64(cell))
    assert finish(env) == {"player_0": 1.0, "player_1": -1.0}


def test_default_invalid_policy_is_a_zero_sum_forfeit_of_the_worst_outcome():
    env = envs.make("kuhn_poker")
    env.reset(seed=0)
    env.step("\\boxed{[bet]}")
    env.step("I would like to raise!")  # unparseable
    assert env.infos["player_1"]["invalid_actions"] == 1
    assert env.infos["player_1"]["unparseable_actions"] == 1
    assert finish(env) == {"player_0": 2.0, "player_1": -2.0}  # kuhn max utility is 2


def test_spiral_policy_is_minus_one_and_a_half_and_plus_one_half():
    env = envs.make("tic_tac_toe", invalid_action_policy="spiral")
    env.reset(seed=0)
    env.step("\\boxed{[9]}")  # parsed but illegal
    assert env.infos["player_0"]["last_error"] == "illegal"
    assert env.infos["player_0"]["unparseable_actions"] == 0
    assert finish(env) == {"player_0": -1.5, "player_1": 0.5}


def test_a_retry_asks_again_with_feedback_then_forfeits():
    env = envs.make("tic_tac_toe", invalid_action_policy="textarena")
    env.reset(seed=0)
    env.step("\\boxed{[42]}")
    assert env.agent_selection == "player_0"
    assert not env.terminations["player_0"]
    assert "is not a legal action" in env.observe("player_0")["prompt"]
    env.step("\\boxed{[4]}")  # the retry succeeds
    assert env.agent_selection == "player_1"
    assert "not a legal action" not in env.observe("player_1")["prompt"]
    env.step("nothing")
    env.step("still nothing")
    assert env.infos["player_1"]["invalid_actions"] == 2
    assert finish(env) == {"player_0": 1.0, "player_1": -1.0}


def test_fallback_policy_plays_a_random_legal_move_and_keeps_the_penalty():
    policy = InvalidActionPolicy(offender_reward=-0.5, ends_game=False)
    env = envs.make("tic_tac_toe", invalid_action_policy=policy)
    env.reset(seed=0)
    env.step("gibberish")
    assert len(env.state.history()) == 1 and env.agent_selection == "player_1"
    rewards = finish_with_random_play(env, seed=1)
    assert rewards["player_0"] - (-0.5) in (-1.0, 0.0, 1.0)


def finish_with_random_play(env, seed):
    import random

    rng = random.Random(seed)
    totals = {a: 0.0 for a in env.possible_agents}
    for agent in env.agent_iter():
        observation, reward, termination, truncation, _ = env.last()
        totals[agent] += reward
        if termination or truncation:
            env.step(None)
        else:
            env.step(rng.choice(observation["legal_actions"]))
    return totals


def test_rewards_add_up_to_chips_over_several_hands():
    env = envs.make("kuhn_poker", hands=5)
    env.reset(seed=11)
    totals = finish_with_random_play(env, seed=5)
    assert totals["player_0"] == -totals["player_1"]
    assert totals["player_0"] == env.state.returns()[0]
    assert env.state.hand_number() == 5


def test_turn_limit_scores_a_draw():
    env = envs.make("tic_tac_toe", turn_limit=2)
    env.reset(seed=0)
    env.step(0)
    env.step(4)
    assert env.truncations["player_0"] and env.truncations["player_1"]
    assert finish(env) == {"player_0": 0.0, "player_1": 0.0}


def test_same_seed_same_bytes():
    def transcript(seed):
        env = envs.make("kuhn_poker", hands=3)
        env.reset(seed=seed)
        lines = []
        import random

        rng = random.Random(seed)
        for agent in env.agent_iter():
            observation, reward, termination, truncation, _ = env.last()
            lines.append(observation["prompt"] + repr(reward))
            env.step(None if termination or truncation else rng.choice(observation["legal_actions"]))
        return "\n".join(lines)

    assert transcript(7) == transcript(7)
    assert transcript(7) != transcript(8)


def test_make_errors_name_what_exists():
    with pytest.raises(ValueError, match="registered envs: .*kuhn_poker"):
        envs.make("kuhn_pokr")
    with pytest.raises(ValueError, match="env options: .*mode.*game parameters: hands"):
        envs.make("kuhn_poker", hand=3)
    with pytest.raises(ValueError, match="think, direct, choice"):
        envs.make("kuhn_poker", mode="fast")
    with pytest.raises(ValueError, match="presets: forfeit, spiral, textarena"):
        envs.make("kuhn_poker", invalid_action_policy="lenient")
    with pytest.raises(ValueError, match="hands must be an integer"):
        envs.make("kuhn_poker", hands=0)


def test_list_envs_has_the_built_in_games_and_sat():
    assert {"kuhn_poker", "tic_tac_toe", "simple_negotiation", "sat"} <= set(envs.list_envs())


def test_parallel_form_steps_only_the_player_to_move():
    env = GameParallelEnv(envs.make("tic_tac_toe"))
    observations, _ = env.reset(seed=0)
    assert observations["player_1"]["action_mask"].sum() == 0
    for cell in (0, 3, 1, 4):
        mover = env.agent_to_move
        env.step({mover: cell, "player_0" if mover == "player_1" else "player_1": 8})
    mover = env.agent_to_move
    _, rewards, terminations, _, _ = env.step({mover: 2})
    assert rewards == {"player_0": 1.0, "player_1": -1.0}
    assert all(terminations.values()) and env.agents == []


def test_step_or_observe_before_reset_says_to_call_reset():
    env = envs.make("kuhn_poker")
    with pytest.raises(RuntimeError, match=r"GameEnv.step\(\) called before reset\(\); call reset\(\) first"):
        env.step("\\boxed{[bet]}")
    with pytest.raises(RuntimeError, match=r"observe\(\) called before reset\(\)"):
        env.observe("player_0")
    with pytest.raises(RuntimeError, match=r"turn_prompt\(\) called before reset\(\)"):
        env.turn_prompt()
    with pytest.raises(RuntimeError, match=r"GameParallelEnv.step\(\) called before reset\(\)"):
        GameParallelEnv(envs.make("kuhn_poker")).step({"player_0": 1})
    env.reset(seed=0)
    env.step("\\boxed{[bet]}")
    assert env.agent_selection == "player_1"


def test_megabyte_answers_step_the_env_and_the_retry_prompt_stays_short():
    env = envs.make("kuhn_poker", mode="direct", invalid_action_policy="textarena")
    env.reset(seed=0)
    prompt_length = len(env.observe("player_0")["prompt"])
    for name, answer in adversarial_answers(1_000_000).items():
        env.reset(seed=0)
        env.step(answer)
        if name in ("nested_text", "legal_answer"):  # both name [bet]
            assert env.state.history()[-1] == 1 and env.agent_selection == "player_1", name
        else:  # rejected: player 0 is asked again, with feedback of bounded length
            assert env.infos["player_0"]["invalid_actions"] == 1 and env.agent_selection == "player_0", name
            assert "Your previous" in env.observe("player_0")["prompt"]
            assert len(env.observe("player_0")["prompt"]) < prompt_length + 600, name


def prompt_of(env_id, **kwargs):
    env = envs.make(env_id, **kwargs)
    env.reset(seed=0)
    return env.observe("player_0")["prompt"]


def test_negotiation_rules_state_the_number_of_turns_of_the_game():
    short = prompt_of("simple_negotiation", max_turns=4)
    assert "After 4 turns the player whose inventory value grew more wins" in short
    assert "10 turns" not in short
    assert "After 1 turn the player" in prompt_of("simple_negotiation", max_turns=1)
    assert "Each starts with 10 Wood and 10 Gold" in prompt_of("simple_negotiation")
    assert "After 10 turns the player" in prompt_of("simple_negotiation")


def test_rules_are_a_string_or_a_function_of_the_game():
    assert "Whoever takes the last stone wins." in prompt_of("nim")
    env = GameEnv("kuhn_poker", rules=lambda game: f"Play {game.hands} hands.", hands=3)
    assert env.rules == "Play 3 hands."
    with pytest.raises(ValueError, match="rules must be a string or a function of the game"):
        GameEnv("kuhn_poker", rules=lambda game: None)


def test_game_and_task_envs_accept_the_same_text():
    game_text = envs.make("kuhn_poker").observation_space("player_0")["prompt"]
    task = SatEnv()
    assert game_text.character_set == task.observation_space.character_set == frozenset(TEXT_CHARSET)
    assert task.action_space.character_set == frozenset(TEXT_CHARSET)
    assert game_text.contains("Your previous answer '\u00e9t\u00e9 \u2192 [bet]' is not a legal action.")
