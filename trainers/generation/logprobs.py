"""Log-probs of given continuations under a transformers model, with gradients when wanted.

The training-side counterpart of generation: ``sequence_logprobs`` recomputes the raw
per-token log-probs of sampled responses (the new log-probs of a PPO ratio), and
``candidate_logprobs`` scores every legal action string of choice mode with the prompt run
once. Both follow the log-prob convention of ``trainers.generation.base``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Padding positions are masked out of attention and of every result, so any valid id works.
_FILLER_ID = 0

def sequence_logprobs(model, prompt_ids_batch, response_ids_batch) -> list[torch.Tensor]:
    """Per-token raw log-probs of each response given its prompt, in one forward pass.

    Returns one 1-D float32 tensor per row, of the response's length. Under
    ``torch.inference_mode`` it is a pure evaluation; otherwise the tensors carry gradients
    to the model's weights (the new log-probs of a PPO ratio). Padding is masked out of
    attention, so a row's values do not depend on the other rows (up to float rounding).
    The prompts' common prefix is run once for the batch (see `shared_prefix`).
    """
    if len(prompt_ids_batch) != len(response_ids_batch):
        raise ValueError("prompt_ids_batch and response_ids_batch must have the same length")
    response_width = max((len(r) for r in response_ids_batch), default=0)
    if response_width == 0:
        return [torch.zeros(0) for _ in response_ids_batch]
    if any(len(p) == 0 for p in prompt_ids_batch):
        raise ValueError("every prompt needs at least one token to condition the response on")
    device = model.device
    shared, past = shared_prefix(model, prompt_ids_batch)
    input_ids, attention_mask = left_pad([p[shared:] for p in prompt_ids_batch], extra_columns=response_width, device=device)
    prompt_width = input_ids.shape[1] - response_width
    for row, response in enumerate(response_ids_batch):
        input_ids[row, prompt_width:prompt_width + len(response)] = torch.tensor(response, dtype=torch.long)
        attention_mask[row, prompt_width:prompt_width + len(response)] = 1
    targets = input_ids[:, prompt_width:]
    # The last response token is only a target, so it is not fed; the logits at the last
    # prompt position and every response position but the last predict the response.
    positions = shared + (attention_mask.cumsum(1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids[:, :-1],
        attention_mask=_with_prefix(attention_mask[:, :-1], shared),
        position_ids=positions[:, :-1],
        use_cache=bool(past),
        logits_to_keep=response_width,
        **past,
    ).logits.float()
    token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
    return [token_logprobs[row, : len(response)] for row, response in enumerate(response_ids_batch)]


def candidate_logprobs(
    model, prompt_ids_batch: Sequence[Sequence[int]], candidates_batch: Sequence[Sequence[Sequence[int]]]
) -> list[torch.Tensor]:
    """Summed raw log-prob of each candidate continuation of each prompt, prompt run once.

    Returns one 1-D tensor per prompt (one value per candidate), with gradients unless
    called under ``torch.inference_mode``. The prompt goes through the model once; its KV
    cache is then shared by all its candidates, which are short (action strings), so the
    cost is about one prompt forward instead of one per candidate. The prompts' common
    prefix (a game's rules, the chat template) is run once for the whole batch (see
    `_prefill`). Equal, up to float rounding, to summing `sequence_logprobs` over each
    (prompt, candidate) pair, gradients included.
    """
    if len(prompt_ids_batch) != len(candidates_batch):
        raise ValueError("prompt_ids_batch and candidates_batch must have the same length")
    if any(len(p) == 0 for p in prompt_ids_batch):
        raise ValueError("every prompt needs at least one token to condition the response on")
    if any(len(c) == 0 for candidates in candidates_batch for c in candidates):
        raise ValueError("every candidate needs at least one token")
    device = model.device
    out, cache_arg, attention_mask, positions = _prefill(model, prompt_ids_batch)
    cache = out[cache_arg]
    first_logprobs = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    owners = [b for b, candidates in enumerate(candidates_batch) for _ in candidates]
    rows = [list(c) for candidates in candidates_batch for c in candidates]
    owner = torch.tensor(owners, dtype=torch.long, device=device)
    width = max(len(r) for r in rows)
    candidate = torch.full((len(rows), width), _FILLER_ID, dtype=torch.long, device=device)
    candidate_mask = torch.zeros_like(candidate)
    for r, ids in enumerate(rows):
        candidate[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        candidate_mask[r, : len(ids)] = 1
    token_logprobs = first_logprobs[owner].gather(1, candidate[:, :1])
    if width > 1:
        steps = torch.arange(1, width, device=device)
        rests = []
        for start in range(0, len(rows), MAX_CANDIDATE_ROWS):
            chunk = slice(start, start + MAX_CANDIDATE_ROWS)
            if len(rows) <= MAX_CANDIDATE_ROWS:
                cache.batch_select_indices(owner)  # one cache row per candidate
                chunk_cache = cache
            else:  # many candidates (e.g. negotiation offers): bounded copies of the cache
                chunk_cache = _cache_rows(cache, owner[chunk])
            later = model(
                input_ids=candidate[chunk, :-1],
                attention_mask=torch.cat([attention_mask[owner[chunk]], candidate_mask[chunk, :-1]], dim=1),
                position_ids=positions[owner[chunk], -1:] + steps,
                use_cache=True,
                **{cache_arg: chunk_cache},
            ).logits.float()
            rests.append(torch.log_softmax(later, dim=-1).gather(-1, candidate[chunk, 1:, None])[..., 0])
        token_logprobs = torch.cat([token_logprobs, torch.cat(rests)], dim=1)
    sums = (token_logprobs * candidate_mask).sum(dim=1)
    result, start = [], 0
    for candidates in candidates_batch:
        result.append(sums[start : start + len(candidates)])
        start += len(candidates)
    return result


MAX_CANDIDATE_ROWS = 32
"""Candidate rows per forward pass: each holds a copy of its prompt's KV cache."""

MIN_SHARED_PREFIX = 8
"""Shortest common prefix worth a separate forward pass."""


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence shares."""
    first, length = sequences[0], min(len(s) for s in sequences)
    for other in sequences[1:]:
        position = 0
        while position < length and other[position] == first[position]:
            position += 1
        length = position
    return length


def shared_prefix(model, prompt_ids_batch) -> tuple[int, dict]:
    """Run the prompts' common prefix once; return its length and the model kwargs that pass
    its KV cache (expanded to every row) to the next forward ({} when not worth it).

    Prompts of one game share a long prefix (the chat template and the rules). Gradients
    flow through the expanded cache into the shared forward, so values and gradients are
    the same as running every prompt whole. At least one token of each prompt is left out
    of the prefix, so every row's next-token logits come from its own forward.
    """
    if len(prompt_ids_batch) < 2:
        return 0, {}
    shared = min(common_prefix_length(prompt_ids_batch), min(len(p) for p in prompt_ids_batch) - 1)
    if shared < MIN_SHARED_PREFIX:
        return 0, {}
    from transformers import DynamicCache

    device = model.device
    prefix = torch.tensor([list(prompt_ids_batch[0][:shared])], dtype=torch.long, device=device)
    head = model(input_ids=prefix, position_ids=torch.arange(shared, device=device)[None], use_cache=True, logits_to_keep=1)
    cache_arg = "cache" if "cache" in head else "past_key_values"
    rows = len(prompt_ids_batch)
    expanded = DynamicCache(
        [(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1)) for layer in head[cache_arg].layers]
    )
    return shared, {cache_arg: expanded}


def _with_prefix(attention_mask: torch.Tensor, shared: int) -> torch.Tensor:
    """The attention mask of rows that continue a shared prefix of `shared` tokens."""
    if not shared:
        return attention_mask
    ones = torch.ones(attention_mask.shape[0], shared, dtype=attention_mask.dtype, device=attention_mask.device)
    return torch.cat([ones, attention_mask], dim=1)


def _prefill(model, prompt_ids_batch):
    """Run the prompts (their shared prefix once); return (output with last-token logits,
    cache key, attention mask over every position, position ids)."""
    device = model.device
    shared, past = shared_prefix(model, prompt_ids_batch)
    suffix_ids, suffix_mask = left_pad([p[shared:] for p in prompt_ids_batch], extra_columns=0, device=device)
    suffix_positions = shared + (suffix_mask.cumsum(1) - 1).clamp(min=0)
    attention_mask = _with_prefix(suffix_mask, shared)
    out = model(
        input_ids=suffix_ids,
        attention_mask=attention_mask,
        position_ids=suffix_positions,
        use_cache=True,
        logits_to_keep=1,
        **past,
    )
    prefix_positions = torch.arange(shared, device=device)[None].expand(len(prompt_ids_batch), -1)
    positions = torch.cat([prefix_positions, suffix_positions], dim=1)
    return out, ("cache" if "cache" in out else "past_key_values"), attention_mask, positions


def _cache_rows(cache, index: torch.Tensor):
    """A new cache holding rows `index` of `cache` (which is left as it was)."""
    from transformers import DynamicCache

    return DynamicCache([(layer.keys[index], layer.values[index]) for layer in cache.layers])


def left_pad(sequences, *, extra_columns: int, device):
    """Left-padded ids and attention mask, with ``extra_columns`` empty columns on the right."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full(
        (len(sequences), width + extra_columns), _FILLER_ID, dtype=torch.long
    )
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(sequences):
        input_ids[row, width - len(ids) : width] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) : width] = 1
    return input_ids.to(device), attention_mask.to(device)
