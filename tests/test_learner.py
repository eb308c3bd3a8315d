"""The learner on the tiny random model: updates, LoRA, choice log-probs, checkpoints and exact resume."""

import itertools
import random

import numpy as np
import pytest
import torch

from trainers.run.checkpoints import latest_intact as latest_checkpoint
from trainers.run.checkpoints import list_checkpoints
from trainers.run.config import TrainConfig
from trainers.generation import sequence_logprobs
from trainers.learning.learner import Learner
from trainers.models import load_model
from trainers.learning.samples import TurnSample

FIRST_BYTE_TOKEN = 3  # tiny-random: ids 0-2 are special tokens, then one id per byte


def tiny_model(seed=0):
    return load_model("tiny-random", seed=seed)[0]


def make_batch(seed, size=6, choice=False):
    """Random prompts/responses with advantages +-1 and placeholder old log-probs (recomputed)."""
    rng = random.Random(seed)
    samples = []
    for i in range(size):
        prompt = [rng.randrange(FIRST_BYTE_TOKEN, 200) for _ in range(rng.randrange(4, 9))]
        if choice:
            candidates = [[rng.randrange(FIRST_BYTE_TOKEN, 200) for _ in range(rng.randrange(1, 4))] for _ in range(3)]
            index = rng.randrange(3)
            sample = TurnSample(
                prompt, candidates[index], [0.0], "kuhn_poker", i % 2, i, choice_ids=candidates, choice_index=index
            )
        else:
            response = [rng.randrange(FIRST_BYTE_TOKEN, 200) for _ in range(rng.randrange(2, 6))]
            sample = TurnSample(prompt, response, [0.0] * len(response), "kuhn_poker", i % 2, i)
        sample.advantage = 1.0 if i % 2 == 0 else -1.0
        samples.append(sample)
    return samples


def weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def config(**overrides):
    """The run config the learner reads; mini_batch_size 0 means the whole batch per step."""
    settings = {
        "lr": 1e-2, "ppo_epochs": 2, "mini_batch_size": 4, "micro_batch_size": 3,
        "recompute_old_logprobs": True, "entropy_coef": 0.0,
    }
    return TrainConfig(**{"seed": 7, **settings, **overrides}).validate()


def objective(learner, samples):
    """The policy-gradient objective sum_i A_i * mean_t log pi(token_t), higher is better."""
    with torch.no_grad():
        rows = learner.policy_logprobs(samples)
    return sum(s.advantage * row.mean().item() for s, row in zip(samples, rows))


def test_first_pass_ratio_is_one_and_updates_change_the_weights():
    learner = Learner(tiny_model(), config(ppo_epochs=1, mini_batch_size=0))
    before = weights(learner.model)
    metrics = learner.update(make_batch(0))
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["clip_fraction"] == 0.0
    assert metrics["optimizer_steps"] == 1 and metrics["samples"] == 6 and metrics["grad_norm"] > 0
    assert metrics["neg_logprob"] > 0
    assert any(not torch.equal(before[name], p) for name, p in learner.model.named_parameters())


def test_repeated_updates_improve_the_objective_on_a_fixed_batch():
    learner = Learner(tiny_model(), config(lr=3e-3))
    batch = make_batch(1)
    values = [objective(learner, batch)]
    for _ in range(3):
        learner.update(batch)
        values.append(objective(learner, batch))
    assert values[-1] > values[0] + 0.5
    assert all(later > earlier for earlier, later in itertools.pairwise(values))


def test_free_text_logprobs_do_not_depend_on_the_rest_of_the_batch():
    learner = Learner(tiny_model(), config())
    batch = make_batch(2)
    with torch.no_grad():
        together = learner.policy_logprobs(batch)
        alone = [learner.policy_logprobs([s])[0] for s in batch]
        reference = sequence_logprobs(learner.model, [batch[0].prompt_ids], [batch[0].response_ids])[0]
    for a, b in zip(together, alone):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(alone[0], reference)


def test_choice_logprobs_are_a_distribution_over_the_candidates():
    learner = Learner(tiny_model(), config())
    sample = make_batch(3, size=1, choice=True)[0]
    variants = [
        TurnSample(sample.prompt_ids, ids, [0.0], "kuhn_poker", 0, 0, choice_ids=sample.choice_ids, choice_index=j)
        for j, ids in enumerate(sample.choice_ids)
    ]
    with torch.no_grad():
        rows = learner.policy_logprobs(variants + make_batch(4, size=2))
        sequences = torch.tensor(
            [row.sum().item() for row in sequence_logprobs(learner.model, [sample.prompt_ids] * 3, sample.choice_ids)]
        )
    assert all(row.shape == (1,) for row in rows[:3])
    assert torch.cat(rows[:3]).exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(torch.cat(rows[:3]), torch.log_softmax(sequences, 0), atol=1e-5)


def test_choice_samples_train_through_the_same_update():
    learner = Learner(tiny_model(), config(lr=3e-3))
    batch = make_batch(5, choice=True)
    values = [objective(learner, batch)]
    metrics = learner.update(batch)
    values.append(objective(learner, batch))
    assert values[1] > values[0]
    assert 0 < metrics["entropy_choice"] <= np.log(3) + 1e-6


def test_entropy_bonus_alone_spreads_the_choice_distribution():
    batch = make_batch(6, choice=True)
    for sample in batch:
        sample.advantage = 0.0  # no policy-gradient signal: only the bonus moves the weights

    def mean_entropy(learner):
        with torch.no_grad():
            log_policies = learner.score(learner.model, batch).log_policies
        return torch.stack([-(lp.exp() * lp).sum() for lp in log_policies]).mean().item()

    plain = Learner(tiny_model(), config(lr=3e-3))
    regularised = Learner(tiny_model(), config(lr=3e-3, entropy_coef=1.0))
    start = mean_entropy(regularised)
    plain.update(batch)
    regularised.update(batch)
    assert mean_entropy(plain) == pytest.approx(start, abs=1e-6)
    assert mean_entropy(regularised) > start + 1e-3


def test_an_entropy_bonus_where_no_turn_is_a_choice_is_refused_by_name():
    for mode in ("direct", "think"):
        with pytest.raises(ValueError, match="entropy_coef=0.1"):
            TrainConfig(mode=mode, entropy_coef=0.1).validate()
        TrainConfig(mode=mode).validate()  # the default: nothing asked
        TrainConfig(mode=mode, entropy_coef=0.0).validate()  # none, explicitly
        TrainConfig(mode=mode, task_mode="choice", entropy_coef=0.1).validate()  # tasks answer in parts
    TrainConfig(mode="choice", entropy_coef=0.1).validate()


def test_lora_trains_only_the_adapter_and_its_reference_is_the_base_model():
    learner = Learner(tiny_model(), config(lora_rank=4, lora_alpha=8, kl_coef=0.1, ppo_epochs=1, mini_batch_size=0))
    before = weights(learner.model)
    metrics = learner.update(make_batch(6))
    # LoRA's B starts at zero, so before the step the policy is the base model exactly.
    assert metrics["kl_ref"] == pytest.approx(0.0, abs=1e-7)
    # A second step, because A's gradient is zero while B is still zero.
    learner.update(make_batch(7))
    for name, p in learner.model.named_parameters():
        assert torch.equal(before[name], p) == ("lora_" not in name), name


def test_full_fine_tuning_with_kl_keeps_a_frozen_reference():
    learner = Learner(tiny_model(), config(kl_coef=0.1, ppo_epochs=2, mini_batch_size=0))
    reference = weights(learner.reference_model)
    metrics = learner.update(make_batch(7))
    assert metrics["kl_ref"] > 0  # the second pass sees the moved policy
    assert all(torch.equal(reference[n], p) for n, p in learner.reference_model.named_parameters())


def test_recompute_old_logprobs_makes_the_first_ratio_one():
    batch = make_batch(8)
    for sample in batch:
        sample.old_logprobs = [-0.1] * len(sample.old_logprobs)
    stale = Learner(tiny_model(), config(ppo_epochs=1, mini_batch_size=0, recompute_old_logprobs=False))
    assert stale.update([TurnSample(**vars(s)) for s in batch])["clip_fraction"] > 0.5
    fresh = Learner(tiny_model(), config(ppo_epochs=1, mini_batch_size=0))
    assert fresh.update(batch)["ratio_mean"] == pytest.approx(1.0, abs=1e-5)


def test_empty_batch_is_a_no_op():
    learner = Learner(tiny_model(), config())
    before = weights(learner.model)
    assert learner.update([])["samples"] == 0
    assert all(torch.equal(before[n], p) for n, p in learner.model.named_parameters())


def draw_everything(learner):
    return (
        random.random(),
        np.random.random(),
        torch.rand(1).item(),
        torch.randperm(10, generator=learner.shuffle_generator).tolist(),
    )


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_checkpoint_round_trip_restores_weights_optimizer_and_rng(tmp_path, lora_rank):
    learner = Learner(tiny_model(), config(lora_rank=lora_rank))
    learner.update(make_batch(9))
    extra = {"step": 1, "baselines": {"alpha": 0.95, "entries": [[["kuhn_poker", 0], 0.05, 1]]}}
    path = learner.save_checkpoint(tmp_path, 1, extra)
    expected_draws = draw_everything(learner)

    # A full checkpoint restores every weight, so start from other ones; an adapter
    # checkpoint needs the same base model.
    restored = Learner(tiny_model(seed=0 if lora_rank else 1), config(lora_rank=lora_rank, seed=99))
    assert restored.load_checkpoint(path) == extra
    assert draw_everything(restored) == expected_draws
    for (name, p), (_, q) in zip(learner.model.named_parameters(), restored.model.named_parameters()):
        assert torch.equal(p, q), name
    saved, loaded = learner.optimizer.state_dict(), restored.optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for index, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(value, loaded["state"][index][key])
    expected_folder = "adapter" if lora_rank else "model"
    assert (path / expected_folder).is_dir()


def test_full_checkpoint_model_folder_loads_as_a_model(tmp_path):
    model, tokenizer = load_model("tiny-random")
    learner = Learner(model, config(), tokenizer=tokenizer)
    learner.update(make_batch(10))
    path = learner.save_checkpoint(tmp_path, 3)
    reloaded, _ = load_model(str(path / "model"))
    for (name, p), (_, q) in zip(learner.model.named_parameters(), reloaded.named_parameters()):
        assert torch.equal(p, q), name


def test_extra_state_that_json_would_alter_is_pickled(tmp_path):
    learner = Learner(tiny_model(), config())
    extra = {"level": (3, 5, 13), 1: "int key"}
    path = learner.save_checkpoint(tmp_path, 1, extra)
    assert (path / "extra_state.pkl").exists()
    assert learner.load_checkpoint(path) == extra


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_resumed_run_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, lora_rank):
    batches = [make_batch(20 + i, size=5, choice=(i % 2 == 1)) for i in range(4)]

    def copies(batch):
        return [TurnSample(**vars(s)) for s in batch]

    straight = Learner(tiny_model(), config(lora_rank=lora_rank))
    straight_metrics = [straight.update(copies(b)) for b in batches]

    first = Learner(tiny_model(), config(lora_rank=lora_rank))
    for b in batches[:2]:
        first.update(copies(b))
    path = first.save_checkpoint(tmp_path, 2, {"step": 2})
    del first

    resumed = Learner(tiny_model(seed=0 if lora_rank else 5), config(lora_rank=lora_rank, seed=99))
    assert resumed.load_checkpoint(latest_checkpoint(tmp_path)) == {"step": 2} and path == latest_checkpoint(tmp_path)
    resumed_metrics = [resumed.update(copies(b)) for b in batches[2:]]
    for (name, p), (_, q) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), name
    for a, b in zip(straight_metrics[2:], resumed_metrics):
        assert {k: v for k, v in a.items() if k != "time_s"} == {k: v for k, v in b.items() if k != "time_s"}


def test_crash_during_save_leaves_the_previous_checkpoint_as_latest(tmp_path, monkeypatch):
    learner = Learner(tiny_model(), config())
    previous = learner.save_checkpoint(tmp_path, 1, {"step": 1})

    def crash(*args, **kwargs):
        raise RuntimeError("killed while writing the optimizer state")

    # The model weights are already in the temporary folder when this raises.
    monkeypatch.setattr(learner.optimizer, "state_dict", crash)
    with pytest.raises(RuntimeError, match="killed"):
        learner.save_checkpoint(tmp_path, 2, {"step": 2})
    assert latest_checkpoint(tmp_path) == previous
    assert [p.name for p in tmp_path.iterdir()] == [previous.name]


def test_leftovers_of_a_killed_save_are_ignored_and_cleaned(tmp_path):
    learner = Learner(tiny_model(), config())
    previous = learner.save_checkpoint(tmp_path, 1)
    # What a SIGKILL mid-save leaves: a half-written hidden temporary folder; and a folder
    # with a checkpoint's name but no meta.json (e.g. an interrupted manual copy).
    (tmp_path / ".tmp-step_00000002-abc" / "model").mkdir(parents=True)
    (tmp_path / "step_00000003" / "model").mkdir(parents=True)
    assert latest_checkpoint(tmp_path) == previous
    learner.save_checkpoint(tmp_path, 2)
    assert not (tmp_path / ".tmp-step_00000002-abc").exists()
    assert latest_checkpoint(tmp_path).name == "step_00000002"


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    learner = Learner(tiny_model(), config())
    for step in (1, 2, 3, 4):
        learner.save_checkpoint(tmp_path, step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    # Saving a step again (a run resumed from an older checkpoint) replaces it.
    learner.save_checkpoint(tmp_path, 4, {"again": True}, keep_last=2)
    assert learner.load_checkpoint(latest_checkpoint(tmp_path)) == {"again": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003", "step_00000004"]


def test_loading_adapter_into_a_full_learner_is_a_clear_error(tmp_path):
    path = Learner(tiny_model(), config(lora_rank=4)).save_checkpoint(tmp_path, 1)
    with pytest.raises(ValueError, match="lora_rank"):
        Learner(tiny_model(), config()).load_checkpoint(path)


def test_config_errors_name_the_valid_values():
    with pytest.raises(ValueError, match="constant, token_mean"):
        config(length_norm="sum")


# ---- micro-batches by distinct prompt ---------------------------------------------------


def repeated_choice_batch(seed=30, distinct=3, copies=5):
    """Choice samples that revisit a few prompts (as self-play on a small game does)."""
    base = make_batch(seed, size=distinct, choice=True)
    rng = random.Random(seed)
    batch = []
    for i in range(distinct * copies):
        template = base[i % distinct]
        index = rng.randrange(len(template.choice_ids))
        sample = TurnSample(
            template.prompt_ids, template.choice_ids[index], [0.0], "kuhn_poker", i % 2, i,
            choice_ids=template.choice_ids, choice_index=index,
        )
        sample.advantage = rng.choice([-1.5, -0.5, 0.5, 1.0])
        batch.append(sample)
    return batch


def captured_gradients(learner, batch):
    """The gradient the optimizer would apply in a one-step update (captured, not applied)."""
    captured = []
    learner.optimizer.step = lambda: captured.append([p.grad.detach().clone() for p in learner.trainable_parameters])
    learner.update(batch)
    return captured[0]


def gradients_scoring_each_sample_alone(batch, settings):
    """The reference gradient: every sample scored by its own forward pass, the loss (with
    the settings' entropy bonus) averaged over the batch."""
    from trainers.learning.loss import pad_logprobs, ppo_clipped_loss

    reference = Learner(tiny_model(), config(**settings))
    reference.optimizer.zero_grad()
    for sample in batch:
        scored = reference.score(reference.model, [sample])
        new, mask = pad_logprobs(scored.rows)
        loss, _ = ppo_clipped_loss(new, torch.tensor([sample.old_logprobs]), torch.tensor([sample.advantage]), mask)
        log_policy = scored.log_policies[0]
        loss = loss - reference.config.entropy_coef * -(log_policy.exp() * log_policy).sum()
        (loss / len(batch)).backward()
    return [p.grad for p in reference.trainable_parameters]


def test_grouped_micro_batches_give_the_gradient_of_scoring_every_sample_alone():
    batch = repeated_choice_batch()
    unclipped = dict(ppo_epochs=1, mini_batch_size=0, entropy_coef=0.1, max_grad_norm=1e9)
    learner = Learner(tiny_model(), config(micro_batch_size=1, **unclipped))
    learner.recompute_old_logprobs(batch)
    grouped = captured_gradients(learner, [TurnSample(**vars(s)) for s in batch])
    whole = captured_gradients(Learner(tiny_model(), config(micro_batch_size=64, **unclipped)), [TurnSample(**vars(s)) for s in batch])
    expected = gradients_scoring_each_sample_alone(batch, unclipped)
    for a, b, c in zip(grouped, whole, expected):
        assert torch.allclose(a, c, atol=1e-5)
        assert torch.allclose(b, c, atol=1e-5)


def clustered_choice_batch(seed=31):
    """Choice samples whose prompts share rules (20 tokens), then fall in two clusters that
    agree 12 tokens further (one round of a game: the same turn, up to an offer's amounts)."""
    rng = random.Random(seed)
    rules = [rng.randrange(FIRST_BYTE_TOKEN, 200) for _ in range(20)]
    clusters = [[rng.randrange(FIRST_BYTE_TOKEN, 200) for _ in range(12)] for _ in range(2)]
    batch = []
    for i in range(8):
        prompt = rules + clusters[i % 2] + [rng.randrange(FIRST_BYTE_TOKEN, 200) for _ in range(rng.randrange(2, 5))]
        candidates = [[rng.randrange(FIRST_BYTE_TOKEN, 200) for _ in range(rng.randrange(1, 3))] for _ in range(3)]
        index = rng.randrange(3)
        sample = TurnSample(prompt, candidates[index], [0.0], "kuhn_poker", i % 2, i, choice_ids=candidates, choice_index=index)
        sample.advantage = rng.choice([-1.5, -0.5, 0.5, 1.0])
        batch.append(sample)
    return batch


def test_passes_hold_prompts_that_share_a_prefix_and_run_it_once_with_the_same_gradient():
    """Over the token budget, the passes are cut by shared prefix (the two clusters, not the
    interleaved order the samples came in), each pass runs its cluster's 12 extra tokens once
    behind the rules, and the gradient is what scoring every sample alone gives."""
    from trainers.learning.learner import micro_batches

    batch = clustered_choice_batch()
    settings = dict(ppo_epochs=1, mini_batch_size=0, micro_batch_size=64, micro_batch_tokens=70, max_grad_norm=1e9,
                    recompute_old_logprobs=False)
    passes = micro_batches(batch, list(range(8)), config(**settings), shared=20)
    assert sorted(sorted(p) for p in passes) == [[0, 2, 4, 6], [1, 3, 5, 7]]  # one cluster a pass
    learner = Learner(tiny_model(), config(**settings))
    learner.recompute_old_logprobs(batch)
    widths = []
    hook = learner.model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    grouped = captured_gradients(learner, [TurnSample(**vars(s)) for s in batch])
    hook.remove()
    assert widths[0] == (1, 20) and widths.count((1, 12)) == 2  # the rules once, each cluster's 12 tokens once
    for a, b in zip(grouped, gradients_scoring_each_sample_alone(batch, settings)):
        assert torch.allclose(a, b, atol=1e-5)


def test_prefix_groups_cut_sorted_prompts_where_they_diverge_within_the_limits():
    from trainers.generation.logprobs import prefix_groups, shared_prefix_length
    from trainers.learning.learner import forward_tokens

    rules = list(range(100, 120))
    a, b = rules + list(range(10, 22)), rules + list(range(30, 42))
    prompts = [a + [1], b + [2], a + [3, 4], b + [5], a + [6]]
    assert prefix_groups(prompts, max_rows=8, base=20) == [[0, 2, 4], [1, 3]]
    # a pass's fixed cost above what splitting saves: one pass
    assert prefix_groups(prompts, max_rows=8, base=20, pass_cost=100) == [[0, 2, 4, 1, 3]]
    # the row limit, and the token budget (a prompt alone may pass it)
    assert all(len(p) <= 2 for p in prefix_groups(prompts, max_rows=2, base=20))
    for group in prefix_groups(prompts, max_rows=8, base=20, answers=[5] * 5, max_tokens=40):
        rows = [(prompts[i], 5) for i in group]
        own = max(20, shared_prefix_length([prompts[i] for i in group]))
        assert len(group) == 1 or forward_tokens(rows, shared=own) <= 40
    assert sorted(i for g in prefix_groups(prompts, max_rows=3) for i in g) == list(range(5))
    assert prefix_groups([], max_rows=4) == []
    with pytest.raises(ValueError, match="max_rows"):
        prefix_groups(prompts, max_rows=0)


def test_a_step_costs_one_forward_per_distinct_prompt_not_per_sample():
    batch = repeated_choice_batch(distinct=3, copies=8)
    learner = Learner(tiny_model(), config(ppo_epochs=2, mini_batch_size=0, micro_batch_size=64))
    metrics = learner.update(batch)
    assert metrics["samples"] == 24
    assert metrics["forward_passes"] == 2  # one per epoch: the 3 distinct prompts share it
    split = Learner(tiny_model(), config(ppo_epochs=1, mini_batch_size=0, micro_batch_size=2))
    assert split.update(repeated_choice_batch(distinct=3, copies=8))["forward_passes"] == 2  # 2 + 1 prompts


# ---- stopping on non-finite numbers -----------------------------------------------------


def test_a_non_finite_loss_stops_the_update_before_the_weights_change():
    from trainers.learning.learner import NonFiniteLossError

    learner = Learner(tiny_model(), config(ppo_epochs=1, recompute_old_logprobs=False))
    batch = make_batch(40)
    batch[0].advantage = float("nan")
    before = weights(learner.model)
    with pytest.raises(NonFiniteLossError, match="nan"):
        learner.update(batch)
    assert all(torch.equal(before[n], p) for n, p in learner.model.named_parameters())


# ---- the reference policy: exact choice KL, magnet refresh ------------------------------


def test_choice_kl_to_the_reference_is_exact_over_the_candidates():
    batch = repeated_choice_batch(distinct=2, copies=2)
    learner = Learner(tiny_model(), config(kl_coef=0.5, ppo_epochs=1, mini_batch_size=0, lr=5e-2))
    learner.update([TurnSample(**vars(s)) for s in batch])
    with torch.no_grad():
        current = learner.score(learner.model, batch).log_policies
        reference = learner.reference_scores(batch).log_policies
    expected = sum((p.exp() * (p - q)).sum().item() for p, q in zip(current, reference)) / len(batch)
    assert expected > 1e-4  # the policy moved away from its reference
    again = learner.update([TurnSample(**vars(s)) for s in batch])
    # the first (and only) pass of the second update sees exactly the moved policy
    assert again["kl_ref"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_refreshing_the_reference_makes_the_current_policy_the_magnet(lora_rank):
    batch = repeated_choice_batch(distinct=2, copies=2)
    learner = Learner(tiny_model(), config(kl_coef=0.5, ppo_epochs=1, mini_batch_size=0, lr=5e-2, lora_rank=lora_rank))
    for _ in range(2):
        learner.update([TurnSample(**vars(s)) for s in batch])
    assert learner.update([TurnSample(**vars(s)) for s in batch])["kl_ref"] > 1e-5
    learner.refresh_reference()
    assert learner.update([TurnSample(**vars(s)) for s in batch])["kl_ref"] == pytest.approx(0.0, abs=1e-7)


def test_a_moved_magnet_survives_a_checkpoint(tmp_path):
    batch = repeated_choice_batch(distinct=2, copies=2)
    settings = dict(kl_coef=0.5, magnet_every=1, ppo_epochs=1, mini_batch_size=0, lr=5e-2)
    learner = Learner(tiny_model(), config(**settings))
    learner.update([TurnSample(**vars(s)) for s in batch])
    learner.refresh_reference()
    learner.update([TurnSample(**vars(s)) for s in batch])
    path = learner.save_checkpoint(tmp_path, 2)
    restored = Learner(tiny_model(seed=3), config(**settings))
    restored.load_checkpoint(path)
    for (name, p), (_, q) in zip(learner.reference_model.named_parameters(), restored.reference_model.named_parameters()):
        assert torch.equal(p, q), name


# ---- behaviour cloning ------------------------------------------------------------------


def test_imitation_raises_the_likelihood_of_the_cloned_answers():
    batch = make_batch(41, size=4)
    learner = Learner(tiny_model(), config(lr=1e-2))

    def likelihood():
        with torch.no_grad():
            return sum(row.sum().item() for row in learner.policy_logprobs(batch))

    before = likelihood()
    metrics = learner.imitate(batch)
    assert metrics["bc_samples"] == 4 and metrics["bc_loss"] > 0
    assert likelihood() > before


# ---- damaged checkpoints ----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip", "meta"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, damage):
    from trainers.run.checkpoints import DamagedCheckpoint

    learner = Learner(tiny_model(), config())
    older = learner.save_checkpoint(tmp_path, 1, {"step": 1})
    newer = learner.save_checkpoint(tmp_path, 2, {"step": 2})
    target = newer / "model" / "model.safetensors"
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "flip":
        position = len(data) // 2
        target.write_bytes(data[:position] + bytes([data[position] ^ 1]) + data[position + 1:])
    else:
        (newer / "meta.json").write_text("")
    with pytest.warns(UserWarning, match="step_00000002"):
        assert latest_checkpoint(tmp_path) == older
    with pytest.raises(DamagedCheckpoint):
        learner.load_checkpoint(newer)
    assert learner.load_checkpoint(older) == {"step": 1}


def test_micro_batches_respect_the_token_budget():
    from trainers.learning.learner import forward_tokens, micro_batches

    batch = make_batch(50, size=6)  # free text: prompts of 4-8 tokens, responses of 2-5
    settings = config(micro_batch_size=64, micro_batch_tokens=20)
    batches = micro_batches(batch, list(range(6)), settings)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        # no common prefix: every row is padded to the widest prompt plus fed response
        cost = len(b) * max(len(batch[i].prompt_ids) + len(batch[i].response_ids) - 1 for i in b)
        assert forward_tokens([(batch[i].prompt_ids, len(batch[i].response_ids) - 1) for i in b]) == cost
        assert cost <= 20 or len(b) == 1
    assert len(micro_batches(batch, list(range(6)), config(micro_batch_size=64, micro_batch_tokens=10**6))) == 1


def test_forward_tokens_count_a_shared_prefix_once():
    from trainers.learning.learner import forward_tokens

    rules = list(range(100, 140))  # 40 tokens every prompt shares (a game's rules)
    rows = [(rules + [i, i + 1], i + 1) for i in range(3)]
    assert forward_tokens(rows) == 40 + 3 * (2 + 3)  # the prefix once, rows padded to the widest
    assert forward_tokens([([1, 2, 3, i], 1) for i in range(3)]) == 3 * 5  # a prefix too short to run apart is in every row


def test_imitation_of_repeated_answers_runs_each_distinct_answer_once():
    batch = make_batch(42, size=2)
    repeated = [TurnSample(**vars(batch[i % 2])) for i in range(40)]
    learner = Learner(tiny_model(), config(lr=1e-2))
    calls = []
    hook = learner.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    learner.imitate(repeated)
    hook.remove()
    assert max(calls) <= 2  # 40 samples, 2 distinct (prompt, response) pairs


def test_parts_of_one_answer_share_their_prompts_row_and_score_as_alone(monkeypatch):
    """The parts of a chained answer ask one prompt with different candidates: one row, one
    micro-batch, and each part's log-policy exactly as if it were scored on its own."""
    import trainers.learning.learner as learner_module
    from trainers.learning.learner import micro_batches

    prompt = make_batch(5, size=1)[0].prompt_ids
    part_candidates = [[[70, 71], [70, 72]], [[70, 71, 80], [70, 71, 81], [70, 71, 82]], [[70, 71]]]
    parts = [TurnSample(prompt, c[0], [0.0], "simple_negotiation", 0, 0, choice_ids=c, choice_index=0) for c in part_candidates]
    learner = Learner(tiny_model(), config())
    rows = []
    original = learner_module.candidate_logprobs
    monkeypatch.setattr(learner_module, "candidate_logprobs",
                        lambda model, prompts, candidates, **kw: rows.append(len(prompts)) or original(model, prompts, candidates, **kw))
    together = learner.score(learner.model, parts)
    assert rows == [1]  # one prompt row holds every part's candidates ([70, 71] once)
    for sample, log_policy in zip(parts, together.log_policies):
        alone = learner.score(learner.model, [sample]).log_policies[0]
        assert torch.allclose(log_policy, alone, atol=1e-5)
    assert micro_batches(parts + make_batch(6, size=2, choice=True), list(range(5)), config(micro_batch_size=2)) == [[0, 1, 2, 3], [4]]


@pytest.mark.parametrize("choice", [True, False], ids=["choice", "text"])
def test_an_update_runs_the_prompts_common_prefix_once_with_the_same_result(monkeypatch, choice):
    """Every pass of an update continues one run of the prompts' common prefix (`PrefixRun`);
    the gradient the optimizer steps with is that of running the prefix in every pass."""
    import trainers.learning.learner as learner_module

    prefix = list(range(FIRST_BYTE_TOKEN, FIRST_BYTE_TOKEN + 20))
    batch = make_batch(9, size=6, choice=choice)
    for sample in batch:
        sample.prompt_ids = prefix + sample.prompt_ids
    settings = {"ppo_epochs": 1, "mini_batch_size": 0, "micro_batch_size": 2, "recompute_old_logprobs": False}

    def updated(run_prefix_apart):
        if not run_prefix_apart:
            monkeypatch.setattr(learner_module, "prefix_run", lambda model, prompts: None)
        learner = Learner(tiny_model(), config(**settings))
        samples = [TurnSample(**vars(s)) for s in batch]
        learner.recompute_old_logprobs(samples)
        widths, grads = [], []
        hook = learner.model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
        learner.optimizer.step = lambda: grads.extend(p.grad.clone() for p in learner.trainable_parameters)
        learner.update(samples)
        hook.remove()
        monkeypatch.undo()
        return grads, widths

    apart, widths = updated(True)
    assert widths.count(len(prefix)) == 1 and len(widths) == 4  # the prefix once, then three passes
    every_pass, widths = updated(False)
    assert widths.count(len(prefix)) == 3  # each pass ran it again
    assert len(apart) == len(every_pass) > 0
    for a, b in zip(apart, every_pass):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in apart)
