"""Answer extraction from raw model output.

Forgiving about form (case, whitespace, `\\boxed{}` vs brackets, `\\text{}` wrappers),
strict about content: an answer counts only if it names exactly one legal action.
No function here raises on any input string; "no answer" is `None`.

Every function is linear in the length of its input: a model's output is untrusted and
may be megabytes of braces, so each extraction is one left-to-right pass with a stack of
open braces (never a rescan per `\\boxed` or per nesting level).
"""

from __future__ import annotations

import re
from typing import Mapping

_BOXED = "\\boxed"
# One token per match: a `\boxed{` opener (spaces allowed before the brace) or a brace.
_BOXED_TOKENS = re.compile(r"\\boxed *\{|[{}]")
# One token per match: a wrapper opener such as `\textbf {` or a brace.
_WRAPPER_TOKENS = re.compile(r"\\(?:textbf|texttt|text|mathrm)\s*\{|[{}]")
_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_WHITESPACE = re.compile(r"\s+")


def extract_boxed(text: str) -> str | None:
    """Content of the last brace-matched `\\boxed{...}`, `\\text{}` unwrapped; else None.

    "Last" is by where the `\\boxed` starts, so a box nested in a box wins over it; a
    `\\boxed{` whose brace never closes is skipped in favour of an earlier complete one.
    """
    if not isinstance(text, str):
        return None
    span = _last_boxed_span(text)
    if span is None:
        return None
    content = text[span[0] : span[1]]
    return (_unwrap_text_commands(content) if "\\" in content else content).strip()


def _last_boxed_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the content of the last `\\boxed{...}` whose braces balance."""
    first = text.find(_BOXED)
    if first == -1:
        return None
    # Braces before the first `\boxed` cannot change which brace closes a box.
    open_braces: list[tuple[int, bool]] = []  # (content start, opened by \boxed)
    best: tuple[int, int] | None = None
    for token in _BOXED_TOKENS.finditer(text, first):
        if token.group() == "}":
            if open_braces:
                start, is_boxed = open_braces.pop()
                if is_boxed and (best is None or start > best[0]):
                    best = (start, token.start())
        else:
            open_braces.append((token.end(), token.group() != "{"))
    return best


def _unwrap_text_commands(content: str) -> str:
    """`content` with `\\text{x}`, `\\textbf{x}`, `\\mathrm{x}`, `\\texttt{x}` replaced by x.

    Wrappers nest and unwrap from the inside out; a wrapper is removed only when what
    it holds, once unwrapped, has no braces left (so `\\text{a{b}}` stays as written).
    What unwrapping leaves is not read again as markup.
    """
    pieces: list[str] = []
    # one frame per open brace: [index of its opener in pieces, opened by a wrapper,
    # holds a brace that stays in the output]
    frames: list[list] = []
    written = 0
    for token in _WRAPPER_TOKENS.finditer(content):
        pieces.append(content[written : token.start()])
        written = token.end()
        brace = token.group()
        if brace != "}":
            frames.append([len(pieces), brace != "{", False])
            pieces.append(brace)
            continue
        if frames:
            opener_index, is_wrapper, holds_brace = frames.pop()
            if is_wrapper and not holds_brace:
                pieces[opener_index] = ""
                continue
            if frames:
                frames[-1][2] = True
        pieces.append("}")
    pieces.append(content[written:])
    return "".join(pieces)


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
