"""Role-conditioned advantages (RAE) on OpenRLHF 0.11.2's own `Experience` objects.

The numeric core of `--algo.advantage.estimator rae` (wired into OpenRLHF's experience
maker by `trainers.backends.openrlhf.experience_maker`). Pure functions of the experiences and the
baseline table, so they run and are tested without a GPU.

What an experience carries (see `trainers.backends.openrlhf.agent`): `labels[i]` is the dataset
row (`trainers.backends.openrlhf.tasks.Row`: env, row id, kind); `info["role"][i]`,
`info["copy"][i]` and `info["turns"][i]` come from the agent's `extra_logs`;
`rewards[i]` is the seat's return (games) or the task reward; `action_mask` marks the
answer tokens of the (multi-turn) sequence.

Per sample, the same formulas as `trainers.learning.advantages` (one source of truth: it is called
here on light `TurnSample`s):

* game samples: ``A = R - b[env, role]`` with ``b`` an EMA of that role's returns
  (``b <- alpha*b + (1-alpha)*R``, alpha 0.95, starting at 0), read BEFORE this game's
  return updates it; games are taken in (row, copy) order, so the result does not depend
  on the order in which OpenRLHF's engines finished them. A sample is one seat of one
  game, so each (game, role) return updates its baseline once. A seat that never moved
  (`turns == 0`) gets ``A = 0`` and leaves the baseline alone, as a local rollout (which
  has no sample for it) would. So does every seat of a game that the context cut
  (`context_truncated == 1`, see `trainers.backends.openrlhf.agent`): its outcome was not played out.
* task samples: GRPO within the row's group, ``A = (R - mean) / (std + eps)``
  (population std), the local trainer's `grpo`.

Per token (`rae_advantages_and_returns`), as OpenRLHF's REINFORCE-family branch does with
a scalar reward: the clipped ``A`` sits on the sample's last answer token, any per-token
KL penalty ``-kl_coef * kl`` is added, and with gamma = 1 every answer token's return is
the sum of the rewards from there to the end; ``advantages = returns`` (no batch
whitening: the baselines already centre the returns, as in SPIRAL and the local trainer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainers.learning.advantages import RoleBaselines, compute_rae, grpo_advantages
from trainers.backends.openrlhf.tasks import Row
from trainers.learning.samples import TurnSample


def role_conditioned_advantages(experiences: Sequence, baselines: RoleBaselines) -> list[torch.Tensor]:
    """One scalar advantage per sample, shaped like each experience's `rewards`; updates `baselines`."""
    games, tasks = [], []
    for e, experience in enumerate(experiences):
        info = experience.info
        for j, label in enumerate(experience.labels):
            row = Row.from_label(label)
            record = TurnSample(
                prompt_ids=[],
                response_ids=[],
                old_logprobs=[],
                env_id=row.env,
                role=int(info["role"][j]),
                game_id=(row.row, int(info["copy"][j])) if row.kind == "game" else row.row,
                reward=float(experience.rewards[j]),
                info={"at": (e, j)},
            )
            if row.kind == "task":
                tasks.append(record)
            elif int(info["turns"][j]) > 0 and not int(info["context_truncated"][j]):
                games.append(record)
    games.sort(key=lambda s: (s.game_id, s.role))
    compute_rae(games, baselines)
    grpo_advantages(tasks)
    advantages = [torch.zeros(len(experience.labels), dtype=torch.float32) for experience in experiences]
    for record in games + tasks:
        e, j = record.info["at"]
        advantages[e][j] = record.advantage
    return advantages


def rae_advantages_and_returns(
    experiences: Sequence,
    baselines: RoleBaselines,
    *,
    kl_coef: float = 0.0,
    reward_clip_range: tuple[float, float] | None = None,
) -> list:
    """Set `advantages` and `returns` (B, A) of every experience from RAE; returns the experiences.

    Also sets `info["return"]` (the sample's summed shaped reward, as OpenRLHF logs it),
    `info["rae_advantage"]` (the scalar A) and clears `kl`, as OpenRLHF's own branch does.
    """
    scalars = role_conditioned_advantages(experiences, baselines)
    for experience, advantage in zip(experiences, scalars):
        mask = experience.action_mask.to(torch.float32)
        if reward_clip_range:
            advantage = advantage.clamp(min=reward_clip_range[0], max=reward_clip_range[1])
        token_rewards = torch.zeros_like(mask)
        if kl_coef > 0 and experience.kl is not None:
            token_rewards -= kl_coef * experience.kl.to(torch.float32)
        last = mask.size(1) - 1 - mask.long().fliplr().argmax(dim=1)
        token_rewards[torch.arange(mask.size(0)), last] += advantage
        token_rewards = token_rewards * mask
        returns = token_rewards.flip(1).cumsum(1).flip(1) * mask
        experience.returns = returns
        experience.advantages = returns.clone()
        experience.info["return"] = token_rewards.sum(dim=-1)
        experience.info["rae_advantage"] = advantage
        experience.kl = None
    return list(experiences)
