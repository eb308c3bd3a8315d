"""What a trainer needs from a single-turn task beyond the Gymnasium API: the task interface.

A task env (``envs.make(task_id)``, a ``gymnasium.Env`` whose ``step`` takes the model's
raw answer and ends the episode) is trained and evaluated by the generic trainer through
`task_hooks(env)`:

* ``messages(env, observation)``: the chat messages of the current instance;
* ``answer_space(info)``: the well-formed answers of an instance when the task can list
  them (the format phase clones one of them), else an empty tuple;
* ``heldout(env, size)``: the held-out evaluation items at the env's current level, never
  drawn for training; ``item_messages(item)`` and ``score(item, text)`` ask and grade one;
* ``exclusions(levels, size, benchmark)``: what training must never draw (the held-out
  items of every level a run may visit, a benchmark folder's items), passed back to the
  env as its ``exclude`` argument;
* ``guess_rate(items)``: the pass@1 of guessing a well-formed answer uniformly, when known;
* ``answer_parts(info)`` / ``item_answer_parts(item)``: the well-formed answers spelled as a
  chain of small choices (`AnswerParts`), when the task can, so that choice mode can answer
  it (``trainers.rollouts.parts``); None otherwise.

A task names its own hooks in a ``task_hooks`` class attribute (``envs.sat.SatEnv``:
``SatTask``, k-bit answers, the curriculum's held-out formulas), usually a subclass of
`GenericTask` overriding what it knows better. Any other task gets `GenericTask`: its
held-out items are instances drawn from a seed stream of their own, graded by the env's
own ``step``; it lists no answers and excludes nothing (its held-out seeds are not
training seeds, but an instance may repeat by chance in a small task space). So every
registered task gets held-out evaluation, curriculum feedback and a best checkpoint.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

from curricula.sat import HELDOUT_SIZE  # held-out instances per level unless a curriculum says otherwise

HELDOUT_STREAM = 0x48454C44  # "HELD": seeds of generic held-out instances, apart from any training seed


def chat_messages(env, observation: str) -> list[dict[str, str]]:
    """The env's own ``messages()``, else its observation as one user turn."""
    if hasattr(env, "messages"):
        return env.messages()
    return [{"role": "user", "content": observation}]


@dataclass(frozen=True)
class AnswerParts:
    """A well-formed answer as ``prefix + (label + option) per part + suffix``.

    SAT with k variables: ``"\\boxed{"``, k parts of ``("0", "1")``, ``"}"``. Choice mode
    answers part by part, each a choice among the part's options, so an answer space of
    2^k strings costs k small choices instead of 2^k candidates. `labels` (empty, or one
    per part) is fixed text written before each part's option, e.g. ``"A="``, ``" B="``:
    it names what the next choice is about right where the model makes it.
    """

    prefix: str
    options: tuple[tuple[str, ...], ...]
    suffix: str
    labels: tuple[str, ...] = ()

    def __post_init__(self):
        if self.labels and len(self.labels) != len(self.options):
            raise ValueError(f"{len(self.options)} parts need {len(self.options)} labels or none, got {len(self.labels)}")

    def _label(self, part: int) -> str:
        return self.labels[part] if self.labels else ""

    def _written(self, picks: Sequence[int]) -> str:
        return "".join(self._label(r) + self.options[r][i] for r, i in enumerate(picks))

    def next_options(self, picks: Sequence[int]) -> tuple[str, tuple[str, ...]] | None:
        """``(text so far, options of the next part)`` after `picks`, or None once every part is
        chosen (the chain protocol of ``LanguagePolicy.choose_in_parts``). The text so far
        ends with the next part's label."""
        if len(picks) >= len(self.options):
            return None
        return self.prefix + self._written(picks) + self._label(len(picks)), self.options[len(picks)]

    def spell(self, picks: Sequence[int]) -> str:
        """The answer text of one pick (an option index) per part."""
        if len(picks) != len(self.options):
            raise ValueError(f"{len(self.options)} parts need {len(self.options)} picks, got {len(picks)}")
        return self.prefix + self._written(picks) + self.suffix


class GenericTask:
    """The hooks of any single-turn task env, from its Gymnasium API alone."""

    def messages(self, env, observation: str) -> list[dict[str, str]]:
        return chat_messages(env, observation)

    def answer_space(self, info: dict) -> tuple[str, ...]:
        return ()

    def heldout(self, env, size: int) -> list[Any]:
        """`size` instances, each a reset copy of `env` with its messages: ``(env, messages)``."""
        items = []
        for index in range(size):
            instance = copy.deepcopy(env)
            observation, _ = instance.reset(seed=HELDOUT_STREAM * 1_000_003 + index)
            items.append((instance, chat_messages(instance, observation)))
        return items

    def item_messages(self, item) -> list[dict[str, str]]:
        return item[1]

    def score(self, item, text: str) -> tuple[float, dict]:
        _, reward, _, _, info = copy.deepcopy(item[0]).step(text)
        return float(reward), dict(info)

    def exclusions(self, levels: Sequence, size: int, benchmark: str = "") -> list:
        return []

    def guess_rate(self, items: Sequence) -> float | None:
        return None

    def answer_parts(self, info: dict) -> AnswerParts | None:
        return None

    def item_answer_parts(self, item) -> AnswerParts | None:
        return None


def task_hooks(env) -> GenericTask:
    """The task interface of `env`: its class's ``task_hooks``, else `GenericTask`."""
    hooks = getattr(getattr(env, "unwrapped", env), "task_hooks", None)
    return hooks if hooks is not None else GenericTask()


def level_of(env):
    """The env's current level (what a curriculum records pass@1 under), or None."""
    level = getattr(env, "level", None)
    return None if level is None else tuple(level)
