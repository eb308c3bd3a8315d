"""Choice mode for tasks: an answer spelled part by part, each part a choice among a few options.

A SAT answer is one of 2^k bit strings. Listing them all as candidates costs 2^k scored
continuations per prompt and stops working past a few variables; generating them freely
(direct mode) spends the first steps learning the format and leaves the policy's
probability spread over malformed answers. Here the policy answers a task whose hooks
give `envs.tasks.AnswerParts` in k rounds: at round r every open answer is a choice-mode
turn whose candidates are the answer so far followed by each option of part r
(``"\\boxed{01" + "0"`` or ``+ "1"``). The shared text scores the same in every candidate,
so the softmax over them is the model's probability of the next part given the formula
and the parts already chosen: the answer's probability is the product over its parts.

Each part becomes one choice-mode `TurnSample`. The parts of an answer are one trace
(``info[TRACE_KEY]``, ``info["chunk_index"]``, as Markovian chunks are): the advantage is
computed once per answer, counts count answers, and ``loss_tokens`` = the number of parts,
so an answer weighs as one decision in the loss, whatever its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from envs.protocol import TurnPrompt
from envs.tasks import AnswerParts
from trainers.learning.samples import TRACE_KEY, TurnSample
from trainers.rollouts.policy import Decision, LanguagePolicy
from trainers.run.seeds import derive_seed

PARTS_STREAM = "answer_parts"
"""Seed stream of the part-by-part sampling (one seed per round)."""


class _PartPrompt(TurnPrompt):
    """A choice turn asked with the task's own chat messages (which may hold a system turn)."""

    __slots__ = ("_messages",)

    def __init__(self, messages: list[dict[str, str]], choices: tuple[str, ...]):
        super().__init__("\n".join(f"{m['role']}: {m['content']}" for m in messages), choices, tuple(range(len(choices))))
        self._messages = messages

    def messages(self) -> list[dict[str, str]]:
        return self._messages


@dataclass
class PartsReply:
    """One answer chosen part by part; ``text`` is the whole answer once every part is chosen."""

    parts: AnswerParts
    prompt: Any = None
    decisions: list[Decision] = field(default_factory=list)
    cap_hit = None

    @property
    def rounds(self) -> int:
        return len(self.decisions)

    @property
    def text(self) -> str:
        return self.parts.spell([d.choice_index for d in self.decisions])

    def samples(self, env_id: str, role: int, game_id: int, *, name: str, info=None, answer_info=None, **fields) -> list[TurnSample]:
        """One choice sample per part; `answer_info` (and the answer's text) go on the last part."""
        count = len(self.decisions)
        samples = []
        for index, decision in enumerate(self.decisions):
            extra = {TRACE_KEY: name, "chunk_index": index, **(info or {})}
            if index == count - 1:
                extra.update({"answer_text": self.text, **(answer_info or {})})
            sample = decision.to_sample(env_id, role, game_id, info=extra, loss_tokens=count, **fields)
            samples.append(sample)
        return samples


def answer_in_parts(
    policy: LanguagePolicy,
    requests: Sequence[list[dict[str, str]]],
    parts: Sequence[AnswerParts],
    *,
    seed: int,
    temperature: float | None = None,
) -> list[PartsReply]:
    """One answer per request, chosen part by part by a choice-mode `policy` (all requests advance together)."""
    if policy.mode != "choice":
        raise ValueError(f"answering in parts needs a choice-mode policy; this one is in {policy.mode} mode")
    if len(requests) != len(parts):
        raise ValueError("every request needs its AnswerParts")
    replies = [PartsReply(p, messages) for messages, p in zip(requests, parts)]
    for round_ in range(max((len(p.options) for p in parts), default=0)):
        open_replies = [r for r in replies if round_ < len(r.parts.options)]
        prompts = []
        for reply in open_replies:
            so_far = reply.parts.prefix + "".join(
                options[d.choice_index] for options, d in zip(reply.parts.options, reply.decisions)
            )
            candidates = tuple(so_far + option for option in reply.parts.options[round_])
            prompts.append(_PartPrompt(reply.prompt, candidates))
        decisions = policy.act(prompts, seed=derive_seed(seed, PARTS_STREAM, round_), temperature=temperature)
        for reply, decision in zip(open_replies, decisions):
            reply.decisions.append(decision)
    return replies
