"""Sampling arguments and nucleus (top-p) truncation, shared by the engines that sample in torch.

`check_sampling_arguments` is the one check of ``temperature`` and ``top_p`` every engine
applies before it generates (the in-process transformers engine, the vLLM engine and the
OpenRLHF local engine); `top_p_filter` is the truncation the torch engines sample from.
"""

from __future__ import annotations


def check_sampling_arguments(temperature: float, top_p: float) -> None:
    """Raise ValueError unless ``temperature >= 0`` (0: greedy) and ``0 < top_p <= 1``."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def top_p_filter(probs, top_p: float):
    """`probs` (``[rows, vocab]``, each row a distribution) with every token outside the nucleus zeroed.

    The nucleus is the smallest prefix of the tokens sorted by probability whose mass
    reaches `top_p`: a token is dropped once the mass before it already does, so the most
    likely token is always kept. Rows are not renormalised (``torch.multinomial`` does not
    need it). ``top_p = 1`` returns `probs` itself.
    """
    if top_p >= 1:
        return probs
    import torch

    sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
    sorted_probs[(sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p] = 0
    return torch.zeros_like(probs).scatter_(-1, sorted_ids, sorted_probs)
