"""Markovian generation on the tiny random model: token-exact prompts, per-prompt budgets, batching.

tiny-random's tokenizer is byte-level (one token per character), so carried tokens are
checked against the text they decode to.
"""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from envs.markovian import Chunk, MarkovianConfig, MarkovianTrace
from trainers.generation import TransformersBackend, encode_prompts, generate
from trainers.generation.base import PromptIds
from trainers.generation.traces import generate_chunks, new_traces, run_traces, token_codec
from trainers.models import load_model

QUERIES = [[{"role": "user", "content": f"Problem {i}: " + "think " * i}] for i in range(4)]
CONFIG = MarkovianConfig(chunk=12, carry=6, head=2, max_chunks=4)


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random", seed=0)


class GroupedBackend:
    """A backend with one budget per call (as an engine without per-prompt budgets)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def generate(self, prompts, *, max_new_tokens, **kwargs):
        assert isinstance(max_new_tokens, int)
        self.calls.append((len(prompts), max_new_tokens))
        return self.inner.generate(prompts, max_new_tokens=max_new_tokens, **kwargs)


def test_prompt_ids_are_used_as_they_are(tiny):
    model, tokenizer = tiny
    chat_ids = encode_prompts(tokenizer, [QUERIES[1]])[0]
    assert encode_prompts(tokenizer, [PromptIds(chat_ids)]) == [chat_ids]
    by_ids, by_chat = generate(model, tokenizer, [PromptIds(chat_ids), QUERIES[1]], max_new_tokens=5, temperature=0, seed=0)
    assert by_ids.prompt_ids == by_chat.prompt_ids == chat_ids
    assert by_ids.response_ids == by_chat.response_ids


def test_per_prompt_budgets_match_separate_calls(tiny):
    model, tokenizer = tiny
    backend = TransformersBackend(model, tokenizer, stop_token_ids=[])
    together = backend.generate(QUERIES[:3], max_new_tokens=[3, 9, 5], temperature=0, seed=0, batch_size=3)
    assert [len(g.response_ids) for g in together] == [3, 9, 5]
    assert {g.finish_reason for g in together} == {"length"}
    for query, budget, generation in zip(QUERIES, [3, 9, 5], together):
        alone = backend.generate([query], max_new_tokens=budget, temperature=0, seed=0)[0]
        assert alone.response_ids == generation.response_ids
        assert torch.allclose(torch.tensor(alone.logprobs), torch.tensor(generation.logprobs), atol=1e-4)
    with pytest.raises(ValueError, match="2 budgets for 3 prompts"):
        backend.generate(QUERIES[:3], max_new_tokens=[3, 4], seed=0)


def test_carryover_is_token_exact_in_the_policy_tokenizer(tiny):
    model, tokenizer = tiny
    codec = token_codec(tokenizer)
    backend = TransformersBackend(model, tokenizer, stop_token_ids=[])
    trace = MarkovianTrace.for_prompt(QUERIES[2], codec, CONFIG)
    generate_chunks(backend, [trace], seed=1)
    generate_chunks(backend, [trace], seed=2)
    first, second = trace.chunks
    query = encode_prompts(tokenizer, [QUERIES[2]])[0]
    assert list(second.prompt_ids) == query + list(first.token_ids[:2]) + list(first.token_ids[-4:])
    assert len(trace.carry_ids()) == 6


def test_a_hand_example_in_the_byte_level_tokenizer(tiny):
    _, tokenizer = tiny
    codec = token_codec(tokenizer)
    trace = MarkovianTrace.for_prompt(QUERIES[0], codec, CONFIG)
    query_text = tokenizer.decode(trace.query_ids)
    assert query_text.endswith("<|im_start|>assistant\n")
    trace.add("abcdefghijkl")  # raw text is read as a chunk the model ended: "stop"
    assert trace.finished and trace.text() == "abcdefghijkl"
    trace = MarkovianTrace.for_prompt(QUERIES[0], codec, CONFIG)
    trace.add(Chunk(codec.encode("abcdefghijkl"), "length"))
    assert tokenizer.decode(trace.prompt_ids()) == query_text + "ab" + "ijkl"
    trace.add(Chunk(codec.encode("mnopqr"), "length"))
    assert tokenizer.decode(trace.prompt_ids()) == query_text + "ab" + "opqr"
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    trace.add(Chunk(codec.encode("\\box") + [eos], "stop"))
    assert trace.text() == "abcdefghijklmnopqr\\box"  # the stop token is not text
    assert trace.thinking_tokens == 12 + 6 + 5


def test_traces_at_mixed_chunk_indices_batch_like_each_alone(tiny):
    model, tokenizer = tiny
    codec = token_codec(tokenizer)
    backend = TransformersBackend(model, tokenizer, stop_token_ids=[])

    def staged():
        traces = new_traces(QUERIES, codec, CONFIG)
        for trace, ahead in zip(traces, [2, 1, 0, 3]):  # chunk indices 2, 1, 0, 3
            for _ in range(ahead):
                generate_chunks(backend, [trace], seed=0, temperature=0)
        return traces

    batched = staged()
    assert [len(t.chunks) for t in batched] == [2, 1, 0, 3]
    assert generate_chunks(backend, batched, seed=0, temperature=0, batch_size=4) == 4
    alone = staged()
    for trace in alone:
        generate_chunks(backend, [trace], seed=0, temperature=0)
    grouped_backend = GroupedBackend(backend)
    grouped = staged()
    generate_chunks(grouped_backend, grouped, seed=0, temperature=0, batch_size=4)
    assert sorted(grouped_backend.calls) == [(1, 12), (3, 6)]  # one call per distinct budget
    for together, single, by_budget in zip(batched, alone, grouped):
        assert together.generated == single.generated == by_budget.generated
        assert [c.prompt_ids for c in together.chunks] == [c.prompt_ids for c in single.chunks]
        for a, b in zip(together.chunks, single.chunks):
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)


def test_run_traces_ends_every_trace_and_is_seeded(tiny):
    model, tokenizer = tiny
    codec = token_codec(tokenizer)
    backend = TransformersBackend(model, tokenizer)
    first = new_traces(QUERIES, codec, CONFIG)
    rounds = run_traces(backend, first, seed=5, batch_size=4)
    again = new_traces(QUERIES, codec, CONFIG)
    run_traces(backend, again, seed=5, batch_size=4)
    assert 1 <= rounds <= CONFIG.max_chunks
    assert all(t.done for t in first)
    assert [t.generated for t in first] == [t.generated for t in again]
    for trace in first:
        assert trace.largest_context <= CONFIG.context_bound(len(trace.query_ids))
        for chunk in trace.chunks[:-1]:
            assert chunk.finish_reason == "length"
        assert trace.finished == (trace.chunks[-1].finish_reason == "stop")
        if trace.finished:  # a finished chunk ends with its stop token, which the text leaves out
            assert trace.chunks[-1].token_ids[-1] in (tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(["<|endoftext|>"]))
            assert "<|im_end|>" not in trace.text()
