"""The policy loss: PPO's clipped surrogate, the KL to a reference policy, length normalisation.

Everything is a padded ``[samples, tokens]`` tensor with a boolean ``mask`` that is True on
the response tokens the policy chose and False on padding (and on prompt tokens, if a
caller lays prompts into the same tensor: they are the environment's, not the policy's,
so they carry no loss and receive no gradient). A ``choice``-mode sample is one "token":
the log-probability of the chosen candidate under the softmax over the candidates, with a
mask of length 1, and goes through exactly the same formula.
"""

from __future__ import annotations

import torch

from trainers.run.config import LENGTH_NORMS


def ppo_clipped_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float = 0.2,
    length_norm: str = "constant",
    max_length: int | None = None,
    loss_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate over masked tokens; returns ``(loss, metrics)``.

    Per token t of sample i, with ``A_i`` the sample's advantage:

        ratio = exp(new - old)
        l_t   = -min(ratio * A_i, clip(ratio, 1 - clip, 1 + clip) * A_i)

    Length normalisation of the masked token losses, ``loss = mean_i (sum_t l_t / D_i)``:

    * ``constant`` (Dr. GRPO, SPIRAL): ``D_i = max_length``, a constant (the generation
      budget; default: the tensor width). A long answer's tokens weigh as much as a short
      answer's, so length is not rewarded or punished by the normalisation itself.
    * ``token_mean``: ``D_i = n_i``, the sample's own token count (GRPO's original form).
    * `loss_tokens` (per sample, > 0 where given) overrides ``D_i``: a Markovian chunk is
      divided by its whole trace's token count (``trainers.rollouts.thinking``).

    Metrics (floats, over masked tokens): ``loss``, ``clip_fraction`` (tokens whose ratio lies
    outside ``[1 - clip, 1 + clip]``), ``approx_kl`` (k3 estimate of KL(old || new): mean of
    ``ratio - 1 - log ratio``) and ``ratio_mean``. The KL to a reference policy is
    `reference_kl`, divided by the same ``D_i`` (`sample_divisors`).
    """
    if length_norm not in LENGTH_NORMS:
        raise ValueError(f"unknown length_norm {length_norm!r}; choose one of {', '.join(LENGTH_NORMS)}")
    if new_logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [samples, tokens], got shape {tuple(new_logprobs.shape)}")
    mask = mask.bool()
    # Masked entries may be anything (padding, -inf); zeroing the log-ratio there keeps
    # them out of both the value and the gradient.
    log_ratio = torch.where(mask, new_logprobs - old_logprobs, 0.0)
    ratio = torch.exp(log_ratio)
    adv = advantages.to(ratio.dtype)[:, None]
    token_loss = -torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * adv)
    token_loss = torch.where(mask, token_loss, 0.0)

    num_samples = new_logprobs.shape[0]
    if loss_tokens is not None:
        divisors = sample_divisors(mask, length_norm=length_norm, max_length=max_length, loss_tokens=loss_tokens)
        loss = (token_loss.sum(dim=1) / divisors).mean()
    elif length_norm == "constant":
        width = new_logprobs.shape[1] if max_length is None else max_length
        loss = token_loss.sum() / (num_samples * width)
    else:
        lengths = mask.sum(dim=1).clamp(min=1)
        loss = (token_loss.sum(dim=1) / lengths).mean()

    with torch.no_grad():
        metrics = {
            "loss": loss.item(),
            "clip_fraction": _masked_mean(((ratio - 1.0).abs() > clip).float(), mask),
            "approx_kl": _masked_mean(ratio - 1.0 - log_ratio, mask),
            "ratio_mean": _masked_mean(ratio, mask),
        }
    return loss, metrics


def sample_divisors(
    mask: torch.Tensor, *, length_norm: str, max_length: int | None = None, loss_tokens: torch.Tensor | None = None
) -> torch.Tensor:
    """``D_i`` of `ppo_clipped_loss` per sample: the constant, or the sample's token count
    (``token_mean``), replaced by `loss_tokens` where that is > 0."""
    if length_norm not in LENGTH_NORMS:
        raise ValueError(f"unknown length_norm {length_norm!r}; choose one of {', '.join(LENGTH_NORMS)}")
    mask = mask.bool()
    if length_norm == "constant":
        width = mask.shape[1] if max_length is None else max_length
        divisors = torch.full((mask.shape[0],), float(width), device=mask.device)
    else:
        divisors = mask.sum(dim=1).clamp(min=1).float()
    if loss_tokens is not None:
        loss_tokens = loss_tokens.to(divisors.device, divisors.dtype)
        divisors = torch.where(loss_tokens > 0, loss_tokens, divisors)
    return divisors


def reference_kl(rows, log_policies, reference) -> torch.Tensor:
    """Per sample, the KL of the policy to the reference policy, summed over the sample's tokens.

    Choice samples (a log-policy over the candidates): exact, ``sum_a pi(a) (log pi(a) - log ref(a))``.
    Text samples: the k3 estimator per sampled token, ``exp(ref - new) - (ref - new) - 1``
    (unbiased for KL(pi || ref) under pi's samples, and never negative), summed. Divide by
    `sample_divisors` as the PPO term is, so that a ``kl_coef`` weighs the same per decision
    in choice and text modes.
    """
    values = []
    for row, log_policy, ref in zip(rows, log_policies, reference):
        if log_policy is not None:
            values.append((log_policy.exp() * (log_policy - ref)).sum())
        else:
            diff = ref - row
            values.append((torch.exp(diff) - diff - 1.0).sum())
    return torch.stack(values)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return (torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)).item()


def pad_logprobs(rows: list[torch.Tensor], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D per-sample tensors into ``([samples, width], mask)``; keeps gradients."""
    width = max((row.numel() for row in rows), default=0) if width is None else width
    padded = torch.stack([torch.nn.functional.pad(row, (0, width - row.numel())) for row in rows])
    mask = torch.zeros(padded.shape, dtype=torch.bool)
    for i, row in enumerate(rows):
        mask[i, : row.numel()] = True
    return padded, mask.to(padded.device)
