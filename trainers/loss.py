"""The policy loss: PPO's clipped surrogate, an optional KL to a frozen reference, length normalisation.

Everything is a padded ``[samples, tokens]`` tensor with a boolean ``mask`` that is True on
the response tokens the policy chose and False on padding (and on prompt tokens, if a
caller lays prompts into the same tensor: they are the environment's, not the policy's,
so they carry no loss and receive no gradient). A ``choice``-mode sample is one "token":
the log-probability of the chosen candidate under the softmax over the candidates, with a
mask of length 1, and goes through exactly the same formula.
"""

from __future__ import annotations

import torch

LENGTH_NORMS = ("constant", "token_mean")


def ppo_clipped_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float = 0.2,
    length_norm: str = "constant",
    max_length: int | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate over masked tokens; returns ``(loss, metrics)``.

    Per token t of sample i, with ``A_i`` the sample's advantage:

        ratio = exp(new - old)
        l_t   = -min(ratio * A_i, clip(ratio, 1 - clip, 1 + clip) * A_i)
        l_t  += kl_coef * (exp(ref - new) - (ref - new) - 1)        # k3 KL estimator, if ref given

    Length normalisation of the masked token losses:

    * ``constant`` (Dr. GRPO, SPIRAL): ``sum_i sum_t l_t / (num_samples * max_length)``, with
      ``max_length`` a constant (the generation budget; default: the tensor width). A long
      answer's tokens weigh as much as a short answer's, so length is not rewarded or punished
      by the normalisation itself.
    * ``token_mean``: ``mean_i (sum_t l_t / n_i)``, each sample's mean over its ``n_i`` tokens,
      then the mean over samples (GRPO's original form).

    Metrics (floats, over masked tokens): ``loss``, ``clip_fraction`` (tokens whose ratio lies
    outside ``[1 - clip, 1 + clip]``), ``approx_kl`` (k3 estimate of KL(old || new): mean of
    ``ratio - 1 - log ratio``), ``ratio_mean``, and ``kl_ref`` (mean k3 to the reference) when
    ``ref_logprobs`` is given.
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
    kl_ref = None
    if ref_logprobs is not None:
        ref_diff = torch.where(mask, ref_logprobs - new_logprobs, 0.0)
        kl_ref = torch.exp(ref_diff) - ref_diff - 1.0
        if kl_coef:
            token_loss = token_loss + kl_coef * kl_ref
    token_loss = torch.where(mask, token_loss, 0.0)

    num_samples = new_logprobs.shape[0]
    if length_norm == "constant":
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
        if kl_ref is not None:
            metrics["kl_ref"] = _masked_mean(kl_ref, mask)
    return loss, metrics


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
