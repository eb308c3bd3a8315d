"""A difficulty curriculum controller: step up a ladder of levels as pass@1 rises.

Saturn trains at one difficulty until pass@1 on a held-out set of that difficulty
crosses a threshold, then moves to a slightly harder setting. The controller here does
that for any generator whose difficulty is a level descriptor (a tuple such as SAT's
(n, k, l), a string, a number: anything hashable and JSON-able). It owns no data: the
trainer evaluates the held-out set of the current level and calls `record`; envs read
`level` when they draw a task. Optionally it steps back when pass@1 collapses below a
floor. `state_dict()` / `load_state_dict()` make a resumed run continue where it was.
Every transition is appended to `transitions` and logged at INFO.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Hashable, Sequence

from curricula.sat import HELDOUT_SIZE, SATURN_LEVELS

logger = logging.getLogger(__name__)

SATURN_THRESHOLD = 0.75
"""Default pass@1 to leave a Saturn level. With 20 held-out instances this means at
least 15 solved. A model whose true pass@1 is 0.5 passes by luck with probability 0.02
(0.6: 0.13), while one at 0.8 passes a single evaluation with probability 0.80 and at
0.9 with 0.99: promotion is rare before a level is mostly solved, yet a level is not
held long once it is."""
SATURN_HELDOUT_SIZE = HELDOUT_SIZE
STATE_VERSION = 1


def _freeze(level: Any) -> Hashable:
    """Lists (as JSON gives them back) become tuples, so [3, 5, 5] == (3, 5, 5)."""
    if isinstance(level, (list, tuple)):
        return tuple(_freeze(item) for item in level)
    return level


def _thaw(level: Hashable) -> Any:
    """The JSON-able form of a level (tuples as lists)."""
    if isinstance(level, tuple):
        return [_thaw(item) for item in level]
    return level


@dataclasses.dataclass(frozen=True)
class Transition:
    """One move between levels, and the evaluation that caused it."""

    evaluation: int
    """Number of evaluations recorded before this one (its position in `evaluations`)."""
    from_index: int
    to_index: int
    from_level: Any
    to_level: Any
    reason: str
    """"advance" (pass@1 >= threshold) or "retreat" (pass@1 < floor)."""
    pass_at_1: float


class Curriculum:
    """Tracks pass@1 per level and moves between `levels` (easiest first).

    threshold: advance when pass@1 at the current level is >= this for `patience`
        consecutive evaluations of that level.
    floor: if set, retreat one level when pass@1 at the current level is < floor for
        `patience` consecutive evaluations (never below the first level).
    heldout_size: the number of held-out tasks per level callers should evaluate; kept
        here so that a preset carries it.
    """

    def __init__(
        self,
        levels: Sequence[Any],
        *,
        threshold: float,
        floor: float | None = None,
        patience: int = 1,
        heldout_size: int | None = None,
    ):
        self.levels = [_freeze(level) for level in levels]
        if not self.levels:
            raise ValueError("a curriculum needs at least one level")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"curriculum levels must be distinct, got {self.levels}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if floor is not None and not 0.0 <= floor < threshold:
            raise ValueError(f"floor must be in [0, threshold={threshold}), got {floor}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.threshold = threshold
        self.floor = floor
        self.patience = patience
        self.heldout_size = heldout_size
        self.index = 0
        self.evaluations: list[dict] = []
        self.transitions: list[Transition] = []
        self._above = 0  # consecutive evaluations of the current level at/above threshold
        self._below = 0  # ... and below floor

    @property
    def level(self) -> Any:
        """The level tasks should be drawn from now."""
        return self.levels[self.index]

    @property
    def is_last(self) -> bool:
        return self.index == len(self.levels) - 1

    def level_index(self, level: Any) -> int:
        """Position of `level` in the ladder; ValueError naming the levels if absent."""
        frozen = _freeze(level)
        try:
            return self.levels.index(frozen)
        except ValueError:
            raise ValueError(f"unknown level {level!r}; levels are {self.levels}") from None

    def pass_at_1(self, level: Any) -> float | None:
        """The latest pass@1 recorded for `level`, or None if never evaluated."""
        index = self.level_index(level)
        for evaluation in reversed(self.evaluations):
            if evaluation["level_index"] == index:
                return evaluation["pass_at_1"]
        return None

    def record(self, level: Any, successes: Sequence[float]) -> Transition | None:
        """Record one held-out evaluation of `level`; move if the rules say so.

        `successes` holds one number in [0, 1] per held-out task (a bool, or the
        fraction of correct samples), so pass@1 is their mean. Evaluations of a level
        other than the current one are tracked but never cause a move.
        """
        index = self.level_index(level)
        values = [float(s) for s in successes]
        if not values:
            raise ValueError("record() needs at least one success value")
        if any(not 0.0 <= v <= 1.0 for v in values):
            raise ValueError("success values must lie in [0, 1]")
        pass_at_1 = sum(values) / len(values)
        self.evaluations.append(
            {"level_index": index, "level": _thaw(self.levels[index]), "pass_at_1": pass_at_1, "num_tasks": len(values)}
        )
        if index != self.index:
            return None
        self._above = self._above + 1 if pass_at_1 >= self.threshold else 0
        self._below = self._below + 1 if self.floor is not None and pass_at_1 < self.floor else 0
        if self._above >= self.patience and not self.is_last:
            return self._move(self.index + 1, "advance", pass_at_1)
        if self._below >= self.patience and self.index > 0:
            return self._move(self.index - 1, "retreat", pass_at_1)
        return None

    def _move(self, to_index: int, reason: str, pass_at_1: float) -> Transition:
        transition = Transition(
            evaluation=len(self.evaluations) - 1,
            from_index=self.index,
            to_index=to_index,
            from_level=_thaw(self.levels[self.index]),
            to_level=_thaw(self.levels[to_index]),
            reason=reason,
            pass_at_1=pass_at_1,
        )
        self.transitions.append(transition)
        self.index = to_index
        self._above = self._below = 0
        logger.info(
            "curriculum %s: level %s -> %s (pass@1 %.3f, threshold %s, floor %s)",
            reason, transition.from_level, transition.to_level, pass_at_1, self.threshold, self.floor,
        )
        return transition

    def state_dict(self) -> dict:
        """Everything needed to resume, as JSON-able data (settings included)."""
        return {
            "version": STATE_VERSION,
            "levels": [_thaw(level) for level in self.levels],
            "threshold": self.threshold,
            "floor": self.floor,
            "patience": self.patience,
            "heldout_size": self.heldout_size,
            "index": self.index,
            "above": self._above,
            "below": self._below,
            "evaluations": [dict(e) for e in self.evaluations],
            "transitions": [dataclasses.asdict(t) for t in self.transitions],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` output; the level ladder must be the same."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"curriculum state version {state.get('version')!r}; expected {STATE_VERSION}")
        levels = [_freeze(level) for level in state["levels"]]
        if levels != self.levels:
            raise ValueError(f"saved curriculum has levels {levels}, this one has {self.levels}")
        self.threshold = state["threshold"]
        self.floor = state["floor"]
        self.patience = state["patience"]
        self.heldout_size = state["heldout_size"]
        self.index = state["index"]
        self._above = state["above"]
        self._below = state["below"]
        self.evaluations = [dict(e) for e in state["evaluations"]]
        self.transitions = [Transition(**t) for t in state["transitions"]]


def saturn_curriculum(
    *, threshold: float = SATURN_THRESHOLD, floor: float | None = None, patience: int = 1
) -> Curriculum:
    """Saturn's schedule: SAT levels (n, k, l) ordered by D from (3,5,5), 20 held-out each."""
    return Curriculum(
        SATURN_LEVELS, threshold=threshold, floor=floor, patience=patience, heldout_size=SATURN_HELDOUT_SIZE
    )
