"""Generation backend: sampling with per-token log-probs, choice scoring, response log-probs.

The trainer talks to a ``GenerationBackend`` (``generate`` and ``score_choices``); this module
implements it on a transformers model with a hand-written decoding loop. A vLLM backend
implements the same two methods. ``sequence_logprobs`` is the training-side counterpart: it
recomputes the log-probs of given response ids, with gradients, for PPO ratios.

Log-prob convention (shared by every function here): a log-prob is
``log_softmax(logits)[token]`` of the RAW model distribution, i.e. at temperature 1 and
without top-p truncation, whatever temperature and top-p were used to pick the token. That is
exactly what ``sequence_logprobs`` recomputes, so the "old log-probs" recorded at rollout
time and the "new log-probs" of the loss are the same function of the weights and the PPO
ratio is 1 before the first update. (When sampling at temperature 1 with top_p 1 this is
also the probability the token was actually sampled with.)

Token layout (also shared): a prompt is rendered and tokenised once (``encode_prompts``) and
the response ids are appended to those prompt ids; nothing is re-tokenised across the
prompt/response boundary. Batches are left-padded prompts followed by right-padded responses,
with explicit position ids so padding never shifts positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

Prompt = list[dict] | str

# Padding positions are masked out of attention and of every result, so any valid id works.
_FILLER_ID = 0

# End-of-turn markers of common chat formats. A chat model often ends its turn with one of
# these while its config names a different eos token, so they stop generation as well.
_END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
)


@dataclass
class Generation:
    """One sampled response.

    ``response_ids`` ends with the stop token when ``finish_reason == "stop"`` (the trainer
    should learn to stop, so the stop token is part of the action) and ``logprobs[i]`` is the
    raw-model log-prob of ``response_ids[i]`` (see the module docstring). ``text`` is the
    response decoded without special tokens. ``finish_reason`` is ``"stop"`` (a stop token
    was sampled) or ``"length"`` (``max_new_tokens`` reached).
    """

    text: str
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    finish_reason: str


class GenerationBackend(Protocol):
    """What a rollout needs from an inference engine (transformers here, vLLM later)."""

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int,
        batch_size: int = 8,
    ) -> list[Generation]: ...

    def score_choices(
        self,
        prompts: Sequence[Prompt],
        choices: Sequence[Sequence[str]],
        *,
        batch_size: int = 16,
    ) -> list[list[float]]: ...


class TransformersBackend:
    """``GenerationBackend`` over an in-process transformers model.

    It holds references, not copies: the trainer updates ``model`` in place and the next
    rollout samples from the updated weights.
    """

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    def generate(
        self, prompts, *, max_new_tokens, temperature=1.0, top_p=1.0, seed, batch_size=8
    ):
        return generate(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
        )

    def score_choices(self, prompts, choices, *, batch_size=16):
        return score_choices(
            self.model, self.tokenizer, prompts, choices, batch_size=batch_size
        )


def encode_prompts(tokenizer, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids of each prompt, as every function here sees them.

    A chat prompt (a list of ``{"role", "content"}`` messages) is rendered with the
    tokenizer's chat template plus the assistant generation prompt, then tokenised without
    adding special tokens (the template already contains them). A string is raw text and is
    tokenised with the tokenizer's usual special tokens (e.g. a BOS).
    """
    ids = []
    for prompt in prompts:
        if isinstance(prompt, str):
            ids.append(tokenizer(prompt).input_ids)
        else:
            text = tokenizer.apply_chat_template(
                list(prompt), add_generation_prompt=True, tokenize=False
            )
            ids.append(tokenizer(text, add_special_tokens=False).input_ids)
    return ids


def encode_choice(tokenizer, choice: str) -> list[int]:
    """Response ids of a candidate continuation: the string tokenised on its own.

    They are appended to the prompt ids unchanged, which is the same layout as a sampled
    response, so a trainer that trains on the chosen candidate uses exactly these ids.
    Special-token text is recognised, so ``"[bet]<|im_end|>"`` scores a complete turn.
    """
    return tokenizer(choice, add_special_tokens=False).input_ids


def default_stop_token_ids(model, tokenizer) -> list[int]:
    """Ids that end a response: the tokenizer's and model's eos, and chat end-of-turn tokens."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    config_eos = getattr(
        getattr(model, "generation_config", None), "eos_token_id", None
    )
    if config_eos is not None:
        ids.update([config_eos] if isinstance(config_eos, int) else config_eos)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in _END_OF_TURN_TOKENS if token in vocab)
    return sorted(ids)


def generate(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int,
    batch_size: int = 8,
    stop_token_ids: Sequence[int] | None = None,
) -> list[Generation]:
    """Sample one response per prompt; results are in prompt order.

    ``temperature=0`` is greedy decoding. Sampling draws only from a ``torch.Generator``
    seeded with ``seed``, so the same call (same prompts, batch size and machine) gives the
    same outputs, and the global RNG is untouched. Prompts are grouped by length into batches
    of ``batch_size`` to limit padding. A row leaves the batch, KV cache included, as soon as
    it samples a stop token (``stop_token_ids``, by default ``default_stop_token_ids``), so
    finished rows cost no further compute.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    prompt_ids = encode_prompts(tokenizer, prompts)
    if any(len(ids) == 0 for ids in prompt_ids):
        raise ValueError(
            "every prompt needs at least one token to condition the response on"
        )
    if stop_token_ids is None:
        stop_token_ids = default_stop_token_ids(model, tokenizer)
    stops = torch.tensor(sorted(stop_token_ids), dtype=torch.long, device=model.device)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    results: list[Generation | None] = [None] * len(prompt_ids)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = [prompt_ids[i] for i in rows]
            sampled = _sample_batch(
                model, batch, max_new_tokens, temperature, top_p, stops, generator
            )
            for row, ids, (response, logprobs, stopped) in zip(rows, batch, sampled):
                text_ids = response[:-1] if stopped else response
                results[row] = Generation(
                    text=tokenizer.decode(text_ids, skip_special_tokens=True),
                    prompt_ids=ids,
                    response_ids=response,
                    logprobs=logprobs,
                    finish_reason="stop" if stopped else "length",
                )
    return results


def _sample_batch(
    model, prompt_ids, max_new_tokens, temperature, top_p, stops, generator
):
    """Decode one batch with a KV cache; return ``(response_ids, logprobs, stopped)`` per row."""
    device = model.device
    input_ids, attention_mask = _left_pad(
        prompt_ids, extra_columns=max_new_tokens, device=device
    )
    prompt_width = input_ids.shape[1] - max_new_tokens
    positions = (attention_mask[:, :prompt_width].cumsum(1) - 1).clamp(min=0)
    # Self-play batches repeat prompts (every game at the same information state asks the
    # same question): prefill each distinct prompt once, then give every row its own copy
    # of the cache to sample from.
    distinct: dict[tuple, int] = {}
    owner = [distinct.setdefault(tuple(ids), len(distinct)) for ids in prompt_ids]
    first_rows = torch.tensor([owner.index(d) for d in range(len(distinct))], device=device)
    out = model(
        input_ids=input_ids[first_rows, :prompt_width],
        attention_mask=attention_mask[first_rows, :prompt_width],
        position_ids=positions[first_rows],
        use_cache=True,
        logits_to_keep=1,
    )
    # transformers 5 renamed the cache argument from past_key_values to cache; follow the output.
    cache_arg = "cache" if "cache" in out else "past_key_values"
    cache = out[cache_arg]
    last_logits = out.logits[:, -1]
    if len(distinct) < len(prompt_ids):
        expand = torch.tensor(owner, device=device)
        cache.batch_select_indices(expand)
        last_logits = last_logits[expand]
    next_position = positions[:, -1:] + 1
    batch = len(prompt_ids)
    tokens = torch.zeros(batch, max_new_tokens, dtype=torch.long, device=device)
    logprobs = torch.zeros(batch, max_new_tokens, dtype=torch.float32, device=device)
    lengths = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)
    stopped = torch.zeros(batch, dtype=torch.bool, device=device)
    live = torch.arange(
        batch, device=device
    )  # original row of each row still in the batch
    for step in range(max_new_tokens):
        logits = last_logits.float()
        token_logprobs = torch.log_softmax(logits, dim=-1)
        token = _pick(logits, token_logprobs, temperature, top_p, generator)
        tokens[live, step] = token
        logprobs[live, step] = token_logprobs.gather(1, token[:, None])[:, 0]
        done = torch.isin(token, stops)
        if done.any():
            done_rows = live[done]
            lengths[done_rows] = step + 1
            stopped[done_rows] = True
            keep = (~done).nonzero()[:, 0]
            if keep.numel() == 0:
                break
            cache.batch_select_indices(keep)
            live, token, next_position = live[keep], token[keep], next_position[keep]
            attention_mask = attention_mask[keep]
        if step + 1 == max_new_tokens:
            break
        attention_mask[:, prompt_width + step] = 1
        out = model(
            input_ids=token[:, None],
            attention_mask=attention_mask[:, : prompt_width + step + 1],
            position_ids=next_position,
            use_cache=True,
            **{cache_arg: cache},
        )
        last_logits = out.logits[:, -1]
        next_position = next_position + 1
    tokens, logprobs, stopped = tokens.tolist(), logprobs.tolist(), stopped.tolist()
    return [
        (tokens[row][:n], logprobs[row][:n], stopped[row])
        for row, n in enumerate(lengths.tolist())
    ]


def _pick(logits, token_logprobs, temperature, top_p, generator):
    """The next token of each row: greedy at temperature 0, otherwise a seeded sample."""
    if temperature == 0:
        return token_logprobs.argmax(dim=-1)
    probs = (
        token_logprobs.exp()
        if temperature == 1
        else torch.softmax(logits / temperature, dim=-1)
    )
    if top_p < 1:
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p: drop a token once the mass
        # before it already does. The most likely token is always kept.
        sorted_probs[(sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p] = 0
        probs = torch.zeros_like(probs).scatter_(-1, sorted_ids, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def sequence_logprobs(
    model, prompt_ids_batch, response_ids_batch
) -> list[torch.Tensor]:
    """Per-token raw log-probs of each response given its prompt, in one forward pass.

    Returns one 1-D float32 tensor per row, of the response's length. Under
    ``torch.inference_mode`` it is a pure evaluation; otherwise the tensors carry gradients
    to the model's weights (the new log-probs of a PPO ratio). Padding is masked out of
    attention, so a row's values do not depend on the other rows (up to float rounding).
    """
    if len(prompt_ids_batch) != len(response_ids_batch):
        raise ValueError(
            "prompt_ids_batch and response_ids_batch must have the same length"
        )
    response_width = max((len(r) for r in response_ids_batch), default=0)
    if response_width == 0:
        return [torch.zeros(0) for _ in response_ids_batch]
    if any(len(p) == 0 for p in prompt_ids_batch):
        raise ValueError(
            "every prompt needs at least one token to condition the response on"
        )
    device = model.device
    input_ids, attention_mask = _left_pad(
        prompt_ids_batch, extra_columns=response_width, device=device
    )
    prompt_width = input_ids.shape[1] - response_width
    for row, response in enumerate(response_ids_batch):
        input_ids[row, prompt_width : prompt_width + len(response)] = torch.tensor(
            response, dtype=torch.long
        )
        attention_mask[row, prompt_width : prompt_width + len(response)] = 1
    targets = input_ids[:, prompt_width:]
    # The last response token is only a target, so it is not fed; the logits at the last
    # prompt position and every response position but the last predict the response.
    positions = (attention_mask.cumsum(1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=positions[:, :-1],
        use_cache=False,
        logits_to_keep=response_width,
    ).logits.float()
    token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[
        ..., 0
    ]
    return [
        token_logprobs[row, : len(response)]
        for row, response in enumerate(response_ids_batch)
    ]


def score_choices(
    model, tokenizer, prompts: Sequence[Prompt], choices: Sequence[Sequence[str]], *, batch_size: int = 16
) -> list[list[float]]:
    """Sequence log-prob of every candidate continuation of every prompt.

    ``result[i][j]`` is the sum of the raw log-probs of ``encode_choice(tokenizer,
    choices[i][j])`` after ``encode_prompts(tokenizer, [prompts[i]])[0]``: the "choice" mode
    policy is ``softmax(result[i])``, and training on the chosen candidate with those same
    ids gives the same numbers. `batch_size` counts prompts (each with all its candidates).
    """
    if len(prompts) != len(choices):
        raise ValueError("prompts and choices must have the same length")
    prompt_ids = encode_prompts(tokenizer, prompts)
    candidate_ids = [[encode_choice(tokenizer, c) for c in candidates] for candidates in choices]
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
    scores: list[list[float]] = [[] for _ in prompts]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            values = candidate_logprobs(model, [prompt_ids[i] for i in rows], [candidate_ids[i] for i in rows])
            for i, value in zip(rows, values):
                scores[i] = value.tolist()
    return scores


def candidate_logprobs(
    model, prompt_ids_batch: Sequence[Sequence[int]], candidates_batch: Sequence[Sequence[Sequence[int]]]
) -> list[torch.Tensor]:
    """Summed raw log-prob of each candidate continuation of each prompt, prompt run once.

    Returns one 1-D tensor per prompt (one value per candidate), with gradients unless
    called under ``torch.inference_mode``. The prompt goes through the model once; its KV
    cache is then shared by all its candidates, which are short (action strings), so the
    cost is about one prompt forward instead of one per candidate. Equal, up to float
    rounding, to summing `sequence_logprobs` over each (prompt, candidate) pair.
    """
    if len(prompt_ids_batch) != len(candidates_batch):
        raise ValueError("prompt_ids_batch and candidates_batch must have the same length")
    if any(len(p) == 0 for p in prompt_ids_batch):
        raise ValueError("every prompt needs at least one token to condition the response on")
    if any(len(c) == 0 for candidates in candidates_batch for c in candidates):
        raise ValueError("every candidate needs at least one token")
    device = model.device
    input_ids, attention_mask = _left_pad(prompt_ids_batch, extra_columns=0, device=device)
    positions = (attention_mask.cumsum(1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    cache_arg = "cache" if "cache" in out else "past_key_values"
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


def _cache_rows(cache, index: torch.Tensor):
    """A new cache holding rows `index` of `cache` (which is left as it was)."""
    from transformers import DynamicCache

    return DynamicCache([(layer.keys[index], layer.values[index]) for layer in cache.layers])


def _left_pad(sequences, *, extra_columns: int, device):
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
