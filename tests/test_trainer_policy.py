"""LanguagePolicy on the tiny random model: choice sampling, distributions, dedupe, batching."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import envs
from trainers.evaluation.evaluate import decision_states
from trainers.generation import (
    TransformersBackend,
    candidate_logprobs,
    encode_choice,
    encode_prompts,
    generate,
    sequence_logprobs,
)
from trainers.models import load_model
from trainers.rollouts.policy import LanguagePolicy, direct_answer


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_model("tiny-random", seed=0)


@pytest.fixture(scope="module")
def kuhn_prompts():
    """The choice-mode prompts of Kuhn Poker's 12 information states (2 legal actions each)."""
    env = envs.make("kuhn_poker", mode="choice")
    return [env.prompt_for(state) for _, state in decision_states(env.game)]


@pytest.fixture(scope="module")
def ttt_prompts():
    """Tic-tac-toe prompts with 9, 8 and 7 legal actions (candidates of different counts)."""
    env = envs.make("tic_tac_toe", mode="choice")
    env.reset(seed=0)
    prompts = [env.turn_prompt()]
    for action in (4, 0):
        env.step(action)
        prompts.append(env.turn_prompt())
    return prompts


class CountingBackend:
    """A backend that records how many prompts each scoring call received."""

    def __init__(self, inner):
        self.inner = inner
        self.scored = []

    def generate(self, *args, **kwargs):
        return self.inner.generate(*args, **kwargs)

    def score_choices(self, prompts, choices, **kwargs):
        self.scored.append(len(prompts))
        return self.inner.score_choices(prompts, choices, **kwargs)


def choice_policy(tiny, **kwargs):
    model, tokenizer = tiny
    return LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode="choice", **kwargs)


def log_softmax(values):
    values = np.asarray(values, dtype=np.float64)
    top = values.max()
    return values - top - math.log(np.exp(values - top).sum())


def test_choice_mode_answers_are_legal_and_carry_their_log_prob(tiny, kuhn_prompts, ttt_prompts):
    model, tokenizer = tiny
    policy = choice_policy(tiny)
    prompts = kuhn_prompts + ttt_prompts
    decisions = policy.act(prompts, seed=3)
    scores = TransformersBackend(model, tokenizer).score_choices(
        [p.messages() for p in prompts], [list(p.choices) for p in prompts]
    )
    assert len(decisions) == len(prompts)
    for prompt, decision, candidate_scores in zip(prompts, decisions, scores):
        assert decision.text in prompt.choices
        assert prompt.choices[decision.choice_index] == decision.text
        assert prompt.parse(decision.text).action == prompt.action_ids[decision.choice_index]
        assert decision.prompt_ids == encode_prompts(tokenizer, [prompt.messages()])[0]
        assert decision.response_ids == encode_choice(tokenizer, decision.text)
        assert decision.choice_ids == [encode_choice(tokenizer, c) for c in prompt.choices]
        assert len(decision.old_logprobs) == 1
        expected = log_softmax(candidate_scores)[decision.choice_index]
        assert decision.old_logprobs[0] == pytest.approx(expected, abs=1e-5)
        assert decision.old_logprobs[0] < 0


def test_same_seed_same_choices_other_seed_other_choices(tiny, kuhn_prompts):
    policy = choice_policy(tiny)
    prompts = kuhn_prompts * 4  # 48 decisions
    first = [d.choice_index for d in policy.act(prompts, seed=11)]
    again = [d.choice_index for d in policy.act(prompts, seed=11)]
    other = [d.choice_index for d in policy.act(prompts, seed=12)]
    assert first == again
    assert first != other
    assert set(first) == {0, 1}  # it samples, it does not always take the same action


def test_temperature_zero_picks_the_argmax(tiny, kuhn_prompts, ttt_prompts):
    policy = choice_policy(tiny, temperature=1.0)
    prompts = kuhn_prompts + ttt_prompts
    scores = policy.backend.score_choices([p.messages() for p in prompts], [list(p.choices) for p in prompts])
    for seed in (0, 1):
        decisions = policy.act(prompts, seed=seed, temperature=0)
        assert [d.choice_index for d in decisions] == [int(np.argmax(s)) for s in scores]
    # the policy's own default temperature 0 does the same
    greedy = choice_policy(tiny, temperature=0.0)
    assert [d.choice_index for d in greedy.act(prompts, seed=5)] == [int(np.argmax(s)) for s in scores]


def test_action_distributions_match_the_choice_softmax(tiny, kuhn_prompts, ttt_prompts):
    policy = choice_policy(tiny)
    prompts = kuhn_prompts + ttt_prompts
    distributions = policy.action_distributions(prompts)
    scores = policy.backend.score_choices([p.messages() for p in prompts], [list(p.choices) for p in prompts])
    for prompt, distribution, candidate_scores in zip(prompts, distributions, scores):
        assert list(distribution) == list(prompt.action_ids)
        assert sum(distribution.values()) == pytest.approx(1.0, abs=1e-9)
        expected = np.exp(log_softmax(candidate_scores))
        assert list(distribution.values()) == pytest.approx(expected.tolist(), abs=1e-9)
    # sampling follows that distribution: 400 draws of one state land near its probabilities
    prompt = kuhn_prompts[0]
    picks = [d.choice_index for d in policy.act([prompt] * 400, seed=0)]
    first_probability = list(distributions[0].values())[0]
    assert picks.count(0) / 400 == pytest.approx(first_probability, abs=0.1)


def test_direct_mode_distribution_scores_the_canonical_answers(tiny):
    model, tokenizer = tiny
    env = envs.make("kuhn_poker", mode="direct")
    prompts = [env.prompt_for(state) for _, state in decision_states(env.game)][:3]
    policy = LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode="direct")
    distributions = policy.action_distributions(prompts)
    scores = policy.backend.score_choices(
        [p.messages() for p in prompts], [[direct_answer(c) for c in p.choices] for p in prompts]
    )
    for distribution, candidate_scores in zip(distributions, scores):
        assert list(distribution.values()) == pytest.approx(np.exp(log_softmax(candidate_scores)).tolist(), abs=1e-9)
    think = LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode="think")
    with pytest.raises(ValueError, match="think"):
        think.action_distributions(prompts)


def test_duplicated_prompts_are_scored_once_with_the_same_numbers(tiny, kuhn_prompts, ttt_prompts):
    model, tokenizer = tiny
    counting = CountingBackend(TransformersBackend(model, tokenizer))
    policy = LanguagePolicy(counting, tokenizer, mode="choice")
    a, b, c = kuhn_prompts[0], kuhn_prompts[5], ttt_prompts[1]
    batch = [a, b, a, c, a, b]
    together = policy.action_distributions(batch)
    assert counting.scored == [3]  # three distinct prompts in the batch of six
    separate = {id(p): policy.action_distributions([p])[0] for p in (a, b, c)}
    for prompt, distribution in zip(batch, together):
        assert list(distribution) == list(separate[id(prompt)])
        assert list(distribution.values()) == pytest.approx(list(separate[id(prompt)].values()), abs=1e-6)
    assert together[0] == together[2] == together[4]  # literally the same numbers
    counting.scored.clear()
    decisions = policy.act(batch, seed=0, temperature=0)
    assert counting.scored == [3]
    assert decisions[0].prompt_ids == decisions[2].prompt_ids == decisions[4].prompt_ids
    assert decisions[0].old_logprobs == decisions[2].old_logprobs


def test_choice_mode_rejects_prompts_without_choices(tiny):
    policy = choice_policy(tiny)
    with pytest.raises(ValueError, match="choice mode"):
        policy.act([[{"role": "user", "content": "hello"}]], seed=0)
    with pytest.raises(ValueError, match="mode"):
        LanguagePolicy(policy.backend, policy.tokenizer, mode="fast")
    assert policy.act([], seed=0) == []


def test_candidate_logprobs_equal_summed_sequence_logprobs_and_have_gradients(tiny, kuhn_prompts, ttt_prompts):
    model, tokenizer = tiny
    prompts = [kuhn_prompts[0], ttt_prompts[2], kuhn_prompts[7]]
    prompt_ids = encode_prompts(tokenizer, [p.messages() for p in prompts])
    candidates = [[encode_choice(tokenizer, c) for c in p.choices] for p in prompts]
    candidates[0].append(encode_choice(tokenizer, "x"))  # a one-token candidate
    model.zero_grad()
    values = candidate_logprobs(model, prompt_ids, candidates)
    assert [len(v) for v in values] == [len(c) for c in candidates]
    flat_prompts = [ids for ids, cs in zip(prompt_ids, candidates) for _ in cs]
    flat_candidates = [c for cs in candidates for c in cs]
    with torch.no_grad():
        reference = [row.sum() for row in sequence_logprobs(model, flat_prompts, flat_candidates)]
    got = torch.cat(values)
    assert torch.allclose(got.detach(), torch.stack(reference), atol=1e-4)
    assert got.requires_grad
    got.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.zero_grad()
    # the policy's scores are the same numbers, computed without gradients
    scores = TransformersBackend(model, tokenizer).score_choices(
        [p.messages() for p in prompts[1:]], [list(p.choices) for p in prompts[1:]]
    )
    assert torch.allclose(torch.tensor(scores[0]), values[1].detach(), atol=1e-4)


def test_greedy_generation_of_repeated_prompts_equals_generating_each_alone(tiny):
    model, tokenizer = tiny
    a = [{"role": "user", "content": "Your card is K. Bet or check?"}]
    b = [{"role": "user", "content": "Board: X.O / ... / ..X; your move"}]
    batch = [a, b, a, a, b]
    together = generate(model, tokenizer, batch, max_new_tokens=10, temperature=0, seed=0, batch_size=8)
    alone = {id(p): generate(model, tokenizer, [p], max_new_tokens=10, temperature=0, seed=0)[0] for p in (a, b)}
    for prompt, generation in zip(batch, together):
        expected = alone[id(prompt)]
        assert generation.response_ids == expected.response_ids
        assert generation.text == expected.text
        assert generation.prompt_ids == expected.prompt_ids
        assert generation.logprobs == pytest.approx(expected.logprobs, abs=1e-4)
    # rows are not mixed up: the two prompts' (greedy, hence often equal) tokens come with
    # different log-probs
    assert together[1].logprobs != pytest.approx(together[0].logprobs, abs=1e-3)
    # the same holds for sampling when every row is the same prompt: rows get their own draws
    sampled = generate(model, tokenizer, [a] * 4, max_new_tokens=10, temperature=1.0, seed=1, batch_size=4)
    assert len({tuple(g.response_ids) for g in sampled}) > 1
    with torch.inference_mode():
        recomputed = sequence_logprobs(model, [g.prompt_ids for g in sampled], [g.response_ids for g in sampled])
    for generation, values in zip(sampled, recomputed):
        assert torch.allclose(torch.tensor(generation.logprobs), values, atol=1e-4)


@pytest.mark.parametrize("packed_tokens, scored_positions", [(256, 1024), (5, 8)], ids=["one-row", "split"])
def test_many_candidates_of_uneven_lengths_packed_behind_their_prompt_give_the_same_numbers(monkeypatch, packed_tokens, scored_positions):
    from trainers import generation
    from trainers.generation import logprobs

    # split: a prompt's candidates spread over rows of 5 fed tokens, rows over several forwards
    monkeypatch.setattr(logprobs, "MAX_PACKED_TOKENS", packed_tokens)
    monkeypatch.setattr(logprobs, "MAX_SCORED_POSITIONS", scored_positions)
    model, _ = load_model("tiny-random")
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    # one-token candidates (nothing fed), and rows whose packed candidates differ in width
    candidates = [[[20 + i, 30 + i] for i in range(25)] + [[7]], [[40 + i, 41, 42] for i in range(20)]]
    scores = generation.candidate_logprobs(model, prompts, candidates)
    with torch.no_grad():
        expected = [
            [generation.sequence_logprobs(model, [p], [c])[0].sum().item() for c in cs]
            for p, cs in zip(prompts, candidates)
        ]
    for row, reference in zip(scores, expected):
        assert row.detach().tolist() == pytest.approx(reference, abs=1e-4)
    scores[1].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("packed_tokens", [256, 3], ids=["one-row", "split"])
def test_candidates_that_share_their_start_feed_it_once_with_the_same_values_and_gradients(monkeypatch, packed_tokens):
    """The parts of a chained answer repeat the answer so far in every candidate: the
    candidates are packed as a token trie, each shared prefix fed once."""
    from trainers import generation
    from trainers.generation import logprobs

    monkeypatch.setattr(logprobs, "MAX_PACKED_TOKENS", packed_tokens)
    model, _ = load_model("tiny-random", seed=6)
    prompts = [[5, 6, 7, 8], [9, 10]]
    # one prompt, several rounds of one chain: [1], [1, 2] and [1, 2, 3] are each fed once
    candidates = [[[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 6], [1, 7], [8], [1, 2, 3, 4, 9]], [[11, 12], [11, 13], [14]]]
    assert logprobs.fed_tokens(candidates[0]) == 4  # [1], [1 2], [1 2 3], [1 2 3 4]
    assert logprobs.fed_tokens(candidates[1]) == 1
    widths = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape), with_kwargs=True)
    together = generation.candidate_logprobs(model, prompts, candidates)
    hook.remove()
    if packed_tokens == 256:
        assert widths == [(2, 4 + 4)]  # the longer prompt, then its four trie tokens
    torch.stack([v.sum() for v in together]).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    alone = [
        torch.stack([generation.sequence_logprobs(model, [p], [c])[0].sum() for c in cs])
        for p, cs in zip(prompts, candidates)
    ]
    torch.stack([v.sum() for v in alone]).sum().backward()
    for a, b in zip(together, alone):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(grads, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-5)
    # scoring behind the prompts' cached states (a rollout's rounds) gives the same numbers
    states = logprobs.run_prompts(model, prompts)
    after = logprobs.candidate_logprobs_after(model, states, [0, 1], candidates)
    for a, b in zip(after, alone):
        assert torch.allclose(a, b.detach(), atol=1e-5)


def test_a_shared_prompt_prefix_is_run_once_with_the_same_values_and_gradients():
    from trainers import generation
    from trainers.generation.logprobs import common_prefix_length

    model, _ = load_model("tiny-random", seed=4)
    prefix = list(range(40, 70))
    prompts = [prefix + [100, 101], prefix + [102], prefix + [103, 104, 105]]
    candidates = [[[5, 6], [7]], [[8]], [[9, 10, 11], [12], [13, 14]]]
    assert common_prefix_length(prompts) == 30
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    shared = generation.candidate_logprobs(model, prompts, candidates)
    hook.remove()
    assert calls[0] == (1, 30)  # the prefix, once, for all three prompts
    # then, in one pass, each prompt's own tokens (3 at most) and its candidates' tokens but
    # their last, packed behind it (1, 0 and 3)
    assert calls[1:] == [(3, 6)]
    torch.stack([v.sum() for v in shared]).sum().backward()
    shared_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    alone = [generation.candidate_logprobs(model, [p], [c])[0] for p, c in zip(prompts, candidates)]
    torch.stack([v.sum() for v in alone]).sum().backward()
    for a, b in zip(shared, alone):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(shared_grads, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-5)


def test_sequence_logprobs_with_a_shared_prefix_match_each_prompt_alone():
    from trainers import generation

    model, _ = load_model("tiny-random", seed=5)
    prefix = list(range(40, 60))
    prompts = [prefix + [100, 101, 102], prefix + [103], prefix + [104, 105]]
    responses = [[5, 6, 7], [8], [9, 10]]
    together = generation.sequence_logprobs(model, prompts, responses)
    torch.stack([row.sum() for row in together]).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    alone = [generation.sequence_logprobs(model, [p], [r])[0] for p, r in zip(prompts, responses)]
    torch.stack([row.sum() for row in alone]).sum().backward()
    for a, b in zip(together, alone):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(grads, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-5)


def test_a_cached_prompt_batch_reaches_the_model_without_a_copy_and_scores_the_same():
    from trainers.generation import logprobs

    model, _ = load_model("tiny-random", seed=5)
    prompts = [list(range(30, 52)), list(range(30, 45)) + [7, 8]]
    candidates = [[[5, 6], [7]], [[8, 9, 10], [11]]]
    states = logprobs.run_prompts(model, prompts)
    cache = logprobs._expanded(states.layers, 2)["past_key_values"]
    for layer, (keys, values) in zip(cache.layers, states.layers):
        assert layer.keys.data_ptr() == keys.data_ptr() and layer.values.data_ptr() == values.data_ptr()
    one_row = [(keys[:1], values[:1]) for keys, values in states.layers]
    wide = logprobs._expanded(one_row, 3)["past_key_values"].layers[0].keys
    assert wide.shape[0] == 3 and wide.stride(0) == 0  # a view of the one row, not three copies
    in_order = logprobs.candidate_logprobs_after(model, states, [0, 1], candidates)
    swapped = logprobs.candidate_logprobs_after(model, states, [1, 0], candidates[::-1])  # rows picked: copied
    with torch.inference_mode():
        whole = logprobs.candidate_logprobs(model, prompts, candidates)
    for a, b, c in zip(in_order, swapped[::-1], whole):
        assert torch.equal(a, b) and torch.allclose(a, c, atol=1e-5)
    # the states survive being scored behind: a second round gives the same numbers
    assert all(torch.equal(a, b) for a, b in zip(in_order, logprobs.candidate_logprobs_after(model, states, [0, 1], candidates)))
