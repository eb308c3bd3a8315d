"""Markovian thinking as an environment: prompt reconstruction, the cap, stitching, bounds, the checker.

The character codec makes hand examples easy: one token per character, so a prompt is
checked character by character (= token by token).
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from envs.markovian import (
    NO_ANSWER_TEXT,
    Chunk,
    MarkovianConfig,
    MarkovianTaskEnv,
    MarkovianTrace,
    char_codec,
    check_markovian,
    make_markovian,
)
from envs.sat import CORRECT_REWARD, NO_ANSWER_REWARD

CODEC = char_codec()


def ids(text):
    return [ord(c) for c in text]


def text(token_ids):
    return "".join(chr(i) for i in token_ids)


def trace(chunk, carry, head, max_chunks, query="Q>"):
    return MarkovianTrace.for_prompt(query, CODEC, MarkovianConfig(chunk, carry, head, max_chunks))


def test_prompts_are_query_head_and_tail_token_by_token():
    t = trace(chunk=8, carry=5, head=2, max_chunks=4)  # tail = 3, later chunks generate 3
    assert text(t.prompt_ids()) == "Q>" and t.budget() == 8
    t.add(Chunk(ids("abcdefgh"), "length"))
    # head "ab" (first 2 of chunk 1) + tail "fgh" (last 3 generated)
    assert text(t.prompt_ids()) == "Q>abfgh" and t.budget() == 3
    t.add(Chunk(ids("ijk"), "length"))
    assert text(t.prompt_ids()) == "Q>abijk" and t.budget() == 3
    t.add(Chunk(ids("lm"), "stop"))
    assert t.done and t.finished and not t.cap_hit
    assert [text(c.prompt_ids) for c in t.chunks] == ["Q>", "Q>abfgh", "Q>abijk"]
    assert t.text() == "abcdefghijklm"  # the stitched trace: every chunk's output once
    assert t.stats() == {"thinking_tokens": 13, "chunks": 3, "largest_context": 10, "cap_hit": False, "finished": True}


def test_the_tail_spans_chunks_when_later_chunks_are_shorter_than_it():
    t = trace(chunk=6, carry=4, head=1, max_chunks=5)  # tail 3, later chunks generate 2
    t.add(Chunk(ids("abcdef"), "length"))
    assert text(t.carry_ids()) == "a" + "def"
    t.add(Chunk(ids("gh"), "length"))
    assert text(t.carry_ids()) == "a" + "fgh"  # "f" from chunk 1, "gh" from chunk 2


@pytest.mark.parametrize(
    "carry, head, expected",
    [(3, 3, "abc"), (3, 0, "fgh"), (0, 0, "")],
    ids=["head only", "tail only", "no carryover"],
)
def test_boundary_carryovers(carry, head, expected):
    t = trace(chunk=8, carry=carry, head=head, max_chunks=3)
    t.add(Chunk(ids("abcdefgh"), "length"))
    assert text(t.prompt_ids()) == "Q>" + expected
    assert t.budget() == 8 - carry


def test_a_short_first_chunk_is_never_carried_twice():
    t = trace(chunk=8, carry=6, head=4, max_chunks=3)
    t.add(Chunk(ids("ab"), "length"))  # an engine cut the chunk short
    assert text(t.carry_ids()) == "ab"
    t.add(Chunk(ids("c"), "length"))
    assert text(t.carry_ids()) == "ab" + "c"


def test_iteration_cap_ends_the_trace_and_refuses_more_chunks():
    t = trace(chunk=4, carry=2, head=1, max_chunks=3)
    for piece in ("abcd", "ef", "gh"):
        assert not t.done
        t.add(Chunk(ids(piece), "length"))
    assert t.done and t.cap_hit and not t.finished
    assert t.answer_text() == NO_ANSWER_TEXT
    assert t.thinking_tokens == 4 + 2 + 2 == t.config.thinking_budget
    with pytest.raises(ValueError, match="over"):
        t.add(Chunk(ids("i"), "stop"))


def test_a_chunk_over_its_budget_is_an_error():
    t = trace(chunk=4, carry=2, head=1, max_chunks=3)
    t.add(Chunk(ids("abcd"), "length"))
    with pytest.raises(ValueError, match="budget is 2"):
        t.add(Chunk(ids("xyz"), "length"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"chunk": 0}, "chunk"),
        ({"chunk": 8, "carry": 8}, "carry"),
        ({"carry": 10, "head": 11}, "head"),
        ({"max_chunks": 0}, "max_chunks"),
        ({"chunk": 8.0}, "integer"),
    ],
)
def test_bad_configs_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MarkovianConfig(**kwargs).validate()


def test_for_length_picks_the_fewest_chunks():
    assert [MarkovianConfig.for_length(n).max_chunks for n in (100, 512, 513, 1024, 2048, 4096)] == [1, 1, 2, 3, 7, 15]
    assert MarkovianConfig.for_length(4096).thinking_budget == 4096
    assert MarkovianConfig().thinking_budget == 512 + 4 * 256


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    chunk=st.integers(1, 40),
    carry_fraction=st.floats(0, 0.99),
    head_fraction=st.floats(0, 1),
    max_chunks=st.integers(1, 6),
    query=st.integers(0, 30),
    plan=st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=8),
)
def test_no_chunk_ever_exceeds_the_context_bound(chunk, carry_fraction, head_fraction, max_chunks, query, plan):
    carry = min(chunk - 1, int(carry_fraction * chunk))
    head = int(head_fraction * carry)
    config = MarkovianConfig(chunk, carry, head, max_chunks)
    t = MarkovianTrace(tuple(range(query)), config, CODEC)
    next_id = 1000
    for fraction, stop in plan:
        if t.done:
            break
        size = round(fraction * t.budget())
        record = t.add(Chunk(range(next_id, next_id + size), "stop" if stop else "length"))
        next_id += size
        assert len(record.prompt_ids) <= query + carry
        assert record.context <= config.context_bound(query)
        # the carryover is exactly: the first `head` generated tokens, then the last `tail` others
        generated = t.generated
        first = min(head, len(t.chunks[0].token_ids))
        expected = generated[:first] + generated[max(first, len(generated) - config.tail):]
        assert t.carry_ids() == expected
    assert t.largest_context <= config.context_bound(query)
    assert len(t.chunks) <= max_chunks
    assert t.thinking_tokens <= config.thinking_budget


# -- the task env -------------------------------------------------------------------------


def sat_env(**config):
    return make_markovian("sat", codec=CODEC, **{"chunk": 16, "carry": 8, "head": 2, "max_chunks": 3, **config})


def test_an_answer_split_over_a_chunk_boundary_still_parses():
    env = sat_env()
    observation, info = env.reset(seed=3)
    solution = env.task_env.instance.solution
    assert observation["max_new_tokens"] == 16 and observation["chunk_index"] == 0
    assert list(observation["prompt_ids"]) == CODEC.encode_prompt(env.messages())
    first = "Let me see \\boxe"  # 16 characters, the chunk ends inside "\boxed"
    assert len(first) == 16
    observation, reward, terminated, truncated, info = env.step({"token_ids": tuple(ids(first)), "finish_reason": 1})
    assert not terminated and reward == 0.0 and observation["max_new_tokens"] == 8
    observation, reward, terminated, truncated, info = env.step(Chunk(ids("d{" + solution + "}"), "stop"))
    assert terminated and not truncated
    assert "\\boxed{" + solution + "}" in info["trace_text"]
    assert reward == CORRECT_REWARD and info["correct"]
    assert info["chunks"] == 2 and not info["cap_hit"] and info["thinking_tokens"] == 16 + len(solution) + 3


def test_a_capped_trace_gets_the_no_answer_outcome_even_with_an_answer_in_it():
    env = sat_env()
    env.reset(seed=3)
    solution = env.task_env.instance.solution
    answer = "\\boxed{" + solution + "}"
    env.step(Chunk(ids(answer.ljust(16)), "length"))
    env.step(Chunk(ids(" " * 8), "length"))
    _, reward, terminated, _, info = env.step(Chunk(ids(" " * 8), "length"))
    assert terminated and info["cap_hit"] and info["chunks"] == 3
    assert reward == NO_ANSWER_REWARD and info["answer"] is None


def test_raw_text_is_a_chunk_the_model_ended():
    env = sat_env()
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("no idea")
    assert terminated and reward == NO_ANSWER_REWARD and info["chunks"] == 1 and info["finished"]


def test_make_markovian_needs_a_codec_and_a_task():
    with pytest.raises(ValueError, match="codec"):
        make_markovian("sat", codec=None)
    with pytest.raises(ValueError, match="game env"):
        make_markovian("kuhn_poker", codec=CODEC)
    with pytest.raises(ValueError, match="carry"):
        make_markovian("sat", codec=CODEC, chunk=8, carry=9)
    assert isinstance(envs.make_markovian("sat", codec=CODEC, n=3, k=4, l=4), MarkovianTaskEnv)


def test_a_game_turn_is_a_trace_over_its_prompt():
    env = envs.make("kuhn_poker", mode="think")
    env.reset(seed=0)
    prompt = env.turn_prompt()
    t = MarkovianTrace.for_prompt(prompt, CODEC, MarkovianConfig(8, 4, 1, 2))
    assert t.query_ids == tuple(CODEC.encode_prompt(prompt.messages()))
    t.add(Chunk(ids("I will \\"), "length"))
    t.add(Chunk(ids("bo"), "length"))
    assert t.cap_hit and t.answer_text() == NO_ANSWER_TEXT
    finished = MarkovianTrace.for_prompt(prompt, CODEC, MarkovianConfig(8, 4, 1, 2))
    finished.add(Chunk(ids("think..."), "length"))
    finished.add(Chunk(ids("[be"), "stop"))
    assert finished.answer_text() == "think...[be"
    assert prompt.parse(finished.answer_text()).error == "unparseable"


def test_the_checker_covers_the_markovian_env():
    report = check_markovian("sat", fuzz_examples=25)
    assert report.passed == ["gymnasium.check_env", "chunk fuzzing"]
    assert report.fuzz_examples > 0


def test_make_and_check_take_thinking_markovian():
    env = envs.make("sat", thinking="markovian", codec=char_codec(), chunk=64, carry=32, head=8, max_chunks=2)
    assert isinstance(env, MarkovianTaskEnv)
    assert env.config.chunk == 64 and env.config.max_chunks == 2
    assert envs.check("sat", thinking="markovian", fuzz_examples=5).passed == ["gymnasium.check_env", "chunk fuzzing"]
    with pytest.raises(ValueError, match="plain, markovian"):
        envs.make("sat", thinking="deep")
