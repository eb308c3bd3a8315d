"""Answer extraction from raw model output.

Forgiving about form (case, whitespace, `\\boxed{}` vs brackets, `\\text{}` wrappers),
strict about content: an answer counts only if it names exactly one legal action.
No function here raises on any input string; "no answer" is `None`.
"""

from __future__ import annotations

import re
from typing import Mapping

_BOXED = "\\boxed"
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|texttt)\s*\{([^{}]*)\}")
_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_WHITESPACE = re.compile(r"\s+")


def extract_boxed(text: str) -> str | None:
    """Content of the last brace-matched `\\boxed{...}`, `\\text{}` unwrapped; else None."""
    if not isinstance(text, str):
        return None
    start = text.rfind(_BOXED)
    while start != -1:
        content = _brace_content(text, start + len(_BOXED))
        if content is not None:
            return (_unwrap_text(content) if "\\" in content else content).strip()
        start = text.rfind(_BOXED, 0, start)
    return None


def _brace_content(text: str, position: int) -> str | None:
    """The text inside the balanced `{...}` that opens at `position` (spaces allowed)."""
    while position < len(text) and text[position] == " ":
        position += 1
    if position >= len(text) or text[position] != "{":
        return None
    close = text.find("}", position)
    if close != -1 and text.find("{", position + 1, close) == -1:
        return text[position + 1 : close]  # no nested braces: the common case, no scan
    depth = 0
    for index in range(position, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[position + 1 : index]
    return None


def _unwrap_text(content: str) -> str:
    previous = None
    while previous != content:  # nested wrappers unwrap from the inside out
        previous, content = content, _TEXT_WRAPPER.sub(r"\1", content)
    return content


def extract_answer(text: str) -> str | None:
    """The model's final answer: the last `\\boxed{...}`, else the last `[...]`; else None."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    if not isinstance(text, str):
        return None
    matches = _BRACKETED.findall(text)
    return matches[-1].strip() if matches else None


def normalize_action_text(text: str) -> str:
    """Canonical comparison key: no outer brackets, no whitespace, lower case."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return _WHITESPACE.sub("", text).lower()


def match_action(text: str, legal: Mapping[str, int]) -> int | None:
    """The legal action named by `text`, or None.

    `legal` maps `normalize_action_text(action string)` to the action id (see
    `legal_action_index`). `text` is raw model output; its extracted answer must
    name one legal action exactly, up to case and whitespace.
    """
    answer = extract_answer(text)
    if answer is None:
        return None
    return legal.get(normalize_action_text(answer))


def legal_action_index(action_strings: Mapping[int, str]) -> dict[str, int]:
    """`{normalized text: action id}` for `{action id: canonical string}`."""
    return {normalize_action_text(s): a for a, s in action_strings.items()}
