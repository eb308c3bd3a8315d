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

Credit (``task_credit``): by default every part of an answer gets the answer's advantage
(GRPO over the group), so a part that did not matter is pushed as hard as one that decided
the answer. ``counterfactual`` gives part i ``R - sum_v pi_i(v) R(answer with part i set to
v)``: the answer's reward minus what the policy's own distribution over that part would
have scored with the other parts kept (`counterfactual_gaps`, the task's scorer called on
the swapped answers). A part whose swap changes nothing gets 0; a part that made the
answer right gets ``(1 - pi_i(chosen)) * (R - R_swapped)``; the learner divides these by
their std over the step (``trainers.learning.advantages.part_gap_advantages``). This is COMA's counterfactual
baseline (Foerster et al., 2018) applied to the parts of one answer: it needs parts whose
options do not depend on earlier picks (`AnswerParts`), and a scorer cheap enough to call
once per option of every part (SAT: counting satisfied clauses). Keeping the later parts
fixed while swapping an earlier one ignores that they were chosen after it, a bias traded
for a signal that says which part mattered.

The rounds are `LanguagePolicy.choose_in_parts`, which game turns with many legal actions
use too (``envs.action_chain``). Each part becomes one choice-mode `TurnSample`; the parts
of an answer are one trace (`Decision.samples`): the advantage is computed once per
answer, counts count answers, and ``loss_tokens`` = the number of parts, so an answer
weighs as one decision in the loss, whatever its length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from envs.tasks import AnswerParts
from trainers.learning.samples import TurnSample
from trainers.rollouts.policy import Decision, LanguagePolicy

PART_GAP_KEY = "counterfactual_gap"
"""``sample.info`` key of a part's counterfactual advantage (``task_credit=counterfactual``)."""
TASK_CREDITS = ("answer", "counterfactual")


@dataclass
class PartsReply:
    """One answer chosen part by part; ``decision.parts`` holds each part's choice."""

    parts: AnswerParts
    prompt: Any
    decision: Decision
    cap_hit = None

    @property
    def decisions(self) -> list[Decision]:
        return self.decision.parts

    @property
    def rounds(self) -> int:
        return len(self.decision.parts)

    @property
    def text(self) -> str:
        return self.decision.text

    def samples(self, env_id: str, role: int, game_id: int, **fields) -> list[TurnSample]:
        """One choice sample per part, one trace (`Decision.samples`)."""
        return self.decision.samples(env_id, role, game_id, **fields)


def answer_in_parts(
    policy: LanguagePolicy,
    requests: Sequence[list[dict[str, str]]],
    parts: Sequence[AnswerParts],
    *,
    seed: int,
    temperature: float | None = None,
) -> list[PartsReply]:
    """One answer per request, chosen part by part by a choice-mode `policy` (all requests advance together)."""
    decisions = policy.choose_in_parts(requests, parts, seed=seed, temperature=temperature)
    return [PartsReply(p, messages, d) for messages, p, d in zip(requests, parts, decisions)]


def counterfactual_gaps(reply: PartsReply, reward: float, score: Callable[[str], float]) -> list[float]:
    """Per part i: ``reward - sum_v pi_i(v) * score(the answer with part i set to v)``.

    `pi_i` is the distribution part i was sampled from (``Decision.choice_probs``); the
    chosen option scores `reward` without asking `score`. See the module docstring."""
    picks = [decision.choice_index for decision in reply.decisions]
    gaps = []
    for part, decision in enumerate(reply.decisions):
        expected = 0.0
        for option, probability in enumerate(decision.choice_probs):
            if probability > 0.0:
                swapped = picks[:part] + [option] + picks[part + 1:]
                expected += probability * (reward if option == picks[part] else score(reply.parts.spell(swapped)))
        gaps.append(reward - expected)
    return gaps
