"""A language model as a game-playing policy, in the three modes of the text protocol.

`LanguagePolicy.act` answers a batch of prompts in one backend call:

* ``think`` / ``direct``: free generation; the env parses the text (invalid answers
  follow the env's invalid-action policy).
* ``choice``: the backend scores every legal action string as a continuation of the
  prompt; the policy is the softmax of those sequence log-probs (at the sampling
  temperature), so every answer is legal. The recorded old log-prob is the chosen
  string's log-probability under the raw (temperature 1) normalised distribution,
  which is exactly what the learner recomputes.

Chains (`choose_in_parts`): an answer spelled as a chain of small choices, each a
choice-mode turn whose candidates are the answer so far followed by each option of the
next part (``envs.action_chain.ActionChain``: a game turn's legal action strings cut into
segments, for prompts marked ``chained``; ``envs.tasks.AnswerParts``: a task's answer,
``trainers.rollouts.parts``). The shared text scores the same in every candidate, so the
softmax is the model's probability of the next part given the prompt and the parts
already chosen, and the answer's probability is the product over its parts. A chained
`Decision` keeps each part's decision in ``parts``; its samples form one trace.

`action_distributions` gives the model's exact distribution over the legal actions of
each prompt (choice mode: the choice softmax, or the product over a chained turn's parts;
direct mode: the softmax over the sequence log-probs of the canonical direct answers
``\\boxed{[action]}``, i.e. the policy conditioned on answering legally), which
exploitability needs.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from envs.action_chain import ActionChain
from envs.protocol import MODES, TurnPrompt
from trainers.generation import GenerationBackend, encode_choice, encode_prompts
from trainers.learning.samples import TRACE_KEY, TurnSample
from trainers.run.seeds import derive_seed

PARTS_STREAM = "answer_parts"
"""Seed stream of the part-by-part sampling (one seed per round)."""

@dataclass
class Decision:
    """One answer of the policy, with what training needs to learn from it."""

    text: str
    prompt_ids: list[int]
    response_ids: list[int]
    old_logprobs: list[float]
    choice_ids: list[list[int]] | None = None
    choice_index: int | None = None
    parts: list["Decision"] | None = None
    """A chained answer: the decision of each of its parts (see the module docstring)."""
    choice_probs: list[float] | None = None
    """Choice mode: the probability the choice was sampled with, per candidate (one-hot when greedy)."""

    def samples(self, env_id: str, role: int, game_id: int, *, name: str = "", info=None, answer_info=None, **fields) -> list[TurnSample]:
        """The training samples of this answer: one, or one choice sample per part of a chain.

        A chain's parts are one trace (``info[TRACE_KEY]`` = `name`, ``info["chunk_index"]``,
        as Markovian chunks are): the advantage is computed once per answer and
        ``loss_tokens`` = the number of parts, so an answer weighs as one decision in the
        loss, whatever its length. `answer_info` (and the answer's text) go on the first
        part, the sample that stands for the answer in advantages and statistics.
        """
        if self.parts is None:
            return [self.to_sample(env_id, role, game_id, info={**(info or {}), **(answer_info or {})}, **fields)]
        count = len(self.parts)
        samples = []
        for index, part in enumerate(self.parts):
            extra = {TRACE_KEY: name, "chunk_index": index, **(info or {})}
            if index == 0:
                extra.update({"answer_text": self.text, **(answer_info or {})})
            samples.append(part.to_sample(env_id, role, game_id, info=extra, loss_tokens=count, **fields))
        return samples

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


class _PartPrompt(TurnPrompt):
    """One part of a chain: a choice turn asked with the request's own chat messages."""

    __slots__ = ("_messages",)

    def __init__(self, messages: list[dict[str, str]], choices: tuple[str, ...]):
        super().__init__("\n".join(f"{m['role']}: {m['content']}" for m in messages), choices, tuple(range(len(choices))))
        self._messages = messages

    def messages(self) -> list[dict[str, str]]:
        return self._messages


def _once_per_key(keys: Sequence, compute) -> list:
    """One result per key, in `keys`' order, with `compute` called once on the first index
    of each distinct key (it returns their results in that order)."""
    first: dict = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    by_key = dict(zip(first, compute(list(first.values()))))
    return [by_key[key] for key in keys]


def _request_key(messages: list[dict]) -> tuple:
    return tuple((m["role"], m["content"]) for m in messages)


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

    def fixed_weights(self):
        """A block within which the weights stay as they are (one rollout's games): a backend
        that can (transformers: `reusing_prefixes`) lets each choice session start from the
        prefix the last one ran."""
        reusing = getattr(self.backend, "reusing_prefixes", None)
        return reusing() if reusing else contextlib.nullcontext()

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
        """One choice per prompt; a ``chained`` prompt is answered part by part (`choose_in_parts`)."""
        if not all(isinstance(p, TurnPrompt) and p.choices for p in prompts):
            raise ValueError("choice mode needs TurnPrompts with legal action strings")
        chained = [i for i, p in enumerate(prompts) if p.chained]
        if not chained:
            return self._choose_among(prompts, seed=seed, temperature=temperature)
        decisions: list[Decision | None] = [None] * len(prompts)
        flat = [i for i, p in enumerate(prompts) if not p.chained]
        for i, decision in zip(flat, self._choose_among([prompts[i] for i in flat], seed=seed, temperature=temperature)):
            decisions[i] = decision
        chains = [ActionChain(prompts[i].choices) for i in chained]
        answers = self.choose_in_parts([prompts[i].messages() for i in chained], chains, seed=seed, temperature=temperature)
        for i, chain, decision in zip(chained, chains, answers):
            decision.choice_index = chain.action_index([part.choice_index for part in decision.parts])
            decisions[i] = decision
        return decisions

    def choose_in_parts(self, requests: Sequence[list[dict]], chains: Sequence, *, seed: int, temperature: float | None = None) -> list[Decision]:
        """One answer per request (chat messages), chosen part by part along its chain.

        A chain (``envs.action_chain.ActionChain``, ``envs.tasks.AnswerParts``) gives
        ``next_options(picks)``: the text so far and the next part's options (None once the
        answer is spelled), and ``spell(picks)``. All chains advance together, one scoring
        call per round; the returned decisions hold their parts' decisions in ``parts``.
        A backend with a ``choice_session`` (transformers) runs each distinct request's
        prompt once and scores every round's candidates behind it; others score the whole
        prompt each round (vLLM caches prefixes itself).
        """
        if self.mode != "choice":
            raise ValueError(f"answering in parts needs a choice-mode policy; this one is in {self.mode} mode")
        if len(requests) != len(chains):
            raise ValueError("every request needs its chain")
        temperature = self.temperature if temperature is None else temperature
        parts: list[list[Decision]] = [[] for _ in chains]
        row_of: dict[tuple, int] = {}  # identical requests (a task's GRPO group) share one prompt row
        owner = [row_of.setdefault(_request_key(r), len(row_of)) for r in requests]
        session = None
        if hasattr(self.backend, "choice_session"):
            unique = {row: request for row, request in zip(owner, requests)}
            session = self.backend.choice_session([unique[row] for row in range(len(row_of))], batch_size=self.batch_size)
        round_ = 0
        while True:
            picks = [[d.choice_index for d in made] for made in parts]
            steps = [(i, chain.next_options(picks[i])) for i, chain in enumerate(chains)]
            asked = [(i, step) for i, step in steps if step is not None]
            if not asked:
                break
            prompts = [_PartPrompt(requests[i], tuple(text + option for option in options)) for i, (text, options) in asked]
            scores = self._score_in_session(session, [owner[i] for i, _ in asked], prompts) if session else None
            made = self._choose_among(prompts, seed=derive_seed(seed, PARTS_STREAM, round_), temperature=temperature, scores=scores)
            for (i, _), decision in zip(asked, made):
                parts[i].append(decision)
            round_ += 1
        answers = []
        for chain, made in zip(chains, parts):
            text = chain.spell([d.choice_index for d in made])
            logprob = sum(d.old_logprobs[0] for d in made)
            first = made[0] if made else None
            prompt_ids = first.prompt_ids if first else []
            answers.append(Decision(text, prompt_ids, self._candidate_ids(text), [logprob], parts=made))
        return answers

    def _score_in_session(self, session, rows: list[int], prompts: Sequence[TurnPrompt]) -> list[list[float]]:
        """`_score_distinct` behind prompts a `choice_session` has run: row `rows[i]` is prompt i's request."""
        return _once_per_key(
            [(row, p.choices) for row, p in zip(rows, prompts)],
            lambda firsts: session.score_choices([rows[i] for i in firsts], [list(prompts[i].choices) for i in firsts]),
        )

    def _choose_among(self, prompts: Sequence[TurnPrompt], *, seed: int, temperature: float, scores=None) -> list[Decision]:
        """One choice per prompt among all its candidates (one scoring call, unless `scores` are given)."""
        if scores is None:
            scores = self._score_distinct(prompts, [list(p.choices) for p in prompts])
        prompt_ids = self._encode_distinct(prompts)
        rng = np.random.default_rng(seed)
        decisions = []
        for prompt, ids, candidate_scores in zip(prompts, prompt_ids, scores):
            sampling = _softmax(candidate_scores, temperature) if temperature > 0 else None
            index = int(np.argmax(candidate_scores)) if sampling is None else int(rng.choice(len(sampling), p=sampling))
            probs = [float(i == index) for i in range(len(candidate_scores))] if sampling is None else sampling.tolist()
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
                    choice_probs=probs,
                )
            )
        return decisions

    def _score_distinct(self, prompts: Sequence[TurnPrompt], choices: list[list[str]]) -> list[list[float]]:
        """`backend.score_choices`, computing each distinct (prompt, candidates) once.

        Many games at once in a small game ask the same question again and again (Kuhn
        Poker has 12 information states), so this is most of the rollout's savings.
        """
        if not prompts:
            return []
        return _once_per_key(
            [(p.text, tuple(c)) for p, c in zip(prompts, choices)],
            lambda firsts: self.backend.score_choices(
                [prompts[i].messages() for i in firsts], [choices[i] for i in firsts], batch_size=self.batch_size
            ),
        )

    def _encode_distinct(self, prompts: Sequence[TurnPrompt]) -> list[list[int]]:
        encoded = _once_per_key([p.text for p in prompts], lambda firsts: encode_prompts(self.tokenizer, [prompts[i].messages() for i in firsts]))
        return [list(ids) for ids in encoded]

    def action_distributions(self, prompts: Sequence[TurnPrompt], *, temperature: float = 1.0) -> list[dict[int, float]]:
        """The model's probability of each legal action id at `temperature`, per prompt (choice/direct modes).

        Choice mode: ``softmax(scores / temperature)``, exactly what `act` samples from; for a
        ``chained`` prompt, the product of those softmaxes along each action's parts.
        """
        if self.mode == "think":
            raise ValueError("think mode has no exact action distribution; estimate it by sampling")
        wrap = (lambda c: c) if self.mode == "choice" else direct_answer
        chained = [p.chained and self.mode == "choice" for p in prompts]
        flat = [p for p, c in zip(prompts, chained) if not c]
        scores = iter(self._score_distinct(flat, [[wrap(c) for c in p.choices] for p in flat]))
        by_chain = iter(self._chain_distributions(
            [p.messages() for p, c in zip(prompts, chained) if c],
            [ActionChain(p.choices) for p, c in zip(prompts, chained) if c],
            temperature,
        ))
        distributions = []
        for prompt, is_chained in zip(prompts, chained):
            if is_chained:
                spelled = next(by_chain)
                distributions.append({a: spelled[c] for a, c in zip(prompt.action_ids, prompt.choices)})
            else:
                distributions.append(dict(zip(prompt.action_ids, _softmax(next(scores), temperature).tolist())))
        return distributions

    def action_probabilities_of(self, prompts: Sequence[TurnPrompt], actions: Sequence[int], *, temperature: float = 1.0) -> list[float]:
        """The model's probability of legal action ``actions[i]`` at ``prompts[i]`` (choice mode).

        The entry of `action_distributions` for that action, but a chained turn scores only
        the choices on the action's own path: Simple Negotiation's probability of
        ``[Accept]`` is one choice, where its whole distribution scores every node of 200 offers.
        """
        if self.mode != "choice":
            raise ValueError(f"action_probabilities_of reads choice mode's exact distribution (mode is {self.mode})")
        if len(prompts) != len(actions):
            raise ValueError("prompts and actions must have the same length")
        result = [1.0] * len(prompts)
        flat = [i for i, p in enumerate(prompts) if not p.chained]
        for i, scores in zip(flat, self._score_distinct([prompts[i] for i in flat], [list(prompts[i].choices) for i in flat])):
            result[i] = float(_softmax(scores, temperature)[prompts[i].action_ids.index(actions[i])])
        walks = []  # (prompt index, chain, picks still to score)
        for i, prompt in enumerate(prompts):
            if prompt.chained:
                chain = ActionChain(prompt.choices)
                walks.append((i, chain, chain.picks_of(prompt.choices[prompt.action_ids.index(actions[i])])))
        depth = 0
        while walks := [w for w in walks if depth < len(w[2])]:
            asked = [(i, chain.next_options(picks[:depth]), picks[depth]) for i, chain, picks in walks]
            scored = [_PartPrompt(prompts[i].messages(), tuple(text + o for o in options)) for i, (text, options), _ in asked]
            for (i, _, pick), scores in zip(asked, self._score_distinct(scored, [list(p.choices) for p in scored])):
                result[i] *= float(_softmax(scores, temperature)[pick])
            depth += 1
        return result

    def _chain_distributions(self, requests: Sequence[list[dict]], chains: Sequence, temperature: float) -> list[dict[str, float]]:
        """Each chain's probability of every answer it spells: the product of the softmaxes
        of the choices along the way, every choice node scored once (one call per depth)."""
        result: list[dict[str, float]] = [{} for _ in chains]
        frontier = [(i, (), 1.0) for i in range(len(chains))]
        while frontier:
            asked = []
            for i, picks, probability in frontier:
                step = chains[i].next_options(picks)
                if step is None:
                    result[i][chains[i].spell(picks)] = probability
                else:
                    asked.append((i, picks, probability, step))
            prompts = [_PartPrompt(requests[i], tuple(text + o for o in options)) for i, _, _, (text, options) in asked]
            scores = self._score_distinct(prompts, [list(p.choices) for p in prompts]) if prompts else []
            frontier = [
                (i, picks + (k,), probability * q)
                for (i, picks, probability, _), s in zip(asked, scores)
                for k, q in enumerate(_softmax(s, temperature).tolist())
            ]
        return result


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))
