"""The format phase teaches the answer format and, in expectation, nothing about which legal action to choose."""

from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import envs
from trainers.learning.format_phase import format_samples, reasoning_prefix
from trainers.generation import TransformersBackend, candidate_logprobs, encode_choice, encode_prompts
from trainers.models import load_model
from trainers.rollouts.policy import LanguagePolicy, direct_answer
from trainers.learning.samples import TurnSample


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random", seed=3)


def turn(env_mode="direct"):
    env = envs.make("kuhn_poker", mode=env_mode)
    env.reset(seed=0)
    return env.turn_prompt()


def rollout_sample(prompt, text="I think so."):
    return TurnSample(
        [1], [2], [0.0], "kuhn_poker", 0, 0,
        info={"choices": prompt.choices, "messages": prompt.messages(), "text": text},
    )


def gradient(model, loss):
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten().clone() for p in model.parameters()])


def test_expected_cloning_gradient_is_the_legal_mass_gradient_and_leaves_the_choice_alone(tiny):
    model, tokenizer = tiny
    prompt = turn()
    suffix = tokenizer.eos_token
    candidates = [encode_choice(tokenizer, direct_answer(c) + suffix) for c in prompt.choices]
    prompt_ids = encode_prompts(tokenizer, [prompt.messages()])

    def scores():
        return candidate_logprobs(model, prompt_ids, [candidates])[0]

    p = torch.softmax(scores().detach(), 0)
    # E_{a ~ p} [grad log pi(answer_a)]: what the format phase's cloning step follows on average
    expected_cloning = gradient(model, -(p * scores()).sum())
    legal_mass = gradient(model, -torch.logsumexp(scores(), 0))
    assert torch.allclose(expected_cloning, legal_mass, atol=1e-6)
    # its component on the choice among legal answers (the conditional log-softmax) is zero
    conditional = gradient(model, -(p * torch.log_softmax(scores(), 0)).sum())
    assert conditional.abs().max().item() < 1e-6
    # cloning uniformly random legal answers would push the choice (towards uniform)
    uniform = torch.full_like(p, 1 / len(p))
    pushed = gradient(model, -(uniform * torch.log_softmax(scores(), 0)).sum())
    assert pushed.abs().max().item() > 1e-4


def test_cloned_answers_are_drawn_from_the_models_own_legal_distribution(tiny):
    model, tokenizer = tiny
    policy = LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode="direct", max_new_tokens=32)
    prompt = turn()
    clones = format_samples(policy, [rollout_sample(prompt)] * 3000, seed=5, limit=3000)
    counts = Counter(c.info["text"] for c in clones)
    scores = policy.backend.score_choices([prompt.messages()], [[direct_answer(c) + tokenizer.eos_token for c in prompt.choices]])[0]
    probabilities = np.exp(np.array(scores) - max(scores))
    probabilities /= probabilities.sum()
    for choice, probability in zip(prompt.choices, probabilities):
        assert counts[direct_answer(choice) + tokenizer.eos_token] / 3000 == pytest.approx(probability, abs=0.03)
    first = clones[0]
    assert first.prompt_ids == encode_prompts(tokenizer, [prompt.messages()])[0]
    assert first.response_ids == encode_choice(tokenizer, first.info["text"])
    assert prompt.parse(tokenizer.decode(first.response_ids, skip_special_tokens=True)).action is not None


def test_think_mode_keeps_the_models_reasoning_and_appends_a_legal_boxed_answer(tiny):
    model, tokenizer = tiny
    policy = LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode="think", max_new_tokens=64)
    prompt = turn("think")
    clone = format_samples(policy, [rollout_sample(prompt, "Holding a King, betting wins. \\boxed{raise}")], seed=0)[0]
    text = clone.info["text"]
    assert text.startswith("Holding a King, betting wins.\n\\boxed{[")
    assert prompt.parse(text).action is not None
    assert reasoning_prefix("x" * 500, tokenizer, budget=10) == "x" * 10 + "\n"  # byte-level: 1 token per character
