"""The text protocol shared by every game environment.

One place decides what a model reads and how its answer is understood:

* `render_prompt` builds the prompt for the player to move: the rules in brief, the
  player's observation, the legal actions as text and the answer format for the mode.
* Modes: ``think`` (reason, then give the final answer in ``\\boxed{}``), ``direct``
  (answer only) and ``choice`` (the model's output is one of the legal action strings:
  the env hands out the candidates in `TurnPrompt.choices`, a policy scores them, and
  the chosen string is accepted like any other answer; vLLM calls this a guided choice).
  A choice turn with more than `CHAIN_ABOVE` legal actions is *chained*
  (``choice_chain="auto"``): the policy answers it as a chain of small choices over the
  actions' segments and the prompt describes the actions in patterns instead of listing
  them (``envs.action_chain``); ``TurnPrompt.chained`` says so. A chained turn's prompt
  puts the answer format and that description before the observation, not after it:
  the patterns barely change from turn to turn, so placed there they join the prefix
  that many turns' prompts share, which the rollout and the learner run once for them
  all, and each turn's own tokens are its observation only.
* `TurnPrompt.parse` (and `parse_action`) turns raw model output into a legal action id or a reason why not. It
  never raises: unparseable output is an invalid action with a defined consequence (see
  `envs.invalid`). `describe_error` writes the retry feedback, quoting at most
  `MAX_QUOTED_ANSWER_CHARS` of the rejected answer.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

from envs.action_chain import CHAIN_ABOVE, describe_actions
from envs.parsing import extract_answer, legal_action_index, normalize_action_text

MODES = ("think", "direct", "choice")
CHOICE_CHAIN = ("auto", "off")
"""``auto``: chain the choice turns with more than `CHAIN_ABOVE` legal actions; ``off``: never."""
MAX_QUOTED_ANSWER_CHARS = 200
"""Feedback quotes at most this much of a rejected answer, so a retry prompt stays short
however long the answer was."""

_ANSWER_FORMAT = {
    "think": (
        "Think step by step about the best move. Then give your final answer as one "
        "of the legal actions inside \\boxed{{}}, for example \\boxed{{{example}}}."
    ),
    "direct": (
        "Reply with your move only: one of the legal actions inside \\boxed{{}}, "
        "for example \\boxed{{{example}}}. Do not explain."
    ),
    "choice": "Reply with exactly one of the legal actions, written as listed.",
}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
    return mode


class TurnPrompt:
    """Everything a policy needs for one turn of one player, and the answer reader.

    Attributes:
        text: the full prompt, sent as a single user message.
        choices: the legal actions as canonical strings (the candidates in ``choice`` mode).
        action_ids: ``action_ids[i]`` is the action id of ``choices[i]``.
        chained: choice mode answers this turn as a chain of small choices
            (``envs.action_chain``), and the text describes the actions rather than lists them.
    """

    __slots__ = ("text", "choices", "action_ids", "chained", "_exact", "_normalized")

    def __init__(self, text: str, choices: tuple[str, ...], action_ids: tuple[int, ...], chained: bool = False):
        self.text = text
        self.choices = choices
        self.action_ids = action_ids
        self.chained = chained
        self._exact = dict(zip(choices, action_ids))
        self._normalized: dict[str, int] | None = None

    def messages(self) -> list[dict[str, str]]:
        """The prompt as chat messages (what chat templates consume)."""
        return [{"role": "user", "content": self.text}]

    def parse(self, text: object) -> "ParsedAction":
        """Read raw model output: the legal action it names, or why it names none."""
        if not isinstance(text, str):
            return ParsedAction(None, None, "unparseable")
        answer = extract_answer(text)
        if answer is None:
            return ParsedAction(None, None, "unparseable")
        # fast path: the answer is written exactly as listed (with or without brackets)
        action = self._exact.get(answer)
        if action is None:
            action = self._exact.get("[" + answer + "]")
        if action is None:
            if self._normalized is None:
                self._normalized = legal_action_index(dict(zip(self.action_ids, self.choices)))
            action = self._normalized.get(normalize_action_text(answer))
        if action is None:
            return ParsedAction(None, answer, "illegal")
        return ParsedAction(action, answer, None)

    def __repr__(self) -> str:
        return f"TurnPrompt(choices={self.choices!r})"


def check_choice_chain(choice_chain: str) -> str:
    if choice_chain not in CHOICE_CHAIN:
        raise ValueError(f"unknown choice_chain {choice_chain!r}; valid: {', '.join(CHOICE_CHAIN)}")
    return choice_chain


class PromptTemplate:
    """A game's prompt with its fixed parts (title, rules, mode) assembled once."""

    __slots__ = ("mode", "chain_above", "_header", "_answer_format", "_formatted")

    def __init__(self, *, title: str, rules: str, mode: str, choice_chain: str = "auto"):
        self.mode = check_mode(mode)
        chains = mode == "choice" and check_choice_chain(choice_chain) == "auto"
        self.chain_above = CHAIN_ABOVE if chains else None  # None: no turn is chained
        self._header = f"You are playing {title}.\n{rules}\n\n" if rules else f"You are playing {title}.\n\n"
        self._answer_format = _ANSWER_FORMAT[mode]
        self._formatted: dict[str, str] = {}  # answer format per example action

    def render(
        self,
        observation: str,
        action_ids: tuple[int, ...],
        choices: tuple[str, ...],
        feedback: str = "",
        note: str = "",
        *,
        actions_text: str = "",
    ) -> TurnPrompt:
        """The prompt for one turn; `choices[i]` is the canonical string of `action_ids[i]`.

        `feedback` (e.g. why the previous answer was rejected) goes just before the
        answer format, where a model is most likely to read it; `note` (the state's
        `decision_note`) goes after it, the prompt's last line. A chained turn puts the
        answer format and the actions' patterns right after the rules (see the module
        docstring), then the observation, the feedback and the note; `actions_text` (the
        state's `legal_actions_text`), when given, replaces the derived patterns there.
        """
        chained = self.chain_above is not None and len(choices) > self.chain_above
        listed = (actions_text or describe_actions(choices)) if chained else ", ".join(choices)
        example = choices[0] if choices else ""
        answer_format = self._formatted.get(example)
        if answer_format is None:
            answer_format = self._formatted[example] = self._answer_format.format(example=example)
        if chained:
            text = (
                f"{self._header}{answer_format}\nLegal actions: {listed}\n\n{observation}"
                f"{chr(10) + feedback if feedback else ''}{chr(10) + note if note else ''}"
            )
        else:
            text = (
                f"{self._header}{observation}\n\nLegal actions: {listed}\n"
                f"{feedback + chr(10) if feedback else ''}{answer_format}"
                f"{chr(10) + note if note else ''}"
            )
        return TurnPrompt(text, choices, action_ids, chained)


def render_prompt(
    *,
    title: str,
    rules: str,
    observation: str,
    legal_actions: Mapping[int, str],
    mode: str,
    feedback: str = "",
) -> TurnPrompt:
    """One-off form of `PromptTemplate(...).render(...)`; `legal_actions`: id -> string."""
    template = PromptTemplate(title=title, rules=rules, mode=mode)
    return template.render(observation, tuple(legal_actions), tuple(legal_actions.values()), feedback)


class ParsedAction(NamedTuple):
    """Result of reading one model output."""

    action: int | None
    """The legal action named, or None when the output is invalid."""
    answer: str | None
    """The extracted answer text (None when nothing could be extracted)."""
    error: str | None
    """None when valid; "unparseable" (no answer found) or "illegal" (not a legal action)."""


def parse_action(text: object, legal_actions: Mapping[int, str]) -> ParsedAction:
    """Read raw model output against `legal_actions` (action id -> canonical string)."""
    return TurnPrompt("", tuple(legal_actions.values()), tuple(legal_actions)).parse(text)


def describe_error(parsed: ParsedAction, choices: Sequence[str]) -> str:
    """Feedback text for a rejected answer (used when a retry is allowed)."""
    listed = ", ".join(choices)
    if parsed.error == "unparseable":
        return f"Your previous reply contained no answer. Answer with one of: {listed}."
    return f"Your previous answer {_quote_answer(parsed.answer)} is not a legal action. Choose one of: {listed}."


def _quote_answer(answer: str) -> str:
    """`answer` as a quoted literal, cut after `MAX_QUOTED_ANSWER_CHARS` characters."""
    if len(answer) <= MAX_QUOTED_ANSWER_CHARS:
        return repr(answer)
    return f"{answer[:MAX_QUOTED_ANSWER_CHARS]!r}... (cut; {len(answer)} characters in all)"
