"""``GenerationBackend`` on an in-process transformers model, with a hand-written decoding loop.

Batches are left-padded prompts followed by right-padded responses, with explicit position
ids so padding never shifts positions. Identical prompts share one prefill; a row leaves
the batch (KV cache included) as soon as it stops or reaches its own budget (budgets may
differ per prompt: ``per_prompt_max_new_tokens``). See ``trainers.generation.base`` for the
log-prob convention and the token layout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from trainers.generation.base import (
    Generation,
    Prompt,
    default_stop_token_ids,
    encode_choice,
    encode_prompts,
    prompt_budgets,
)
from trainers.generation.logprobs import (
    MIN_SHARED_PREFIX, PrefixRun, PrefixView, candidate_logprobs, candidate_logprobs_after, common_prefix_length,
    extended_prefix, left_pad, prefix_groups, prefix_run, run_prompts, truncated_prefix,
)
from trainers.generation.sampling import check_sampling_arguments, top_p_filter

class TransformersBackend:
    """``GenerationBackend`` over an in-process transformers model.

    It holds references, not copies: the trainer updates ``model`` in place and the next
    rollout samples from the updated weights. ``stop_token_ids`` replaces the default stop
    tokens (``default_stop_token_ids``); ``[]`` never stops early, which cost benchmarks use
    to force every response to its full length.
    """

    per_prompt_max_new_tokens = True
    """``generate`` accepts one budget per prompt (see ``trainers.generation.base``)."""

    def __init__(self, model, tokenizer, *, stop_token_ids: Sequence[int] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.stop_token_ids = None if stop_token_ids is None else list(stop_token_ids)
        self._session_prefix: SessionPrefix | None = None  # set within `reusing_prefixes`

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
            stop_token_ids=self.stop_token_ids,
        )

    def score_choices(self, prompts, choices, *, batch_size=16):
        return score_choices(
            self.model, self.tokenizer, prompts, choices, batch_size=batch_size
        )

    def choice_session(self, prompts, *, batch_size=16) -> "ChoiceSession":
        """The prompts run once, for rounds of `score_choices` behind them (answers in parts)."""
        return ChoiceSession(self.model, self.tokenizer, prompts, batch_size=batch_size, session_prefix=self._session_prefix)

    @contextlib.contextmanager
    def reusing_prefixes(self):
        """A block within which the caller leaves the weights as they are (a rollout's or an
        evaluation's games): each choice session in it starts from the prefix the last one
        ran (`SessionPrefix`). Keys and values computed with other weights are never reused:
        the block starts with none, and they are dropped when it ends."""
        outer = self._session_prefix
        self._session_prefix = outer or SessionPrefix()
        try:
            yield
        finally:
            self._session_prefix = outer


class SessionPrefix:
    """The last choice session's common prefix, kept for the next session of the same block.

    A rollout opens one session per round of turns (a negotiation step about ten), and
    every session's prompts start with the same chat template, rules and, for a chained
    turn, answer format and action patterns (some 145 tokens), which each session ran
    again: a forward of some 0.24 s on a 2-core CPU. Within a block whose weights do not
    change (`TransformersBackend.reusing_prefixes`: a rollout, an evaluation's games), a
    session starts from the part of the last session's prefix its own prompts share
    (`truncated_prefix`) and runs only what they share beyond it.
    """

    def __init__(self):
        self._tokens: tuple[int, ...] = ()
        self._run: PrefixRun | PrefixView | None = None

    def run(self, model, ids: Sequence[Sequence[int]]) -> "PrefixRun | PrefixView | None":
        """The prefix every prompt of `ids` shares, run (or reused) once for the session."""
        run = None
        if self._run is not None:
            reach = min(common_prefix_length([self._tokens, *ids]), min(len(p) for p in ids) - 1)
            if reach >= MIN_SHARED_PREFIX:
                run = extended_prefix(model, truncated_prefix(self._run, reach), ids)
        if run is None:
            run = prefix_run(model, ids)
        if run is not None:
            self._tokens, self._run = tuple(ids[0][:run.length]), run
        return run


SESSION_BATCH_COST = 160
"""Tokens a session batch costs beyond its own (`prefix_groups`' ``pass_cost``): a forward
when the session starts and one each scoring round (about four for a negotiation offer),
each about 55 ms on a 2-core CPU whatever its size, as long as some 35 tokens take."""


class ChoiceSession:
    """Prompts encoded and run once (in batches of `batch_size`); ``score_choices(indices,
    choices)`` then scores candidates after prompts ``indices`` as the backend's
    `score_choices` would, paying only the candidates' tokens. A chained answer (a
    negotiation offer, a SAT assignment) asks its prompt once per part: without the
    session every part would run the whole prompt again.

    The prompts' common prefix (the chat template, a game's rules) is run once for all, or
    continued from the last session's (`SessionPrefix`, the backend's sessions);
    then the prompts go in batches of prompts that share long prefixes beyond it (one round
    of a game's prompts agree up to a pending offer's amounts), each batch's own common
    prefix run once and its prompts padded to the longest (`prefix_groups`: the batches
    that put the fewest tokens through the model).
    """

    def __init__(self, model, tokenizer, prompts, *, batch_size: int = 16, session_prefix: "SessionPrefix | None" = None):
        self.model, self.tokenizer = model, tokenizer
        ids = encode_prompts(tokenizer, prompts)
        self.count = len(ids)
        with torch.inference_mode():
            prefix = session_prefix.run(model, ids) if session_prefix else prefix_run(model, ids)
            batches = prefix_groups(ids, max_rows=batch_size, base=prefix.length if prefix else 0, pass_cost=SESSION_BATCH_COST)
            self.states = [
                run_prompts(model, batch_ids, prefix=extended_prefix(model, prefix, batch_ids) if prefix else None)
                for batch_ids in ([ids[i] for i in batch] for batch in batches)
            ]
        self.where = {i: (b, row) for b, batch in enumerate(batches) for row, i in enumerate(batch)}

    def score_choices(self, indices: Sequence[int], choices: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(indices) != len(choices):
            raise ValueError("indices and choices must have the same length")
        if any(not 0 <= i < self.count for i in indices):
            raise IndexError(f"prompt indices must be in [0, {self.count})")
        scores: list[list[float]] = [[] for _ in indices]
        by_batch: dict[int, list[int]] = {}
        for k, i in enumerate(indices):
            by_batch.setdefault(self.where[i][0], []).append(k)
        for batch, asked in by_batch.items():
            candidates = [[encode_choice(self.tokenizer, c) for c in choices[k]] for k in asked]
            values = candidate_logprobs_after(self.model, self.states[batch], [self.where[indices[k]][1] for k in asked], candidates)
            for k, value in zip(asked, values):
                scores[k] = value.tolist()
        return scores


def generate(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int | Sequence[int],
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
    finished rows cost no further compute. ``max_new_tokens`` is one budget for all prompts
    or one per prompt; a row that reaches its own budget leaves the batch the same way.
    """
    budgets = prompt_budgets(max_new_tokens, len(prompts))
    check_sampling_arguments(temperature, top_p)
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
                model, batch, [budgets[i] for i in rows], temperature, top_p, stops, generator
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
    model, prompt_ids, budgets, temperature, top_p, stops, generator
):
    """Decode one batch with a KV cache; return ``(response_ids, logprobs, stopped)`` per row.

    ``budgets[i]`` is row i's ``max_new_tokens``.
    """
    device = model.device
    max_new_tokens = max(budgets)
    limits = torch.tensor(budgets, dtype=torch.long, device=device)
    input_ids, attention_mask = left_pad(
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
    lengths = limits.clone()  # a row that never stops fills its budget
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
        # rows whose own budget is spent leave too (with equal budgets only at the last step)
        done = done | (limits[live] <= step + 1)
        if done.any():
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
    return torch.multinomial(top_p_filter(probs, top_p), 1, generator=generator)[:, 0]


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

