"""The clipped surrogate, KL and length normalisation against hand-computed numbers."""

import math

import pytest
import torch

from trainers.learning.loss import pad_logprobs, ppo_clipped_loss, reference_kl, sample_divisors


def single_token(log_ratio, advantage, **kwargs):
    new = torch.tensor([[log_ratio]], requires_grad=True)
    loss, metrics = ppo_clipped_loss(new, torch.zeros(1, 1), torch.tensor([advantage]), torch.ones(1, 1), **kwargs)
    loss.backward()
    return loss.item(), new.grad.item(), metrics


def test_ratio_one_gives_minus_advantage_per_token_under_both_normalisations():
    # Sample 0: two tokens, A = 1; sample 1: one token (one padding column), A = -0.5.
    new = torch.zeros(2, 2)
    mask = torch.tensor([[True, True], [True, False]])
    advantages = torch.tensor([1.0, -0.5])
    constant, _ = ppo_clipped_loss(new, new, advantages, mask, length_norm="constant", max_length=4)
    # Token losses -1, -1, +0.5; summed and divided by 2 samples * 4 tokens.
    assert constant.item() == pytest.approx(-1.5 / 8)
    token_mean, _ = ppo_clipped_loss(new, new, advantages, mask, length_norm="token_mean")
    # Sample means -1 and 0.5, averaged.
    assert token_mean.item() == pytest.approx(-0.25)
    default_width, _ = ppo_clipped_loss(new, new, advantages, mask)
    assert default_width.item() == pytest.approx(-1.5 / 4)


def test_constant_normalisation_gradient_is_minus_advantage_over_samples_times_length():
    new = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    loss, _ = ppo_clipped_loss(new, torch.zeros(2, 3), torch.tensor([2.0, -1.0]), mask, max_length=5)
    loss.backward()
    expected = torch.tensor([[-2.0, -2.0, -2.0], [1.0, 0.0, 0.0]]) / 10
    assert torch.allclose(new.grad, expected)


@pytest.mark.parametrize(
    "ratio, advantage, loss, gradient_flows",
    [
        (1.5, 1.0, -1.2, False),  # pushed past 1 + clip in the favoured direction: clipped
        (1.5, -1.0, 1.5, True),   # moved the wrong way: the unclipped (worse) term is kept
        (0.5, 1.0, -0.5, True),
        (0.5, -1.0, 0.8, False),  # pushed below 1 - clip for a negative advantage: clipped
        (1.1, 1.0, -1.1, True),   # inside the range
    ],
)
def test_clipping(ratio, advantage, loss, gradient_flows):
    value, gradient, metrics = single_token(math.log(ratio), advantage, length_norm="token_mean")
    assert value == pytest.approx(loss)
    assert (gradient != 0.0) == gradient_flows
    assert metrics["clip_fraction"] == (1.0 if abs(ratio - 1) > 0.2 else 0.0)
    assert metrics["ratio_mean"] == pytest.approx(ratio)
    assert metrics["approx_kl"] == pytest.approx(ratio - 1 - math.log(ratio), rel=1e-4)  # float32


def test_clip_range_is_configurable():
    value, _, _ = single_token(math.log(1.5), 1.0, clip=0.4)
    assert value == pytest.approx(-1.4)


def test_kl_to_reference_is_the_k3_estimator_summed_over_tokens_and_exact_over_choices():
    new = torch.zeros(2)
    ref = torch.full((2,), math.log(2.0))
    k3 = 2.0 - math.log(2.0) - 1.0
    log_policy = torch.log(torch.tensor([0.5, 0.5]))
    log_ref = torch.log(torch.tensor([0.25, 0.75]))
    kl = reference_kl([new, torch.zeros(1)], [None, log_policy], [ref, log_ref])
    exact = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl.tolist() == pytest.approx([2 * k3, exact])


def test_divisors_are_the_ppo_terms_and_loss_tokens_override_them():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert sample_divisors(mask, length_norm="constant", max_length=8).tolist() == [8.0, 8.0]
    assert sample_divisors(mask, length_norm="token_mean").tolist() == [2.0, 1.0]
    assert sample_divisors(mask, length_norm="constant", max_length=8, loss_tokens=torch.tensor([0.0, 40.0])).tolist() == [8.0, 40.0]


def test_loss_tokens_divide_a_samples_summed_token_loss():
    new = torch.tensor([[0.1, -0.2], [0.3, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    loss, _ = ppo_clipped_loss(new, torch.zeros(2, 2), torch.tensor([1.0, 1.0]), mask, max_length=4,
                               loss_tokens=torch.tensor([10.0, 0.0]))
    ratio = new.exp()
    first = -(torch.clamp(ratio[0], 0.8, 1.2).minimum(ratio[0])).sum() / 10  # A > 0: min(r, clip(r))
    second = -torch.minimum(ratio[1, 0], torch.clamp(ratio[1, 0], 0.8, 1.2)) / 4
    assert loss.item() == pytest.approx(((first + second) / 2).item())


def test_prompt_and_padding_positions_carry_no_loss_and_no_gradient():
    # Columns 0-1 are prompt positions, column 4 padding; only 2-3 are response tokens.
    mask = torch.tensor([[False, False, True, True, False]])
    old = torch.tensor([[-1.0, -2.0, -0.5, -0.7, 0.0]])
    advantages = torch.tensor([1.5])
    base = torch.tensor([[-1.0, -2.0, -0.4, -0.9, 0.0]])
    altered = base.clone()
    altered[0, [0, 1, 4]] = torch.tensor([5.0, -float("inf"), 123.0])
    losses = []
    for values in (base, altered):
        new = values.clone().requires_grad_(True)
        loss, _ = ppo_clipped_loss(new, old, advantages, mask)
        loss.backward()
        assert new.grad[0, [0, 1, 4]].tolist() == [0.0, 0.0, 0.0]
        assert torch.isfinite(new.grad).all() and new.grad[0, 2] != 0
        losses.append(loss.item())
    assert losses[0] == losses[1]


def test_choice_sample_is_one_token():
    # A choice sample: log pi(chosen) went from log 0.25 to log 0.28 with A = 1.
    new = torch.tensor([[math.log(0.28)]])
    old = torch.tensor([[math.log(0.25)]])
    loss, metrics = ppo_clipped_loss(new, old, torch.tensor([1.0]), torch.ones(1, 1, dtype=torch.bool), max_length=1)
    assert loss.item() == pytest.approx(-1.12)
    assert metrics["clip_fraction"] == 0.0


def test_unknown_length_norm():
    with pytest.raises(ValueError, match="token_mean"):
        ppo_clipped_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), length_norm="sum")


def test_pad_logprobs_right_pads_and_masks():
    padded, mask = pad_logprobs([torch.tensor([1.0, 2.0]), torch.tensor([3.0])])
    assert padded.tolist() == [[1.0, 2.0], [3.0, 0.0]]
    assert mask.tolist() == [[True, True], [True, False]]
