"""Curriculum controller: transitions, retreat, state round trip, the Saturn preset."""

from __future__ import annotations

import json
import logging

import pytest

from curricula.curriculum import SATURN_THRESHOLD, Curriculum, Transition, saturn_curriculum
from curricula.sat import SATURN_LEVELS


def test_advances_when_pass_at_1_reaches_threshold():
    curriculum = Curriculum(["easy", "medium", "hard"], threshold=0.75)
    assert curriculum.record("easy", [1] * 14 + [0] * 6) is None  # 0.70
    assert curriculum.level == "easy"
    transition = curriculum.record("easy", [1] * 15 + [0] * 5)  # 0.75
    assert transition == Transition(1, 0, 1, "easy", "medium", "advance", 0.75)
    assert curriculum.level == "medium"
    assert curriculum.transitions == [transition]


def test_fractions_of_samples_average_to_pass_at_1():
    curriculum = Curriculum([1, 2], threshold=0.5)
    curriculum.record(1, [0.25, 0.75, 0.5, 0.5])
    assert curriculum.pass_at_1(1) == 0.5 and curriculum.level == 2


def test_other_levels_are_tracked_but_never_move():
    curriculum = Curriculum(["a", "b", "c"], threshold=0.5, floor=0.2)
    assert curriculum.record("c", [1, 1]) is None
    assert curriculum.level == "a" and curriculum.pass_at_1("c") == 1.0
    assert curriculum.pass_at_1("b") is None


def test_stays_at_last_level():
    curriculum = Curriculum(["a", "b"], threshold=0.5)
    curriculum.record("a", [1])
    assert curriculum.is_last
    assert curriculum.record("b", [1]) is None and curriculum.level == "b"


def test_retreats_below_floor_after_patience():
    curriculum = Curriculum([(3, 5, 5), (3, 5, 6)], threshold=0.8, floor=0.2, patience=2)
    curriculum.record((3, 5, 5), [1, 1])
    assert curriculum.level == (3, 5, 5)  # patience 2: one pass is not enough
    curriculum.record([3, 5, 5], [1, 1])  # lists (from JSON) name the same level
    assert curriculum.level == (3, 5, 6)
    curriculum.record((3, 5, 6), [0, 0, 0, 0, 1])  # 0.2 is not below the floor
    curriculum.record((3, 5, 6), [0, 0, 0, 0, 0])
    assert curriculum.level == (3, 5, 6)
    transition = curriculum.record((3, 5, 6), [0] * 10)
    assert curriculum.level == (3, 5, 5)
    assert (transition.reason, transition.from_level, transition.to_level) == ("retreat", [3, 5, 6], [3, 5, 5])
    assert [t.reason for t in curriculum.transitions] == ["advance", "retreat"]


def test_no_retreat_without_floor_or_below_first_level():
    curriculum = Curriculum(["a", "b"], threshold=0.5, floor=0.1)
    assert curriculum.record("a", [0, 0]) is None and curriculum.level == "a"
    curriculum = Curriculum(["a", "b"], threshold=0.5)
    curriculum.record("a", [1])
    assert curriculum.record("b", [0]) is None and curriculum.level == "b"


def test_transitions_are_logged(caplog):
    curriculum = Curriculum(["a", "b"], threshold=0.5)
    with caplog.at_level(logging.INFO, logger="curricula.curriculum"):
        curriculum.record("a", [1, 1])
    assert "advance" in caplog.text and "a -> b" in caplog.text


def test_state_dict_round_trip_through_json():
    curriculum = saturn_curriculum(floor=0.1, patience=2)
    for successes in ([1] * 20, [1] * 20, [0] * 20, [0] * 20, [1] * 16 + [0] * 4):
        curriculum.record(curriculum.level, successes)
    state = json.loads(json.dumps(curriculum.state_dict()))
    resumed = saturn_curriculum()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == curriculum.state_dict()
    assert resumed.level == curriculum.level and resumed.transitions == curriculum.transitions
    # the resumed controller keeps the pending streak: one more pass moves both alike
    assert resumed.record(resumed.level, [1] * 20) == curriculum.record(curriculum.level, [1] * 20)


def test_load_rejects_other_levels():
    state = Curriculum(["a", "b"], threshold=0.5).state_dict()
    with pytest.raises(ValueError, match="levels"):
        Curriculum(["a", "c"], threshold=0.5).load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(levels=[], threshold=0.5), "at least one level"),
        (dict(levels=["a", "a"], threshold=0.5), "distinct"),
        (dict(levels=["a"], threshold=0.0), "threshold"),
        (dict(levels=["a"], threshold=0.5, floor=0.6), "floor"),
        (dict(levels=["a"], threshold=0.5, patience=0), "patience"),
    ],
)
def test_bad_settings(kwargs, message):
    levels = kwargs.pop("levels")
    with pytest.raises(ValueError, match=message):
        Curriculum(levels, **kwargs)


def test_bad_records():
    curriculum = Curriculum(["a"], threshold=0.5)
    with pytest.raises(ValueError, match="unknown level"):
        curriculum.record("z", [1])
    with pytest.raises(ValueError, match="at least one"):
        curriculum.record("a", [])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        curriculum.record("a", [2])


def test_saturn_preset():
    curriculum = saturn_curriculum()
    assert curriculum.level == (3, 5, 5) and curriculum.levels == SATURN_LEVELS
    assert curriculum.heldout_size == 20 and curriculum.threshold == SATURN_THRESHOLD
    curriculum.record((3, 5, 5), [1] * 15 + [0] * 5)
    assert curriculum.level == (3, 5, 6)
