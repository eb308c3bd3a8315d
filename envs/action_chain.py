"""A turn with many legal actions, asked as a chain of small choices instead of one big one.

Simple Negotiation's first turn has 200 legal offers. Choice mode that scores every one
pays 200 continuations a turn and a prompt that lists them all (6,300 characters). Here the
legal action strings are split into segments at spaces (``"[Offer:"``, ``" 3"``,
``" Wood"``, ``" ->"``, ``" 5"``, ``" Gold]"``) and kept as a trie: an answer is a walk
from the root, one choice at every node with more than one child (what to give and how
much, how much to get), and a node with one child is followed without asking. A choice
and the next one are asked as one while that keeps it to `MERGED_UP_TO` options, so an
offer is two rounds (``[Accept]``, ``[Deny]`` or ``[Offer: 3 Wood``; then ``5``), not
four. Only legal actions can be reached, and any game's action strings chain the same way,
with no per-game code.

Segments start at a space, so the text of a choice's candidates (the answer so far plus
each next segment) tokenises as the answer so far followed by the segment's own tokens
(byte-level BPE tokenisers such as SmolLM2's never merge across a space that starts a
word): the shared part scores the same in every candidate and the softmax over them is the
model's probability of the next segment. An action that is also the start of a longer one
ends with an empty segment, so it is a choice like any other.

`describe_actions` writes the prompt line for such a turn: actions that differ only in
their numbers are written once as a pattern with the numbers' ranges, when the pattern's
actions are exactly every combination of those numbers, and listed otherwise.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

CHAIN_ABOVE = 16
"""Choice mode chains a turn with more legal actions than this (``choice_chain=auto``); a
turn with fewer is one choice among all its actions (Kuhn Poker's 2, Tic-Tac-Toe's 9)."""

MERGED_UP_TO = 32
"""A chained turn asks two consecutive choices as one while the merged choice has at most this
many options (`ActionChain._options`): a negotiation offer is two rounds, ``[Accept]``,
``[Deny]`` or ``[Offer: 3 Wood`` (22 options), then the amount asked (10), not four. Every
round is one forward through the model per batch of prompts, which on a CPU costs the
weights' streaming (some 70 ms for SmolLM2-135M) whatever its few tokens, while the merged
options add only the tokens of their trie."""

_SEGMENT = re.compile(r"\s*\S+")
_NUMBER = re.compile(r"\d+")
_SLOT_NAMES = "NMKLPQ"


def segments(action: str) -> list[str]:
    """`action` cut before every run of spaces: ``"[Offer: 3 Wood"`` -> ``["[Offer:", " 3", " Wood"]``."""
    parts = _SEGMENT.findall(action)
    tail = action[sum(map(len, parts)):]
    if tail:  # trailing spaces stay on the last segment, so the segments spell the action
        parts[-1] += tail
    return parts or [action]


class ActionChain:
    """The legal action strings of one turn as a trie of segments (see the module docstring)."""

    __slots__ = ("actions", "_root", "_options_of")

    def __init__(self, actions: Sequence[str]):
        if len(set(actions)) != len(actions):
            raise ValueError("action strings must be distinct to be chained")
        self.actions = tuple(actions)
        self._root: dict = {}
        self._options_of: dict[int, list[tuple[tuple[str, ...], dict | int]]] = {}
        for index, action in enumerate(self.actions):
            node = self._root
            for segment in segments(action):
                node = node.setdefault(segment, {})
            node[""] = index  # the end of an action: its index among `actions`

    def next_options(self, picks: Sequence[int]) -> tuple[str, tuple[str, ...]] | None:
        """``(text so far, options of the next choice)`` after `picks`, or None once an action is spelled."""
        text, node = self._walk(picks)
        return None if isinstance(node, int) else (text, tuple("".join(path) for path, _ in self._options(node)))

    def spell(self, picks: Sequence[int]) -> str:
        """The action `picks` spells (every choice made)."""
        return self.actions[self.action_index(picks)]

    def action_index(self, picks: Sequence[int]) -> int:
        """The index among `actions` of the action `picks` spells."""
        _, node = self._walk(picks)
        if not isinstance(node, int):
            raise ValueError(f"{len(picks)} picks leave the action unfinished")
        return node

    def picks_of(self, action: str) -> tuple[int, ...]:
        """The picks that spell `action` (one of `actions`): the inverse of `spell`."""
        if action not in self.actions:
            raise ValueError(f"{action!r} is not one of this chain's actions")
        forced, node = _forced(self._root)
        left, picks = (*segments(action), "")[len(forced):], []
        while not isinstance(node, int):
            pick, (path, child) = next((k, o) for k, o in enumerate(self._options(node)) if left[: len(o[0])] == o[0])
            forced, node = _forced(child)
            picks.append(pick)
            left = left[len(path) + len(forced):]
        return tuple(picks)

    def _walk(self, picks: Sequence[int]) -> tuple[str, dict | int]:
        """Follow `picks` from the root, through every node that has one child; return the
        text spelled and the node reached (a branching node, or an action's index)."""
        forced, node = _forced(self._root)
        text = "".join(forced)
        for pick in picks:
            if isinstance(node, int):
                raise ValueError(f"{len(picks)} picks are more than this action needs")
            path, child = self._options(node)[pick]
            forced, node = _forced(child)
            text += "".join(path) + "".join(forced)
        return text, node

    def _options(self, node: dict) -> list[tuple[tuple[str, ...], dict | int]]:
        """The options of the choice at a branching `node`: (segments, the node below them).

        While every option that leads to a further choice can take that choice too (through
        the nodes with one child between them) and the options stay at most `MERGED_UP_TO`,
        the two choices are asked as one."""
        known = self._options_of.get(id(node))
        if known is not None:
            return known
        options = [((segment,), child) for segment, child in node.items()]
        while True:
            merged = []
            for path, child in options:
                forced, below = _forced(child)
                if isinstance(below, int):
                    merged.append((path, child))
                else:
                    merged += [((*path, *forced, segment), grandchild) for segment, grandchild in below.items()]
            if len(merged) == len(options) or len(merged) > MERGED_UP_TO:
                break
            options = merged
        self._options_of[id(node)] = options
        return options


def _forced(node: dict | int) -> tuple[tuple[str, ...], dict | int]:
    """The segments below `node` through the nodes that have one child, and the node reached
    (one that branches, or an action's index)."""
    path: tuple[str, ...] = ()
    while not isinstance(node, int) and len(node) == 1:
        segment = next(iter(node))
        path, node = (*path, segment), node[segment]
    return path, node


def describe_actions(actions: Sequence[str]) -> str:
    """The legal actions in a few patterns: ``"[Accept], [Offer: N Wood -> M Gold] (N from 1 to 10; M from 1 to 5)"``.

    Patterns listed one after another whose slots take the same numbers share one range
    note, and slots with the same numbers share one name list: ``"[Offer: N Gold -> M Wood],
    [Offer: N Wood -> M Gold] (N, M from 1 to 10)"``. Every prompt of a chained turn carries
    this line, so each token saved here is saved on every turn."""
    groups: dict[str, list[tuple[int, ...]]] = {}
    for action in actions:
        groups.setdefault(_NUMBER.sub("#", action), []).append(tuple(int(n) for n in _NUMBER.findall(action)))
    described: list[tuple[list[str], str]] = []  # (patterns, their shared range note); "" for listed actions
    for pattern, values in groups.items():
        slots = len(values[0])
        if len(values) == 1 or not 0 < slots <= len(_SLOT_NAMES) or not _is_full_product(values):
            described += [([_fill(pattern, v)], "") for v in values]
            continue
        note = _ranges_note([sorted({v[i] for v in values}) for i in range(slots)])
        filled = _fill(pattern, _SLOT_NAMES[:slots])
        if described and described[-1][1] == note:
            described[-1][0].append(filled)
        else:
            described.append(([filled], note))
    return ", ".join(", ".join(patterns) + (f" ({note})" if note else "") for patterns, note in described)


def _ranges_note(numbers_per_slot: list[list[int]]) -> str:
    """``N, M from 1 to 10`` when every slot takes the same numbers, else ``N from 1 to 10; M from 1 to 5``."""
    names = _SLOT_NAMES[: len(numbers_per_slot)]
    if all(numbers == numbers_per_slot[0] for numbers in numbers_per_slot):
        return f"{', '.join(names)} {_range_text(numbers_per_slot[0])}"
    return "; ".join(f"{name} {_range_text(numbers)}" for name, numbers in zip(names, numbers_per_slot))


def _fill(pattern: str, values: Sequence) -> str:
    pieces = pattern.split("#")
    return "".join(p + str(v) for p, v in zip(pieces, values)) + pieces[-1]


def _is_full_product(values: list[tuple[int, ...]]) -> bool:
    """Whether `values` are every combination of the numbers each slot takes (and nothing twice)."""
    per_slot = [sorted({v[i] for v in values}) for i in range(len(values[0]))]
    return len(set(values)) == len(values) and set(values) == set(itertools.product(*per_slot))


def _range_text(numbers: list[int]) -> str:
    """``from 1 to 10`` for a run of consecutive numbers, else ``one of 1, 3, 7``."""
    if len(numbers) > 2 and numbers[-1] - numbers[0] == len(numbers) - 1:
        return f"from {numbers[0]} to {numbers[-1]}"
    return "one of " + ", ".join(map(str, numbers))
