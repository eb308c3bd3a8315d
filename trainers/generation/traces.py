"""Markovian generation: drive many Delethink traces through any ``GenerationBackend`` at once.

A trace (``envs.markovian.MarkovianTrace``) knows its next chunk's prompt (query + carried
tokens, as token ids) and budget (C for chunk 1, C - carry after). ``generate_chunks`` gives
every live trace its next chunk in ONE ``backend.generate`` call, whatever chunk index each
trace is at: prompts go as ``PromptIds`` (token-exact: nothing is re-tokenised, and each
chunk starts from a fresh KV cache because each call prefills its prompts anew) and budgets
per prompt. A backend whose ``per_prompt_max_new_tokens`` is not true gets one call per
distinct budget (at most two: C and C - carry). ``run_traces`` repeats rounds until every
trace is over.

Each chunk is kept with its prompt ids, token ids, raw log-probs and finish reason, which is
what training needs (``trainers.rollouts.thinking`` turns every chunk into a ``TurnSample``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envs.markovian import Chunk, Codec, MarkovianConfig, MarkovianTrace
from trainers.generation.base import GenerationBackend, PromptIds, encode_prompts
from trainers.run.seeds import derive_seed

MARKOVIAN_ROUND = "markovian_round"
"""Seed stream of one round of chunks (mixed into the caller's seed with the round number)."""


def token_codec(tokenizer) -> Codec:
    """The policy's tokenizer as an ``envs.markovian.TokenCodec``.

    ``encode_prompt`` is ``encode_prompts`` (the chat template with the assistant generation
    prompt, the token layout every backend shares), ``encode`` adds no special tokens and
    ``decode`` drops them (the stop token a finished chunk ends with).
    """
    return Codec(
        encode_prompt=lambda prompt: encode_prompts(tokenizer, [prompt])[0],
        encode=lambda text: tokenizer(text, add_special_tokens=False).input_ids,
        decode=lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True),
        vocab_size=len(tokenizer),
    )


def new_traces(prompts: Sequence[Any], codec: Codec, config: MarkovianConfig) -> list[MarkovianTrace]:
    """One fresh trace per query (chat messages, raw text, or a TurnPrompt)."""
    return [MarkovianTrace.for_prompt(prompt, codec, config) for prompt in prompts]


def generate_chunks(
    backend: GenerationBackend,
    traces: Sequence[MarkovianTrace],
    *,
    seed: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
) -> int:
    """Generate the next chunk of every trace that is not over, in one backend call; return how many.

    Traces may be at different chunk indices. The chunks are recorded on the traces.
    """
    live = [trace for trace in traces if not trace.done]
    if not live:
        return 0
    prompts = [PromptIds(trace.prompt_ids()) for trace in live]
    budgets = [trace.budget() for trace in live]
    if getattr(backend, "per_prompt_max_new_tokens", False):
        calls = [list(range(len(live)))]
    else:
        calls = [[i for i, b in enumerate(budgets) if b == budget] for budget in sorted(set(budgets), reverse=True)]
    for call, rows in enumerate(calls):
        generations = backend.generate(
            [prompts[i] for i in rows],
            max_new_tokens=budgets[rows[0]] if len(calls) > 1 else budgets,
            temperature=temperature,
            top_p=top_p,
            seed=seed if len(calls) == 1 else derive_seed(seed, call),
            batch_size=batch_size,
        )
        for i, generation in zip(rows, generations):
            if list(generation.prompt_ids) != list(prompts[i].ids):
                raise RuntimeError("the backend changed a token-id prompt; Markovian carryover would not be token-exact")
            live[i].add(Chunk(generation.response_ids, generation.finish_reason, generation.logprobs))
    return len(live)


def run_traces(
    backend: GenerationBackend,
    traces: Sequence[MarkovianTrace],
    *,
    seed: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
) -> int:
    """Generate until every trace is over; round r samples with ``derive_seed(seed, MARKOVIAN_ROUND, r)``.

    Returns the number of rounds (at most the traces' iteration cap).
    """
    rounds = 0
    while any(not trace.done for trace in traces):
        generate_chunks(
            backend,
            traces,
            seed=derive_seed(seed, MARKOVIAN_ROUND, rounds),
            temperature=temperature,
            top_p=top_p,
            batch_size=batch_size,
        )
        rounds += 1
    return rounds
