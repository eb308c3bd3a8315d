"""Generation backend on the tiny random model: determinism, stopping, log-prob consistency."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from trainers.generation import (
    TransformersBackend,
    default_stop_token_ids,
    encode_choice,
    encode_prompts,
    generate,
    score_choices,
    sequence_logprobs,
)
from trainers.models import load_model

# Prompts of different lengths, so every batch has left padding.
PROMPTS = [
    [{"role": "user", "content": "Your card is " + "JQK"[i % 3] + "." * i}]
    for i in range(6)
]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random", seed=0)


def recompute(model, generations):
    with torch.inference_mode():
        return sequence_logprobs(
            model,
            [g.prompt_ids for g in generations],
            [g.response_ids for g in generations],
        )


def test_same_seed_same_outputs_other_seed_other_outputs(tiny):
    model, tokenizer = tiny
    first = generate(model, tokenizer, PROMPTS, max_new_tokens=12, seed=7, batch_size=4)
    again = generate(model, tokenizer, PROMPTS, max_new_tokens=12, seed=7, batch_size=4)
    other = generate(model, tokenizer, PROMPTS, max_new_tokens=12, seed=8, batch_size=4)
    assert [g.response_ids for g in first] == [g.response_ids for g in again]
    assert [g.logprobs for g in first] == [g.logprobs for g in again]
    assert [g.response_ids for g in first] != [g.response_ids for g in other]


def test_sampling_leaves_the_global_rng_alone(tiny):
    model, tokenizer = tiny
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    generate(model, tokenizer, PROMPTS[:2], max_new_tokens=4, seed=1)
    assert torch.equal(torch.rand(2), expected)


def test_chat_prompts_use_the_template_and_strings_are_raw(tiny):
    model, tokenizer = tiny
    chat, raw = generate(
        model, tokenizer, [PROMPTS[0], "plain text"], max_new_tokens=2, seed=0
    )
    rendered = tokenizer.apply_chat_template(
        PROMPTS[0], add_generation_prompt=True, tokenize=False
    )
    assert tokenizer.decode(chat.prompt_ids) == rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(raw.prompt_ids) == "plain text"
    assert encode_prompts(tokenizer, [PROMPTS[0]]) == [chat.prompt_ids]


def test_logprobs_match_recomputed_sequence_logprobs(tiny):
    model, tokenizer = tiny
    generations = generate(
        model, tokenizer, PROMPTS, max_new_tokens=16, seed=3, batch_size=4
    )
    for generation, logprobs in zip(generations, recompute(model, generations)):
        assert len(generation.logprobs) == len(generation.response_ids)
        assert torch.allclose(torch.tensor(generation.logprobs), logprobs, atol=1e-4)


def test_logprobs_are_raw_model_logprobs_whatever_the_temperature_and_top_p(tiny):
    model, tokenizer = tiny
    generations = generate(
        model, tokenizer, PROMPTS, max_new_tokens=8, temperature=0.5, top_p=0.9, seed=3
    )
    for generation, logprobs in zip(generations, recompute(model, generations)):
        assert torch.allclose(torch.tensor(generation.logprobs), logprobs, atol=1e-4)


def test_greedy_picks_the_argmax_and_ignores_batching(tiny):
    model, tokenizer = tiny
    greedy = generate(
        model,
        tokenizer,
        PROMPTS,
        max_new_tokens=10,
        temperature=0,
        seed=0,
        batch_size=6,
    )
    one_by_one = generate(
        model,
        tokenizer,
        PROMPTS,
        max_new_tokens=10,
        temperature=0,
        seed=1,
        batch_size=1,
    )
    assert [g.response_ids for g in greedy] == [g.response_ids for g in one_by_one]
    for generation in greedy:
        ids = torch.tensor([generation.prompt_ids + generation.response_ids])
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0]
        prompt_length = len(generation.prompt_ids)
        predicted = logits[prompt_length - 1 : -1].argmax(dim=-1)
        assert predicted.tolist() == generation.response_ids
        best = (
            torch.log_softmax(logits[prompt_length - 1 : -1], dim=-1).max(dim=-1).values
        )
        assert torch.allclose(torch.tensor(generation.logprobs), best, atol=1e-4)


def test_a_tiny_top_p_is_greedy(tiny):
    model, tokenizer = tiny
    greedy = generate(
        model, tokenizer, PROMPTS, max_new_tokens=6, temperature=0, seed=0
    )
    nucleus = generate(model, tokenizer, PROMPTS, max_new_tokens=6, top_p=1e-6, seed=0)
    assert [g.response_ids for g in greedy] == [g.response_ids for g in nucleus]


def test_default_stop_tokens_include_eos_and_end_of_turn(tiny):
    model, tokenizer = tiny
    stops = default_stop_token_ids(model, tokenizer)
    assert tokenizer.eos_token_id in stops
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stops


def test_each_response_ends_at_its_first_stop_token(tiny):
    model, tokenizer = tiny
    greedy = generate(
        model, tokenizer, PROMPTS, max_new_tokens=10, temperature=0, seed=0
    )
    stop = greedy[0].response_ids[
        2
    ]  # a token greedy decoding emits third for the first prompt
    stopped = generate(
        model,
        tokenizer,
        PROMPTS,
        max_new_tokens=10,
        temperature=0,
        seed=0,
        stop_token_ids=[stop],
    )
    assert (
        stopped[0].response_ids
        == greedy[0].response_ids[: greedy[0].response_ids.index(stop) + 1]
    )
    for full, cut in zip(greedy, stopped):
        if stop in full.response_ids:
            assert cut.finish_reason == "stop"
            assert (
                cut.response_ids
                == full.response_ids[: full.response_ids.index(stop) + 1]
            )
            assert cut.text == tokenizer.decode(
                cut.response_ids[:-1], skip_special_tokens=True
            )
        else:
            assert cut.finish_reason == "length"
            assert cut.response_ids == full.response_ids


def test_sampled_eos_stops_a_row_and_the_others_run_to_the_limit(tiny):
    model, tokenizer = tiny
    stops = set(default_stop_token_ids(model, tokenizer))
    generations = generate(
        model, tokenizer, PROMPTS * 3, max_new_tokens=40, seed=0, batch_size=6
    )
    reasons = {g.finish_reason for g in generations}
    assert reasons == {"stop", "length"}  # this seed exercises both
    for generation in generations:
        body = (
            generation.response_ids[:-1]
            if generation.finish_reason == "stop"
            else generation.response_ids
        )
        assert not stops.intersection(body)
        if generation.finish_reason == "stop":
            assert generation.response_ids[-1] in stops
        else:
            assert len(generation.response_ids) == 40
    for generation, logprobs in zip(generations, recompute(model, generations)):
        assert torch.allclose(torch.tensor(generation.logprobs), logprobs, atol=1e-4)


def test_sequence_logprobs_ignore_padding_and_carry_gradients(tiny):
    model, _ = tiny
    prompts, responses = [[5, 6, 7], [8] * 9], [[9, 10], [11, 12, 13, 14, 15]]
    batched = sequence_logprobs(model, prompts, responses)
    alone = sequence_logprobs(model, prompts[:1], responses[:1])[0]
    assert [len(x) for x in batched] == [2, 5]
    assert torch.allclose(batched[0], alone, atol=1e-5)
    assert batched[0].requires_grad
    batched[1].sum().backward()
    assert model.lm_head.weight.grad is not None
    model.zero_grad()


def test_score_choices_sums_sequence_logprobs_of_the_choice_ids(tiny):
    model, tokenizer = tiny
    choices = [["[check]", "[bet]"], ["[fold]", "[call]", "[raise]"]]
    scores = score_choices(model, tokenizer, PROMPTS[:2], choices, batch_size=2)
    prompt_ids = encode_prompts(tokenizer, PROMPTS[:2])
    for i, candidates in enumerate(choices):
        response_ids = [encode_choice(tokenizer, c) for c in candidates]
        with torch.inference_mode():
            expected = sequence_logprobs(
                model, [prompt_ids[i]] * len(candidates), response_ids
            )
        assert scores[i] == pytest.approx([float(e.sum()) for e in expected], abs=1e-4)


def test_backend_delegates_to_the_functions(tiny):
    model, tokenizer = tiny
    backend = TransformersBackend(model, tokenizer)
    direct = generate(model, tokenizer, PROMPTS[:3], max_new_tokens=5, seed=4)
    assert backend.generate(PROMPTS[:3], max_new_tokens=5, seed=4) == direct
    assert backend.score_choices(PROMPTS[:1], [["a", "b"]]) == score_choices(
        model, tokenizer, PROMPTS[:1], [["a", "b"]]
    )


@pytest.mark.parametrize(
    "kwargs", [{"max_new_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}]
)
def test_invalid_sampling_parameters_are_rejected(tiny, kwargs):
    model, tokenizer = tiny
    with pytest.raises(ValueError):
        generate(
            model, tokenizer, PROMPTS[:1], **{"max_new_tokens": 4, "seed": 0, **kwargs}
        )
