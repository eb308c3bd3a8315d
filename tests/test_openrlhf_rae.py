"""RAE as OpenRLHF's advantage estimator, on OpenRLHF 0.11.2's own `Experience` objects, against
hand-computed numbers.

Samples are built the way OpenRLHF builds them from an executor's response
(`to_experience`) and batched with OpenRLHF's `Experience.concat_experiences`, in a
scrambled arrival order and over two micro-batches: the advantages must not depend on
either.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("openrlhf.trainer.ppo_utils")
from openrlhf.trainer.ppo_utils import Experience

from trainers.learning.advantages import RoleBaselines
from trainers.backends.openrlhf.rae import rae_advantages_and_returns, role_conditioned_advantages
from trainers.backends.openrlhf.tasks import Row
from cluster_standins.local_engine import to_experience  # tests/ is on sys.path

KUHN = {"mode": "direct", "invalid_action_policy": "forfeit", "turn_limit": 50}


def game_label(row: int) -> str:
    return Row("game", "kuhn_poker", row, 16, seed=row, players=2, env_args=KUHN).to_label()


def sample(label: str, reward: float, *, role=0, copy=0, turns=1, length=10, ranges=((3, 5), (8, 10)), kl=None):
    """One single-sample Experience, as OpenRLHF makes it from an executor response."""
    response = {
        "prompt": "p", "label": label, "reward": reward, "scores": reward,
        "observation_tokens": list(range(100, 100 + length)), "action_ranges": list(ranges),
        "rollout_log_probs": None, "truncated": False,
        "extra_logs": {"role": role, "copy": copy, "turns": turns, "invalid": 0, "game": int("game" in label), "context_truncated": 0},
    }
    experience = to_experience(response, max_len=4096)
    if kl is not None:
        experience.kl = kl
    return experience


def batch(*samples) -> Experience:
    return Experience.concat_experiences(list(samples), pad_token_id=0)


def test_rae_reads_each_role_baseline_before_the_game_updates_it():
    g0, g1 = game_label(0), game_label(1)
    arrived = [  # (label, copy, role, turns, return) in the order the engines finished
        (g1, 0, 1, 0, -1.0),  # row 1: seat 1 never moved (seat 0 won on its first move)
        (g0, 1, 0, 2, -2.0),
        (g1, 0, 0, 1, 1.0),
        (g0, 0, 1, 1, -1.0),
        (g0, 1, 1, 2, 2.0),
        (g0, 0, 0, 2, 1.0),
    ]
    singles = [sample(label, r, role=role, copy=copy, turns=turns) for label, copy, role, turns, r in arrived]
    baselines = RoleBaselines(alpha=0.95)
    scalars = role_conditioned_advantages([batch(*singles[:2]), batch(*singles[2:])], baselines)

    # Games in (row, copy) order; b starts at 0; A = R - b, then b <- 0.95 b + 0.05 R.
    # row 0 copy 0: A0 = 1 - 0 = 1,          A1 = -1 - 0 = -1;        b0 = 0.05,    b1 = -0.05
    # row 0 copy 1: A0 = -2 - 0.05 = -2.05,  A1 = 2 + 0.05 = 2.05;    b0 = -0.0525, b1 = 0.0525
    # row 1 copy 0: A0 = 1 + 0.0525 = 1.0525; seat 1 never moved: A1 = 0, b1 unchanged; b0 = 0.000125
    expected = [0.0, -2.05, 1.0525, -1.0, 2.05, 1.0]
    got = scalars[0].tolist() + scalars[1].tolist()
    assert got == pytest.approx(expected, abs=1e-6)
    assert baselines.value(("kuhn_poker", 0)) == pytest.approx(0.000125)
    assert baselines.value(("kuhn_poker", 1)) == pytest.approx(0.0525)
    assert baselines.counts == {("kuhn_poker", 0): 3, ("kuhn_poker", 1): 2}

    # the next step reads the baselines this one left
    (later,) = role_conditioned_advantages([batch(sample(game_label(5), 1.0, role=1))], baselines)
    assert later.tolist() == pytest.approx([1.0 - 0.0525])


def test_task_rows_get_grpo_within_their_group():
    task = Row("task", "sat", 9, 64, level=(3, 5, 5), formula="A!B & !AC & BC & D & E").to_label()
    rewards = [1.0, 0.0, -1.0, 1.0]
    (scalars,) = role_conditioned_advantages([batch(*[sample(task, r) for r in rewards])], RoleBaselines())
    mean, std = 0.25, math.sqrt((0.75**2 + 0.25**2 + 1.25**2 + 0.75**2) / 4)  # population std: sqrt(0.6875)
    assert scalars.tolist() == pytest.approx([(r - mean) / (std + 1e-6) for r in rewards], abs=1e-6)


def test_every_answer_token_gets_the_return_from_there_on():
    kl = torch.full((1, 9), 0.5)
    experience = sample(game_label(0), 1.0, kl=kl)  # answers at tokens 3-4 and 8-9
    assert experience.action_mask[0].nonzero()[:, 0].tolist() == [2, 3, 7, 8]  # shifted by one, as OpenRLHF does
    (done,) = rae_advantages_and_returns([experience], RoleBaselines(), kl_coef=0.1, reward_clip_range=(-10, 10))
    # token rewards on answer tokens: -0.1 * 0.5 = -0.05 each, plus A = 1 - 0 on the last one
    # returns (gamma 1): position 8: 0.95, 7: 0.90, 3: 0.85, 2: 0.80; prompt tokens: 0
    expected = [0, 0, 0.80, 0.85, 0, 0, 0, 0.90, 0.95]
    assert done.advantages[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert torch.equal(done.returns, done.advantages)
    assert done.info["return"].tolist() == pytest.approx([0.80])
    assert done.info["rae_advantage"].tolist() == [1.0]
    assert done.kl is None


def test_the_advantage_is_clipped_like_openrlhf_clips_rewards():
    (done,) = rae_advantages_and_returns([batch(sample(game_label(0), 20.0))], RoleBaselines(), reward_clip_range=(-10.0, 10.0))
    assert done.advantages[0].max().item() == 10.0


def test_a_dataset_that_is_not_ours_is_a_clear_error():
    stranger = sample("42", 1.0)
    with pytest.raises(ValueError, match="not a selfplay-suite dataset label"):
        role_conditioned_advantages([stranger], RoleBaselines())
