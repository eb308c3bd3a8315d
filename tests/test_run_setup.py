"""One run set-up for every backend: the trainer and a rollout worker build the same objects from a config."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import envs
from envs.opponents import RuleBasedOpponent
from trainers.run.config import parse_overrides
from trainers.backends.ray.worker import RolloutWorker, game_env_kwargs
from trainers.run.setup import RunSetup, env_arguments, policy_options
from trainers.selfplay import Trainer
from trainers.rollouts.thinking import MarkovianThinking, PlainThinking

BASE = ["model=tiny-random", "threads=1", "tensorboard=false", "progress=false"]


def test_env_arguments_keep_what_each_env_accepts():
    config = parse_overrides(["env=kuhn_poker,simple_negotiation", 'env_kwargs={"hands": 3, "max_turns": 4}'])
    assert env_arguments(config, "kuhn_poker") == {"hands": 3}
    assert env_arguments(config, "simple_negotiation") == {"max_turns": 4}
    assert game_env_kwargs(config, "kuhn_poker") == {"mode": "choice", "invalid_action_policy": "forfeit", "turn_limit": 50, "hands": 3}


def test_the_trainer_and_a_worker_play_with_the_same_setup(tmp_path):
    config = parse_overrides([*BASE, "env=kuhn_poker", 'env_kwargs={"hands": 2}', "opponent=rule_based", "mode=direct",
                              "temperature=0.7", "top_p=0.9", "max_new_tokens=12", f"out={tmp_path}"])
    trainer, worker = Trainer(config), RolloutWorker(config)
    for policy in (trainer.policy, worker.policy):
        assert (policy.mode, policy.max_new_tokens, policy.temperature, policy.top_p, policy.batch_size) == (
            "direct", 12, 0.7, 0.9, config.generation_batch_size
        )
    assert type(trainer.opponent) is type(worker.opponent) is RuleBasedOpponent
    assert trainer.make_game_env("kuhn_poker").game.hands == worker._env("kuhn_poker", 0).game.hands == 2
    assert policy_options(config) == {"max_new_tokens": 12, "temperature": 0.7, "top_p": 0.9, "batch_size": 32}


def test_thinking_is_chosen_once_from_the_config():
    assert isinstance(RunSetup(parse_overrides(["env=sat"])).thinking, PlainThinking)
    markovian = RunSetup(parse_overrides(["env=sat", "thinking=markovian", "chunk=32", "carry=16", "head=4"])).thinking
    assert isinstance(markovian, MarkovianThinking) and (markovian.config.chunk, markovian.config.carry) == (32, 16)


def test_task_envs_get_their_curriculum_and_exclusions():
    setup = RunSetup(parse_overrides(["env=sat", "curriculum=saturn"]))
    env = setup.make_task_env("sat")
    assert env.curriculum is setup.curriculum
    from curricula.sat import heldout_instances

    held_out = heldout_instances(setup.curriculum.levels[0], size=setup.heldout_size("sat"))
    assert {i.key for i in held_out} <= env.exclude
    assert len(setup.exclusions("sat")) == len(setup.curriculum.levels) * setup.heldout_size("sat")


def test_a_task_without_a_curriculum_gets_the_default_heldout_size():
    from envs.tasks import HELDOUT_SIZE

    setup = RunSetup(parse_overrides(["env=sat"]))
    assert setup.heldout_size("sat") == HELDOUT_SIZE == 20
    assert len(setup.exclusions("sat")) == 20
    assert envs.spec("sat").kind == "task"
