"""The format phase: teach the answer format by behaviour cloning, without teaching strategy.

A small model in ``direct`` or ``think`` mode may answer in a form the parser cannot read
(no ``\\boxed{}``, a made-up action). Then every game ends in the same forfeit, every
advantage is zero or noise, and RL has nothing to learn from. While the measured invalid
rate is above a threshold, a step's update is behaviour cloning on well-formed answers
instead of PPO.

Which legal answer is cloned is drawn from the model's OWN distribution over the legal
answers, ``p(a) = pi(answer_a) / sum_b pi(answer_b)`` (each answer scored as a whole
continuation). The expected gradient of the cloning loss is then

    sum_a p(a) grad log pi(answer_a) = grad log sum_a pi(answer_a),

the gradient of the log-probability of answering legally at all: it raises the mass on
well-formed legal answers and gives the choice AMONG them no push in expectation (the
cross-entropy between p and the model's conditional distribution is at its minimum, so
its gradient is zero). Cloning uniformly random legal answers would instead pull the
policy towards uniform play. In ``think`` mode the cloned answer keeps the model's own
reasoning from the rollout and appends the boxed action, so the phase teaches "reason,
then box a legal action", not "stop thinking".
"""

from __future__ import annotations

import numpy as np

from trainers.generation import encode_choice, encode_prompts
from trainers.rollouts.policy import direct_answer
from trainers.learning.samples import TurnSample

MAX_SAMPLES_PER_STEP = 128
"""Cloned answers per format step (each is scored against every legal answer of its turn)."""


def answer_suffix(tokenizer) -> str:
    """What ends a cloned answer: the end-of-turn token, so the model learns to stop after it."""
    return tokenizer.eos_token or ""


def reasoning_prefix(text: str, tokenizer, budget: int) -> str:
    """The model's reasoning from a think-mode answer: everything before its last answer attempt, cut to `budget` tokens."""
    for marker in ("\\boxed", "["):
        cut = text.rfind(marker)
        if cut != -1:
            text = text[:cut]
            break
    ids = tokenizer(text, add_special_tokens=False).input_ids[: max(budget, 0)]
    reasoning = tokenizer.decode(ids, skip_special_tokens=True).rstrip()
    return reasoning + "\n" if reasoning else ""


def format_samples(
    policy, samples: list[TurnSample], *, seed: int, limit: int = MAX_SAMPLES_PER_STEP
) -> list[TurnSample]:
    """Behaviour-cloning samples for the first `limit` rollout turns of `samples`.

    Each rollout sample must carry its legal action strings in ``info["choices"]`` and its
    chat messages in ``info["messages"]`` (the rollout records both).
    """
    chosen = [s for s in samples if s.info.get("choices")][:limit]
    if not chosen:
        return []
    tokenizer = policy.tokenizer
    suffix = answer_suffix(tokenizer)
    budget = policy.max_new_tokens - 16  # room for the boxed answer itself
    candidates = []
    for sample in chosen:
        prefix = reasoning_prefix(sample.info.get("text", ""), tokenizer, budget) if policy.mode == "think" else ""
        candidates.append([prefix + direct_answer(c) + suffix for c in sample.info["choices"]])
    messages = [s.info["messages"] for s in chosen]
    # direct mode revisits the same few questions: score each distinct one once
    distinct: dict[tuple, int] = {}
    keys = [(repr(m), tuple(c)) for m, c in zip(messages, candidates)]
    for index, key in enumerate(keys):
        distinct.setdefault(key, index)
    firsts = list(distinct.values())
    distinct_scores = policy.backend.score_choices(
        [messages[i] for i in firsts], [candidates[i] for i in firsts], batch_size=policy.batch_size
    )
    distinct_ids = encode_prompts(tokenizer, [messages[i] for i in firsts])
    by_key = {key: (ids, values) for key, ids, values in zip(distinct, distinct_ids, distinct_scores)}
    prompt_ids = [by_key[key][0] for key in keys]
    scores = [by_key[key][1] for key in keys]
    rng = np.random.default_rng(seed)
    clones = []
    for sample, ids, options, values in zip(chosen, prompt_ids, candidates, scores):
        weights = np.exp(np.asarray(values) - max(values))
        index = int(rng.choice(len(options), p=weights / weights.sum()))
        response = encode_choice(tokenizer, options[index])
        clones.append(
            TurnSample(list(ids), response, [0.0] * len(response), sample.env_id, sample.role, sample.game_id, info={"text": options[index]})
        )
    return clones
