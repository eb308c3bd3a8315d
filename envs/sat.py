"""The SAT task as a single-turn Gymnasium env: Saturn's task ("SATURN: SAT-based
Reinforcement Learning to Unleash Language Model Reasoning", arXiv:2505.16368).

reset() draws a planted-solution CNF formula at a fixed (n, k, l) or at the level a
curriculum names; the observation is the prompt; step() takes the raw model output and
ends the episode. Reward: +1 if the last `\\boxed{...}` holds exactly k characters of 0/1
that satisfy every clause (or every variable named in order, ``A=1 B=0 C=1``, a name
optionally followed by a parenthesised note), 0 for any other boxed answer (the published checker accepts
answers of the wrong length; this one does not), -1 when no boxed answer can be found.

`score_answer` and `prompt_messages` are the same logic as pure functions, for trainers
and evaluators that hold instances rather than envs. `SatTask` is the env's task interface
(``envs.tasks``): its answer space, held-out formulas and training exclusions.
"""

from __future__ import annotations


import re
from typing import Any, Iterable

import gymnasium

from curricula.curriculum import Curriculum
from curricula.sat import (
    DEFAULT_COUNT_CAP,
    VARIABLE_NAMES,
    SatConfig,
    SatInstance,
    accepts,
    canonical_key,
    check_parameters,
    count_satisfied,
    parse_assignment,
    sample_instance,
    text_to_clauses,
)
from envs.parsing import extract_boxed
from envs.spaces import text_space
from envs.tasks import AnswerParts, GenericTask

MAX_LISTED_ANSWERS = 64
"""Well-formed answers listed for the format phase: all k-bit strings when 2**k <= 64, else 64."""
MAX_TEXT_LENGTH = 2**18
"""Longer than any prompt (26 variables, thousands of clauses) or sensible answer."""
MAX_DRAWS = 1_000

CORRECT_REWARD = 1.0
WRONG_REWARD = 0.0
NO_ANSWER_REWARD = -1.0

ANSWER_FORMATS = ("bits", "named", "counted")
"""How an answer spells the assignment: ``bits`` (Saturn's, ``\\boxed{101}``), ``named``
(``\\boxed{A=1 B=0 C=1}``) or ``counted`` (named, each name followed by how often the variable
occurs plain and negated: ``\\boxed{A (2 as A, 1 as !A)=1 ...}``). The checker accepts every
form; the format sets what the prompt asks for and how choice mode spells its parts (a named
part's label says which variable the next choice sets, a counted one also what the formula asks
of it, right where the choice is made; a bit's position in the string says neither)."""

_PROMPT = """\
Find an assignment of true/false values that makes the Boolean formula below true.

Notation: the variables are capital letters A, B, C, ...; "!X" means NOT X; literals \
written next to each other are joined by OR, so "A!B" means "A OR NOT B"; " & " joins \
clauses by AND. Every clause must be true.

Answer format: {answer_format}

Example: with the 3 variables A, B, C, the formula "A!B & !AC & BC" is made true by \
A = 1, B = 0, C = 1: "A!B" holds because A is true, "!AC" and "BC" hold because C is \
true. The answer is {example}.

Your formula has {k} variables ({names}) and {l} clauses:
{formula}
{notes}
Reason step by step, then give your final answer as \\boxed{{...}} {closing}."""

_FORMAT_TEXT = {
    "bits": ("one bit per variable in alphabetical order (1 = true, 0 = false), exactly as "
             "many bits as there are variables, inside \\boxed{}.", "\\boxed{101}", "with exactly {k} bits"),
    "named": ("every variable in alphabetical order with its value (1 = true, 0 = false), "
              "separated by spaces, inside \\boxed{}.", "\\boxed{A=1 B=0 C=1}", "naming all {k} variables"),
    "counted": ("every variable in alphabetical order, each followed by how often it occurs plain and "
                "negated in the clauses, in parentheses, and then its value (1 = true, 0 = false), "
                "separated by spaces, inside \\boxed{}.",
                "\\boxed{A (1 as A, 1 as !A)=1 B (1 as B, 1 as !B)=0 C (2 as C, 0 as !C)=1}",
                "naming all {k} variables with their counts"),
}

_NAMED_SEPARATOR = re.compile(r"[\s,]+")
_NAMED_PAIR = re.compile(r"([A-Z])=([01])")
_ANNOTATION = re.compile(r"\([^()]*\)")


def check_answer_format(answer_format: str) -> str:
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"sat: answer_format must be one of {', '.join(ANSWER_FORMATS)}; got {answer_format!r}")
    return answer_format


def sign_counts(clauses, k: int) -> list[tuple[int, int]]:
    """(plain, negated): in how many clauses each of the first k variables occurs each way."""
    return [(sum(v in c for c in clauses), sum(-v in c for c in clauses)) for v in range(1, k + 1)]


def counted_label(name: str, plain: int, negated: int) -> str:
    """A variable's name with its sign counts, as the counted format writes it: ``A (2 as A, 1 as !A)``."""
    return f"{name} ({plain} as {name}, {negated} as !{name})"


def variable_notes_text(instance: SatInstance) -> str:
    """How many clauses hold each variable plain and negated, one line per variable.

    A derived view of the formula (nothing the formula does not say), as TicTacToe's line
    notes are of the board: the counts a reader would tally before trying values. Setting
    every variable to its more frequent sign satisfies most small planted formulas: of the
    20 held-out formulas at (3, 5, 5) and at (3, 5, 6), 20 and 16 with a tie set negated,
    18 and 18 with a tie set plain."""
    lines = ["How often each variable occurs in the clauses:"]
    for name, (plain, negated) in zip(VARIABLE_NAMES, sign_counts(instance.clauses, instance.k)):
        lines.append(f"{name}: {_times(plain)} as {name}, {_times(negated)} as !{name}")
    return "\n".join(lines) + "\n"


def _times(count: int) -> str:
    return f"{count} time" if count == 1 else f"{count} times"


def task_prompt_text(instance: SatInstance, *, answer_format: str = "bits", variable_notes: bool = False) -> str:
    """The task text for one instance (ASCII only)."""
    description, example, closing = _FORMAT_TEXT[check_answer_format(answer_format)]
    names = ", ".join(VARIABLE_NAMES[: instance.k])
    return _PROMPT.format(
        k=instance.k, l=instance.l, names=names, formula=instance.formula, answer_format=description,
        example=example, closing=closing.format(k=instance.k),
        notes=variable_notes_text(instance) if variable_notes else "",
    )


def prompt_messages(instance: SatInstance, *, answer_format: str = "bits", variable_notes: bool = False) -> list[dict[str, str]]:
    """The prompt as chat messages for trainers: a single user turn."""
    return [{"role": "user", "content": task_prompt_text(instance, answer_format=answer_format, variable_notes=variable_notes)}]


def named_assignment(text: str, k: int) -> str | None:
    """The k bits of a named answer (``"A=1 B=0 C=1"``, commas allowed) that names the first
    k variables once each in alphabetical order, else None. A parenthesised note after a name
    (the counted format's ``A (2 as A, 1 as !A)=1``) is read past, whatever it says: the
    assignment is the answer. Linear in the text (a split, no backtracking pattern): answers
    are model output, of any length."""
    tokens: list[str] = []
    for token in _NAMED_SEPARATOR.split(_ANNOTATION.sub("", text).strip()):
        if token.startswith("=") and tokens:
            tokens[-1] += token  # "A (..)=1" leaves "A" and "=1"
        else:
            tokens.append(token)
    pairs = [_NAMED_PAIR.fullmatch(token) for token in tokens]
    if len(pairs) != k or not all(pairs) or [p.group(1) for p in pairs] != list(VARIABLE_NAMES[:k]):
        return None
    return "".join(p.group(2) for p in pairs)


def score_answer(instance: SatInstance, text: Any) -> tuple[float, dict[str, Any]]:
    """(reward, info) for raw model output; never raises.

    The last boxed answer counts, as exactly k bits (``101``) or as every variable named in
    order (``A=1 B=0 C=1``). info: `answer` (boxed content or None), `assignment` (the k
    bits, or None when the answer is neither form), `satisfied_clauses`, `num_clauses`,
    `correct`, and `error` (why the answer failed, or None).
    """
    info: dict[str, Any] = {
        "answer": None, "assignment": None, "satisfied_clauses": 0,
        "num_clauses": instance.l, "correct": False, "error": None,
    }
    answer = extract_boxed(text)
    info["answer"] = answer
    if answer is None:
        info["error"] = "no \\boxed{} answer"
        return NO_ANSWER_REWARD, info
    bits = parse_assignment(answer, instance.k) or named_assignment(answer, instance.k)
    if bits is None:
        info["error"] = (f"expected exactly {instance.k} characters of 0/1 or the variables "
                         f"{VARIABLE_NAMES[0]}..{VARIABLE_NAMES[instance.k - 1]} named in order, got {answer!r}")
        return WRONG_REWARD, info
    satisfied = count_satisfied(instance.clauses, bits)
    info.update(assignment=bits, satisfied_clauses=satisfied, correct=satisfied == instance.l)
    return (CORRECT_REWARD if info["correct"] else WRONG_REWARD), info


def _exclusion_key(item: SatInstance | str | Iterable[Iterable[int]]):
    if isinstance(item, SatInstance):
        return item.key
    if isinstance(item, str):
        return canonical_key(text_to_clauses(item))
    return canonical_key([tuple(clause) for clause in item])


class SatTask(GenericTask):
    """SAT's task interface: k-bit answers, held-out formulas from the curriculum's own stream.

    `answer_format` and `variable_notes` are the env's (``SatEnv``): the held-out prompts and
    choice mode's parts follow them."""

    def __init__(self, answer_format: str = "bits", variable_notes: bool = False):
        if not isinstance(variable_notes, bool):
            raise ValueError(f"sat: variable_notes must be true or false, got {variable_notes!r}")
        self.answer_format = check_answer_format(answer_format)
        self.variable_notes = variable_notes

    def prompt_options(self) -> dict[str, Any]:
        """The `prompt_messages` keyword arguments of this task's prompts."""
        return {"answer_format": self.answer_format, "variable_notes": self.variable_notes}

    def answer_space(self, info: dict) -> tuple[str, ...]:
        """The k-bit strings, all of them when k <= 6, else 64 drawn uniformly (seeded by the
        formula). The format phase draws among them by the model's own preference, so the
        list says nothing about which assignment is right."""
        import random

        k = int(info["level"][1])
        if 2**k <= MAX_LISTED_ANSWERS:
            values = range(2**k)
        else:
            values = sorted(random.Random(info.get("formula", "")).sample(range(2**k), MAX_LISTED_ANSWERS))
        return tuple(format(i, f"0{k}b") for i in values)

    def heldout(self, env, size: int) -> list[SatInstance]:
        from curricula.sat import heldout_instances

        return heldout_instances(env.level, size=size)

    def item_messages(self, item: SatInstance) -> list[dict[str, str]]:
        return prompt_messages(item, **self.prompt_options())

    def score(self, item: SatInstance, text: str) -> tuple[float, dict]:
        return score_answer(item, text)

    def exclusions(self, levels, size: int, benchmark: str = "") -> list:
        """The held-out formulas of every level, and a benchmark folder's test and held-out formulas."""
        from curricula.sat import heldout_instances, load_benchmark_formulas

        excluded: list = [instance for level in levels for instance in heldout_instances(tuple(level), size=size)]
        if benchmark:
            excluded += load_benchmark_formulas(benchmark)
        return excluded

    def guess_rate(self, items) -> float:
        """pass@1 of a uniformly random k-bit answer: the share of assignments that satisfy."""
        return sum(min(i.num_solutions, 2**i.k) / 2**i.k for i in items) / len(items)

    def answer_parts(self, info: dict) -> AnswerParts:
        """One 0/1 choice per variable, in alphabetical order, inside ``\\boxed{}``; in the named
        format each choice follows its variable's name (``"\\boxed{A=1 B="``), in the counted
        format its name and sign counts (``"\\boxed{A (2 as A, 1 as !A)=1 B (0 as B, 3 as !B)="``)."""
        k = int(info["level"][1])
        return self._parts(k, text_to_clauses(info["formula"]) if self.answer_format == "counted" else ())

    def item_answer_parts(self, item: SatInstance) -> AnswerParts:
        return self._parts(item.k, item.clauses)

    def _parts(self, k: int, clauses) -> AnswerParts:
        labels: tuple[str, ...] = ()  # bits: no labels
        if self.answer_format == "named":
            labels = tuple(VARIABLE_NAMES[:k])
        elif self.answer_format == "counted":
            labels = tuple(counted_label(name, *counts) for name, counts in zip(VARIABLE_NAMES, sign_counts(clauses, k)))
        return AnswerParts("\\boxed{", (("0", "1"),) * k, "}", tuple(("" if i == 0 else " ") + label + "=" for i, label in enumerate(labels)))


class SatEnv(gymnasium.Env):
    """One SAT formula per episode; one step: the model's answer.

    Give either a fixed difficulty `n, k, l` (default Saturn's first level, (3, 5, 5))
    or a `curriculum` whose `level` is an (n, k, l) read at every reset. `seed` seeds the
    first reset; `reset(seed=s)` gives the same instance for the same s and level.
    `exclude` lists formulas never to draw (SatInstances, formula texts or clause
    lists), e.g. a curriculum's held-out sets. `answer_format` (``ANSWER_FORMATS``) is
    the answer the prompt asks for; `variable_notes=True` adds, below the formula, how
    often each variable occurs plain and negated (`variable_notes_text`).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        *,
        n: int | None = None,
        k: int | None = None,
        l: int | None = None,
        curriculum: Curriculum | None = None,
        seed: int | None = None,
        family: str = "planted",
        count_cap: int = DEFAULT_COUNT_CAP,
        exclude: Iterable = (),
        answer_format: str = "bits",
        variable_notes: bool = False,
    ):
        self.task_hooks = SatTask(answer_format, variable_notes)
        fixed = (n, k, l)
        if curriculum is not None and any(x is not None for x in fixed):
            raise ValueError("give either a fixed difficulty (n, k, l) or a curriculum, not both")
        if curriculum is None:
            if all(x is None for x in fixed):
                fixed = (3, 5, 5)
            elif any(x is None for x in fixed):
                raise ValueError(f"a fixed difficulty needs all of n, k, l; got n={n}, k={k}, l={l}")
            check_parameters(*fixed, family=family)
        self.fixed_level = None if curriculum is not None else tuple(fixed)
        self.curriculum = curriculum
        self.family = family
        self.count_cap = count_cap
        self.exclude = {_exclusion_key(item) for item in exclude}
        self._first_seed = seed
        self.instance: SatInstance | None = None
        self._prompt = ""
        self._done = True
        self._observation_space = None
        self._action_space = None

    @property
    def observation_space(self):
        """The prompt text (built on first use: a text space over a wide charset is slow to build,
        and trainers make and copy many task envs that never look at it)."""
        if self._observation_space is None:
            self._observation_space = text_space(MAX_TEXT_LENGTH)
        return self._observation_space

    @property
    def action_space(self):
        """The model's raw answer text (built on first use)."""
        if self._action_space is None:
            self._action_space = text_space(MAX_TEXT_LENGTH)
        return self._action_space

    @property
    def level(self) -> tuple[int, int, int]:
        """The (n, k, l) the next reset draws from."""
        level = self.fixed_level if self.curriculum is None else tuple(self.curriculum.level)
        if len(level) != 3:
            raise ValueError(f"SAT levels are (n, k, l) triples; the curriculum gave {level!r}")
        return level

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._first_seed is not None:
            seed = self._first_seed
        self._first_seed = None  # only the first reset uses the constructor's seed
        super().reset(seed=seed)
        config = SatConfig(family=self.family, stream="env", count_cap=self.count_cap).with_level(self.level).validate()
        self.instance = self._draw(config)
        self._prompt = task_prompt_text(self.instance, **self.task_hooks.prompt_options())
        self._done = False
        return self._prompt, self._reset_info()

    def _draw(self, config: SatConfig) -> SatInstance:
        """An accepted, non-excluded instance at a stream index drawn from np_random."""
        for _ in range(MAX_DRAWS):
            index = int(self.np_random.integers(0, 2**62))
            instance = sample_instance(config, index)
            if accepts(config, instance) and instance.key not in self.exclude:
                return instance
        raise RuntimeError(f"no acceptable SAT instance at {config.level} in {MAX_DRAWS} draws")

    def _reset_info(self) -> dict[str, Any]:
        instance = self.instance
        return {
            "level": instance.level, "difficulty": instance.difficulty, "formula": instance.formula,
            "num_solutions": instance.num_solutions, "num_solutions_capped": instance.num_solutions_capped,
        }

    def step(self, action: str):
        if self.instance is None or self._done:
            raise RuntimeError("SatEnv.step() called before reset() or after the episode ended")
        reward, info = score_answer(self.instance, action)
        self._done = True
        info["level"] = self.instance.level
        return self._prompt, reward, True, False, info

    def messages(self) -> list[dict[str, str]]:
        """The current prompt as chat messages."""
        if self.instance is None:
            raise RuntimeError("SatEnv.messages() called before reset()")
        return self.task_hooks.item_messages(self.instance)
