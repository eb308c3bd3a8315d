"""A language model as a game-playing policy, in the three modes of the text protocol.

`LanguagePolicy.act` answers a batch of prompts in one backend call:

* ``think`` / ``direct``: free generation; the env parses the text (invalid answers
  follow the env's invalid-action policy).
* ``choice``: the backend scores every legal action string as a continuation of the
  prompt; the policy is the softmax of those sequence log-probs (at the sampling
  temperature), so every answer is legal. The recorded old log-prob is the chosen
  string's log-probability under the raw (temperature 1) normalised distribution,
  which is exactly what the learner recomputes.

`action_distributions` gives the model's exact distribution over the legal actions of
each prompt (choice mode: the choice softmax; direct mode: the softmax over the
sequence log-probs of the canonical direct answers ``\\boxed{[action]}``, i.e. the
policy conditioned on answering legally), which exploitability needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from envs.protocol import MODES, TurnPrompt
from trainers.generation import GenerationBackend, encode_choice, encode_prompts
from trainers.learning.samples import TurnSample

@dataclass
class Decision:
    """One answer of the policy, with what training needs to learn from it."""

    text: str
    prompt_ids: list[int]
    response_ids: list[int]
    old_logprobs: list[float]
    choice_ids: list[list[int]] | None = None
    choice_index: int | None = None

    def to_sample(self, env_id: str, role: int, game_id: int, **fields) -> TurnSample:
        """The training sample of this decision (reward and advantage are set later)."""
        info = {"text": self.text, **fields.pop("info", {})}
        return TurnSample(
            prompt_ids=self.prompt_ids,
            response_ids=self.response_ids,
            old_logprobs=self.old_logprobs,
            env_id=env_id,
            role=role,
            game_id=game_id,
            choice_ids=self.choice_ids,
            choice_index=self.choice_index,
            info=info,
            **fields,
        )


def direct_answer(choice: str) -> str:
    """The canonical answer a direct-mode model should give for an action string."""
    return "\\boxed{" + choice + "}"


def _messages(prompt) -> list[dict]:
    return prompt.messages() if isinstance(prompt, TurnPrompt) else list(prompt)


def _softmax(scores: Sequence[float], temperature: float = 1.0) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64) / max(temperature, 1e-8)
    values -= values.max()
    weights = np.exp(values)
    return weights / weights.sum()


class LanguagePolicy:
    def __init__(
        self,
        backend: GenerationBackend,
        tokenizer,
        *,
        mode: str,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 32,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
        self.backend = backend
        self.tokenizer = tokenizer
        self.mode = mode
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        self._choice_ids: dict[str, list[int]] = {}

    def act(self, prompts: Sequence, *, seed: int, temperature: float | None = None) -> list[Decision]:
        """One decision per prompt (a `TurnPrompt`, or chat messages for tasks)."""
        if not prompts:
            return []
        temperature = self.temperature if temperature is None else temperature
        if self.mode == "choice":
            return self._choose(prompts, seed=seed, temperature=temperature)
        generations = self.backend.generate(
            [_messages(p) for p in prompts],
            max_new_tokens=self.max_new_tokens,
            temperature=temperature,
            top_p=self.top_p,
            seed=seed,
            batch_size=self.batch_size,
        )
        return [
            Decision(g.text, list(g.prompt_ids), list(g.response_ids), list(g.logprobs)) for g in generations
        ]

    def _candidate_ids(self, text: str) -> list[int]:
        ids = self._choice_ids.get(text)
        if ids is None:
            ids = self._choice_ids[text] = encode_choice(self.tokenizer, text)
        return ids

    def _choose(self, prompts: Sequence[TurnPrompt], *, seed: int, temperature: float) -> list[Decision]:
        if not all(isinstance(p, TurnPrompt) and p.choices for p in prompts):
            raise ValueError("choice mode needs TurnPrompts with legal action strings")
        scores = self._score_distinct(prompts, [list(p.choices) for p in prompts])
        prompt_ids = self._encode_distinct(prompts)
        rng = np.random.default_rng(seed)
        decisions = []
        for prompt, ids, candidate_scores in zip(prompts, prompt_ids, scores):
            sampling = _softmax(candidate_scores, temperature) if temperature > 0 else None
            index = int(np.argmax(candidate_scores)) if sampling is None else int(rng.choice(len(sampling), p=sampling))
            log_normaliser = _logsumexp(candidate_scores)
            candidates = [self._candidate_ids(c) for c in prompt.choices]
            decisions.append(
                Decision(
                    text=prompt.choices[index],
                    prompt_ids=ids,
                    response_ids=candidates[index],
                    old_logprobs=[candidate_scores[index] - log_normaliser],
                    choice_ids=candidates,
                    choice_index=index,
                )
            )
        return decisions

    def _score_distinct(self, prompts: Sequence[TurnPrompt], choices: list[list[str]]) -> list[list[float]]:
        """`backend.score_choices`, computing each distinct (prompt, candidates) once.

        Many games at once in a small game ask the same question again and again (Kuhn
        Poker has 12 information states), so this is most of the rollout's savings.
        """
        first: dict[tuple, int] = {}
        for i, (prompt, candidates) in enumerate(zip(prompts, choices)):
            first.setdefault((prompt.text, tuple(candidates)), i)
        scores = self.backend.score_choices(
            [prompts[i].messages() for i in first.values()],
            [choices[i] for i in first.values()],
            batch_size=self.batch_size,
        )
        by_key = dict(zip(first, scores))
        return [by_key[(p.text, tuple(c))] for p, c in zip(prompts, choices)]

    def _encode_distinct(self, prompts: Sequence[TurnPrompt]) -> list[list[int]]:
        first: dict[str, int] = {}
        for i, prompt in enumerate(prompts):
            first.setdefault(prompt.text, i)
        encoded = encode_prompts(self.tokenizer, [prompts[i].messages() for i in first.values()])
        by_text = dict(zip(first, encoded))
        return [list(by_text[p.text]) for p in prompts]

    def action_distributions(self, prompts: Sequence[TurnPrompt], *, temperature: float = 1.0) -> list[dict[int, float]]:
        """The model's probability of each legal action id at `temperature`, per prompt (choice/direct modes).

        Choice mode: ``softmax(scores / temperature)``, exactly what `act` samples from.
        """
        if self.mode == "think":
            raise ValueError("think mode has no exact action distribution; estimate it by sampling")
        wrap = (lambda c: c) if self.mode == "choice" else direct_answer
        scores = self._score_distinct(prompts, [[wrap(c) for c in p.choices] for p in prompts])
        return [
            dict(zip(p.action_ids, _softmax(s, temperature).tolist())) for p, s in zip(prompts, scores)
        ]


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))
