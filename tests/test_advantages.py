"""Advantage methods against hand-computed numbers."""

import json

import pytest

from trainers.learning.advantages import (
    METHODS,
    AdvantageState,
    RoleBaselines,
    StateBaselines,
    advantage_metrics,
    compute_advantages,
    compute_rae,
    compute_state_baseline,
    drop_zero_advantage,
    grpo_advantages,
    prompt_normalized_advantages,
)
from trainers.learning.samples import TurnSample


def turn(game_id, role, reward, env_id="kuhn_poker", prompt=(1, 2), **info):
    return TurnSample(
        prompt_ids=list(prompt), response_ids=[3], old_logprobs=[-0.5], env_id=env_id,
        role=role, game_id=game_id, reward=reward, info=info,
    )


def advantages(samples):
    return [sample.advantage for sample in samples]


def test_rae_reads_the_baseline_before_updating_it():
    # b: 0 -> 0.05 -> 0.95*0.05 - 0.05 = -0.0025 -> 0.95*(-0.0025) + 0.05 = 0.047625
    baselines = RoleBaselines()
    samples = compute_rae([turn(0, 0, 1.0), turn(1, 0, -1.0), turn(2, 0, 1.0)], baselines)
    assert advantages(samples) == pytest.approx([1.0, -1.05, 1.0025])
    assert baselines.value(("kuhn_poker", 0)) == pytest.approx(0.047625)


def test_rae_keeps_one_baseline_per_role_and_env():
    baselines = RoleBaselines()
    samples = [turn(0, 0, 1.0), turn(0, 1, -1.0), turn(0, 0, 1.0, env_id="tic_tac_toe"), turn(1, 1, 1.0)]
    compute_rae(samples, baselines)
    # Role 1's second game sees b = 0.05 * -1 = -0.05: A = 1 - (-0.05).
    assert advantages(samples) == pytest.approx([1.0, -1.0, 1.0, 1.05])
    assert baselines.as_metrics() == pytest.approx(
        {"baseline/kuhn_poker/0": 0.05, "baseline/kuhn_poker/1": 0.95 * -0.05 + 0.05,
         "baseline/tic_tac_toe/0": 0.05}
    )


def test_rae_updates_once_per_game_return_not_per_turn():
    baselines = RoleBaselines()
    samples = compute_rae([turn(0, 0, 1.0), turn(0, 0, 1.0), turn(0, 0, 1.0), turn(1, 0, 1.0)], baselines)
    assert advantages(samples) == pytest.approx([1.0, 1.0, 1.0, 0.95])
    assert baselines.value(("kuhn_poker", 0)) == pytest.approx(0.0975)


def test_rae_alpha_is_configurable():
    baselines = RoleBaselines(alpha=0.5)
    compute_rae([turn(0, 0, 2.0), turn(1, 0, 2.0)], baselines)
    assert baselines.value(("kuhn_poker", 0)) == pytest.approx(1.5)


def test_rae_rejects_different_returns_for_one_player_in_one_game():
    with pytest.raises(ValueError, match="grpo"):
        compute_rae([turn(0, 0, 1.0), turn(0, 0, 0.0)], RoleBaselines())


def test_baselines_state_dict_round_trips_through_json():
    state = AdvantageState()
    compute_advantages([turn(0, 0, 1.0), turn(0, 1, -1.0)], "rae", state)
    compute_advantages([turn(0, 0, 1.0, prompt=(5, 6))], "state_baseline", state)
    restored = AdvantageState()
    restored.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert restored.as_metrics() == state.as_metrics()
    follow_up = [turn(1, 0, -1.0, prompt=(5, 6))]
    a = advantages(compute_advantages(list(follow_up), "state_baseline", state))
    b = advantages(compute_advantages([turn(1, 0, -1.0, prompt=(5, 6))], "state_baseline", restored))
    assert a == b == pytest.approx([-1.05])


def test_state_baseline_keeps_one_baseline_per_information_state():
    baselines = StateBaselines()
    samples = [
        turn(0, 0, 1.0, state_key="K"),
        turn(0, 0, -1.0, prompt=(9,), state_key="J"),
        turn(1, 0, 1.0, state_key="K"),
        turn(1, 0, -1.0, prompt=(9,), state_key="J"),
    ]
    # The same (game, role) has a different state per turn here, so this is a made-up return
    # pattern that shows the keys: each state's EMA sees only its own returns.
    compute_state_baseline(samples, baselines)
    assert advantages(samples) == pytest.approx([1.0, -1.0, 0.95, -0.95])
    assert baselines.as_metrics() == pytest.approx(
        {"state_baseline/kuhn_poker/0/states": 2.0, "state_baseline/kuhn_poker/0/mean": 0.0}
    )


def test_state_baseline_falls_back_to_the_prompt_ids():
    baselines = StateBaselines()
    compute_state_baseline([turn(0, 0, 1.0, prompt=(4, 5)), turn(1, 0, 1.0, prompt=(4, 6))], baselines)
    assert baselines.value(("kuhn_poker", 0, (4, 5))) == pytest.approx(0.05)
    assert baselines.value(("kuhn_poker", 0, (4, 6))) == pytest.approx(0.05)


def test_prompt_norm_normalises_within_each_state():
    samples = [
        turn(0, 0, 1.0, state_key="K"), turn(1, 0, 1.0, state_key="K"),
        turn(2, 0, 1.0, state_key="J"), turn(3, 0, -1.0, state_key="J"),
    ]
    prompt_normalized_advantages(samples, eps=0.0)
    # K: both +1, nothing to learn; J: mean 0, std 1.
    assert advantages(samples) == pytest.approx([0.0, 0.0, 1.0, -1.0])


def test_grpo_normalises_each_group_by_its_mean_and_population_std():
    samples = [turn(0, 0, r, env_id="sat") for r in (1.0, 0.0, 0.0, 1.0)]
    samples += [turn(1, 0, r, env_id="sat") for r in (1.0, 1.0, 1.0)]
    grpo_advantages(samples, eps=0.0)
    assert advantages(samples) == pytest.approx([1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0])
    grpo_advantages(samples)  # eps = 1e-6 in the denominator
    assert samples[0].advantage == pytest.approx(0.5 / (0.5 + 1e-6), abs=1e-12)


def test_a_group_with_equal_rewards_gets_exactly_zero():
    samples = [turn(0, 0, 0.1, env_id="sat") for _ in range(3)]
    for method in ("grpo", "dr_grpo", "prompt_norm"):
        assert drop_zero_advantage(compute_advantages(samples, method)) == []


def test_dr_grpo_only_subtracts_the_group_mean():
    samples = [turn(0, 0, r, env_id="sat") for r in (2.0, -1.0, 5.0)]
    assert advantages(compute_advantages(samples, "dr_grpo")) == pytest.approx([0.0, -3.0, 3.0])


def test_none_uses_the_return():
    samples = compute_advantages([turn(0, 0, 1.0), turn(0, 1, -1.5)], "none")
    assert advantages(samples) == [1.0, -1.5]


def test_drop_zero_advantage():
    samples = [turn(0, 0, 1.0), turn(1, 0, 1.0), turn(2, 0, -1.0)]
    for sample, a in zip(samples, (0.5, 0.0, -0.25)):
        sample.advantage = a
    assert drop_zero_advantage(samples) == [samples[0], samples[2]]


def test_advantage_metrics():
    samples = [turn(0, 0, 1.0), turn(1, 0, 1.0)]
    samples[0].advantage = 2.0
    assert advantage_metrics(samples) == {"advantage/mean": 1.0, "advantage/std": 1.0, "advantage/zero_fraction": 0.5}


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        compute_advantages([], "ppo")
    for method in METHODS:
        assert method in str(error.value)


def test_baseline_methods_need_a_state():
    with pytest.raises(ValueError, match="AdvantageState"):
        compute_advantages([turn(0, 0, 1.0)], "rae")


def test_action_centering_removes_what_is_common_to_every_state():
    def turn(state, action, ret):
        return TurnSample([1], [2], [0.0], "kuhn_poker", 0, 0, reward=ret, info={"state_key": state, "text": action})

    # betting is better than checking with both cards: per-state normalisation says "bet"
    # in both states, a card-blind signal; centring per action leaves nothing of it ...
    samples = [turn("J", "[bet]", -1.0), turn("J", "[check]", -1.5), turn("K", "[bet]", 2.0), turn("K", "[check]", 0.5)]
    compute_advantages(samples, "action_centered")
    assert [s.advantage for s in samples] == pytest.approx([0.0, 0.0, 0.0, 0.0], abs=1e-5)
    # ... while a card-dependent difference survives with its sign
    samples = [turn("J", "[bet]", -2.0), turn("J", "[check]", -1.0), turn("K", "[bet]", 2.0), turn("K", "[check]", 1.0)]
    compute_advantages(samples, "action_centered")
    assert [s.advantage for s in samples] == pytest.approx([-1.0, 1.0, 1.0, -1.0], abs=1e-5)


def test_uniform_state_weighting_gives_every_state_the_same_total_weight():
    from trainers.learning.advantages import equalize_state_weights

    def sample(state, advantage, role=0):
        s = TurnSample([1], [2], [0.0], "kuhn_poker", role, 0, info={"state_key": state})
        s.advantage = advantage
        return s

    # role 0: state a seen 6 times, b twice; role 1: one state seen 3 times (factor 1)
    batch = [sample("a", 1.0) for _ in range(6)] + [sample("b", -1.0), sample("b", 0.5)] + [sample("c", 2.0, role=1) for _ in range(3)]
    equalize_state_weights(batch)
    # N = 8 samples over S = 2 states: a gets 8 / (2 * 6) = 2/3, b gets 8 / (2 * 2) = 2
    assert [s.advantage for s in batch[:6]] == pytest.approx([2 / 3] * 6)
    assert [s.advantage for s in batch[6:8]] == pytest.approx([-2.0, 1.0])
    assert [s.advantage for s in batch[8:]] == pytest.approx([2.0] * 3)
    # a state seen once among many is capped
    rare = [sample("x", 1.0) for _ in range(99)] + [sample("y", 1.0)]
    equalize_state_weights(rare, cap=20.0)
    assert rare[-1].advantage == 20.0 and rare[0].advantage == pytest.approx(100 / (2 * 99))


def test_part_gap_advantages_divide_each_parts_own_value_by_the_steps_std():
    from trainers.learning.advantages import part_gap_advantages

    parts = [turn(0, 0, 1.0, env_id="sat", gap=g) for g in (0.0, 0.06, -0.02, 0.0)]
    part_gap_advantages(parts, "gap")
    std = (sum((g - 0.01) ** 2 for g in (0.0, 0.06, -0.02, 0.0)) / 4) ** 0.5
    assert advantages(parts) == pytest.approx([0.0, 0.06 / std, -0.02 / std, 0.0], rel=1e-4)
    still = part_gap_advantages([turn(0, 0, 1.0, env_id="sat", gap=0.0)] * 2, "gap")
    assert advantages(still) == [0.0, 0.0]  # nothing mattered: no push, no division by zero
