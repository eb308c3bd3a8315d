"""RAE inside OpenRLHF 0.11.2's trainer: an experience-maker subclass and the trainer that uses it.

OpenRLHF computes advantages in `RemoteExperienceMaker.compute_advantages_and_returns`
(openrlhf/trainer/ppo_utils/experience_maker.py) with a fixed list of estimators and no
plug-in hook, and `BasePPOTrainer.__init__` builds that class by name inside the
`PPOTrainer` Ray actor. So:

* `RoleConditionedExperienceMaker` overrides `compute_advantages_and_returns`: OpenRLHF's
  length penalties, then `trainers.backends.openrlhf.rae.rae_advantages_and_returns` with the
  run's KL coefficient and reward clip range. Its `RoleBaselines` (alpha from
  `--algo.advantage.rae_alpha`) live as long as the trainer actor.
* `RolePPOTrainer` is OpenRLHF's `PPOTrainer` whose experience maker is the subclass; it
  also saves the baselines with every OpenRLHF checkpoint (`client_states`), restores
  them on `--ckpt.load_enable`, and logs them (`baseline/<env>/<role>`).
* `install(args)` points `openrlhf.trainer.ppo_trainer.PPOTrainer` at `RolePPOTrainer` in
  the driver, where `openrlhf.cli.train_ppo_ray.train` looks it up, when the estimator
  is `rae`. The class is defined in this (importable) module, so Ray builds the actor
  from it on whichever node runs it.

This module imports OpenRLHF's trainer (deepspeed, vLLM, flash-attn): it runs on the
cluster only. Everything numeric is in `trainers.backends.openrlhf.rae`, tested without a GPU.
"""

from __future__ import annotations

import ray
from openrlhf.trainer import ppo_trainer as _ppo_trainer
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.length_penalty import apply_length_penalties

from trainers.learning.advantages import RoleBaselines
from trainers.backends.openrlhf.rae import rae_advantages_and_returns

ESTIMATOR = "rae"
CLIENT_STATE_KEY = "selfplay_rae_baselines"


class RoleConditionedExperienceMaker(RemoteExperienceMaker):
    """`RemoteExperienceMaker` whose advantages are RAE (games) and GRPO (tasks)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.baselines = RoleBaselines(self.args.algo.advantage.rae_alpha)

    def compute_advantages_and_returns(self, experiences):
        for experience in experiences:
            experience.rewards = experience.rewards.float()
        apply_length_penalties(experiences, self.args)
        return rae_advantages_and_returns(
            experiences,
            self.baselines,
            kl_coef=self.kl_ctl.value,
            reward_clip_range=self.args.reward.clip_range,
        )


class _RolePPOTrainer(_ppo_trainer.PPOTrainer.__ray_actor_class__):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.experience_maker = RoleConditionedExperienceMaker(
            self.actor_model_group,
            self.critic_model_group,
            self.reward_model_group,
            self.reference_model_group,
            self.kl_ctl,
            self.strategy,
            self.tokenizer,
        )

    def init_checkpoint_states(self):
        states = super().init_checkpoint_states()
        if states.get(CLIENT_STATE_KEY):
            self.experience_maker.baselines.load_state_dict(states[CLIENT_STATE_KEY])
        return states

    def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
        logs_dict = dict(logs_dict or {})
        logs_dict.update(self.experience_maker.baselines.as_metrics())
        client_states = dict(client_states or {})
        client_states[CLIENT_STATE_KEY] = self.experience_maker.baselines.state_dict()
        return super().save_logs_and_checkpoints(global_step, logs_dict, client_states)


RolePPOTrainer = ray.remote(_RolePPOTrainer)


def install(args) -> None:
    """Make `openrlhf.cli.train_ppo_ray.train(args)` build `RolePPOTrainer` when the estimator is RAE."""
    if args.algo.advantage.estimator != ESTIMATOR:
        return
    if args.train.async_enable:
        raise SystemExit("--algo.advantage.estimator rae is wired into the synchronous PPOTrainer; drop --train.async_enable")
    _ppo_trainer.PPOTrainer = RolePPOTrainer
