"""Exact-advantage diagnostics (trainers.learning.diagnostics) and the `advantage=exact` oracle.

The true advantage is checked by hand on Kuhn Poker, the estimators' agreement on known
batches, and the trainer end to end on the tiny random model: the diagnostics are logged,
they leave training untouched, and the keys are refused by name where they cannot act.
"""

from __future__ import annotations

import json

import pytest

import games
from games import analysis
from trainers.learning.advantages import AdvantageState, compute_advantages
from trainers.learning.diagnostics import (
    TRUE_ADVANTAGE_KEY,
    correlation,
    estimator_agreement,
    set_true_advantages,
    sign_agreement,
)
from trainers.learning.samples import TurnSample
from trainers.run.config import TrainConfig

PASS, BET = 0, 1


def _sample(state_key, action_id, *, role, game_id, reward, env_id="kuhn_poker") -> TurnSample:
    return TurnSample([1, 2, 3], [4], [-0.7], env_id, role, game_id, reward=reward,
                      info={"state_key": state_key, "action_id": action_id})


def test_true_advantage_by_hand_under_uniform_play():
    tree = analysis.game_tree(games.load("kuhn_poker"))
    uniform = analysis.uniform_policy(tree)
    # the second player holding the King, facing a bet: the bettor held J or Q (equally
    # likely: uniform play bets with either), so calling always wins 2 and folding loses 1;
    # V = 0.5 * 2 + 0.5 * -1 = 0.5, A(call) = 1.5, A(fold) = -1.5
    call = _sample("1|K?:b", BET, role=1, game_id=0, reward=2.0)
    fold = _sample("1|K?:b", PASS, role=1, game_id=1, reward=-1.0)
    invalid = _sample("1|K?:b", None, role=1, game_id=2, reward=-2.0)
    assert set_true_advantages([call, fold, invalid], tree, uniform) == 2
    assert call.info[TRUE_ADVANTAGE_KEY] == pytest.approx(1.5)
    assert fold.info[TRUE_ADVANTAGE_KEY] == pytest.approx(-1.5)
    assert TRUE_ADVANTAGE_KEY not in invalid.info


def test_true_advantages_average_to_zero_under_the_policy():
    game = games.load("kuhn_poker")
    tree = analysis.game_tree(game)
    policy = analysis.cfr(game, 30)
    for key, actions in analysis.action_values(tree, policy).items():
        samples = [_sample(key, a, role=int(key[0]), game_id=a, reward=0.0) for a in actions]
        set_true_advantages(samples, tree, policy)
        mean = sum(policy[key][s.info["action_id"]] * s.info[TRUE_ADVANTAGE_KEY] for s in samples)
        assert mean == pytest.approx(0.0, abs=1e-9), key


def test_exact_method_trains_on_the_truth_and_invalid_answers_get_zero():
    samples = [_sample("0|K?:", BET, role=0, game_id=0, reward=1.0), _sample("0|K?:", None, role=0, game_id=1, reward=-2.0)]
    samples[0].info[TRUE_ADVANTAGE_KEY] = 0.25
    compute_advantages(samples, "exact")
    assert [s.advantage for s in samples] == [0.25, 0.0]


def test_correlation_and_sign_agreement():
    assert correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert correlation([1, 1, 1], [1, 2, 3]) == 0.0
    # zero estimates count as wrong; zero truths are left out
    assert sign_agreement([1.0, -1.0, 0.0, 5.0], [2.0, 1.0, 1.0, 0.0]) == pytest.approx(1 / 3)


def test_estimator_agreement_leaves_samples_and_baselines_alone():
    tree = analysis.game_tree(games.load("kuhn_poker"))
    uniform = analysis.uniform_policy(tree)
    samples = []
    for game_id, (key, action, reward) in enumerate(
        [("1|K?:b", BET, 2.0), ("1|K?:b", PASS, -1.0), ("1|J?:b", BET, -2.0), ("1|J?:b", PASS, -1.0)] * 3
    ):
        samples.append(_sample(key, action, role=1, game_id=game_id, reward=reward))
    set_true_advantages(samples, tree, uniform)
    for sample in samples:
        sample.advantage = 7.0
    state = AdvantageState()
    state.role_baselines.update(("kuhn_poker", 1), 0.5)
    before = json.dumps(state.state_dict())
    metrics = estimator_agreement(samples, state, ("rae", "prompt_norm", "exact"))
    assert json.dumps(state.state_dict()) == before
    assert all(s.advantage == 7.0 for s in samples)
    assert metrics["advantage_diagnostics/exact/correlation"] == pytest.approx(1.0)
    assert metrics["advantage_diagnostics/exact/sign_agreement"] == 1.0
    # per-state normalisation recovers the sign of every turn here (one bad and one good action per state)
    assert metrics["advantage_diagnostics/prompt_norm/sign_agreement"] == 1.0
    assert metrics["advantage_diagnostics/turns"] == 12.0
    assert metrics["advantage_diagnostics/true/variance"] > 0


# -- the trainer ----------------------------------------------------------------------

torch = pytest.importorskip("torch")

SMALL = ["model=tiny-random", "tensorboard=false", "progress=false", "steps=2", "games_per_step=16",
         "eval_games=2", "eval_opponents=random", "save_every=0", "threads=1"]


def _run(tmp_path, name, *overrides):
    from trainers.selfplay import main

    out = tmp_path / name
    assert main([*SMALL, f"out={out}", *overrides]) == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_diagnostics_are_logged_and_leave_training_untouched(tmp_path):
    diagnosed = _run(tmp_path, "auto")
    plain = _run(tmp_path, "off", "advantage_diagnostics=off")
    for with_, without in zip(diagnosed, plain):
        assert with_["advantage_diagnostics/kuhn_poker/turns"] > 0
        for method in ("rae", "state_baseline", "prompt_norm", "action_centered", "grpo", "dr_grpo", "none"):
            assert -1.0 <= with_[f"advantage_diagnostics/kuhn_poker/{method}/correlation"] <= 1.0
        assert not any(k.startswith("advantage_diagnostics") for k in without)
        for key in ("train/loss", "train/grad_norm", "advantage/mean", "eval/kuhn_poker/exploitability"):
            assert with_.get(key) == without.get(key), key


def test_exact_advantage_trains_on_the_true_advantage(tmp_path):
    metrics = _run(tmp_path, "exact", "advantage=exact")
    assert metrics[-1]["train/samples"] > 0
    # under the truth the batch's advantages average to about zero per state, and are not all zero
    assert metrics[0]["advantage/std"] > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["advantage=exact", "opponent=random"], "advantage=exact cannot run on kuhn_poker: the true advantage is defined for self-play"),
        (["advantage_diagnostics=on", "mode=direct"], "advantage_diagnostics=on cannot run on kuhn_poker: it needs the model's exact action distribution"),
        (["advantage_diagnostics=on", "env=tic_tac_toe"], "too large for exact analysis"),
        (["advantage=exact", "env=sat"], "advantage=exact needs a game env"),
        (["advantage=exact", "advantage_diagnostics=off"], "leave advantage_diagnostics at auto or on"),
    ],
)
def test_refused_by_name_where_they_cannot_act(tmp_path, overrides, message):
    from trainers.run.config import parse_overrides
    from trainers.run.preflight import preflight

    config = parse_overrides([*SMALL, f"out={tmp_path / 'refused'}", *overrides])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        preflight(config)


def test_openrlhf_refuses_diagnostics_on():
    from trainers.backends.openrlhf.launcher import refuse_unmapped_keys

    refuse_unmapped_keys(TrainConfig(backend="openrlhf"))  # auto: the job has no hook, and says so in the key table
    with pytest.raises(ValueError, match="advantage_diagnostics=on"):
        refuse_unmapped_keys(TrainConfig(backend="openrlhf", advantage_diagnostics="on"))


def test_batch_q_gives_each_state_action_cell_its_mean_return():
    # state s: bet returned 1 and 3 (Q = 2), check returned 0 twice (Q = 0); V = 1, std = sqrt(1.5)
    samples = [TurnSample([1], [2], [0.0], "kuhn_poker", 0, i, reward=r, info={"state_key": "s", "action": a})
               for i, (a, r) in enumerate([("bet", 1.0), ("bet", 3.0), ("check", 0.0), ("check", 0.0)])]
    samples.append(TurnSample([1], [2], [0.0], "kuhn_poker", 0, 9, reward=5.0, info={"state_key": "t", "action": "bet"}))
    compute_advantages(samples, "batch_q")
    expected = 1.0 / 1.5**0.5
    assert [s.advantage for s in samples[:4]] == pytest.approx([expected, expected, -expected, -expected], rel=1e-5)
    assert samples[4].advantage == 0.0  # a state seen once has nothing to compare with
