"""SAT generator: instances checked independently (another solver, brute force)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pysat.solvers import Solver

from curricula.sat import (
    SATURN_LEVELS,
    SATURN_TEST_BUCKETS,
    SatConfig,
    SatInstance,
    canonical_key,
    check_assignment,
    clauses_for_ratio,
    clauses_to_text,
    count_models,
    difficulty,
    generate_instances,
    heldout_instances,
    max_clauses,
    sample_instance,
    text_to_clauses,
)


def brute_force_count(clauses, k):
    return sum(
        all(any(bits[abs(x) - 1] == (x > 0) for x in clause) for clause in clauses)
        for bits in itertools.product([False, True], repeat=k)
    )


def glucose_satisfiable(clauses):
    with Solver(name="glucose4", bootstrap_with=[list(c) for c in clauses]) as solver:
        return solver.solve()


@pytest.mark.parametrize("level", [(3, 5, 5), (3, 5, 20), (4, 7, 20), (6, 7, 40), (3, 7, 40)])
def test_planted_instances_are_well_formed_and_counted_exactly(level):
    n, k, l = level
    for instance in generate_instances(SatConfig(seed=3).with_level(level), 15):
        assert len(instance.clauses) == l == len(set(instance.clauses))
        for clause in instance.clauses:
            assert len(clause) == n == len({abs(x) for x in clause})
            assert all(1 <= abs(x) <= k for x in clause)
        assert glucose_satisfiable(instance.clauses)
        assert check_assignment(instance.clauses, instance.solution, k)
        assert instance.num_solutions == brute_force_count(instance.clauses, k)
        assert not instance.num_solutions_capped


def test_published_difficulties():
    published = [8.62, 9.20, 9.63, 10.23, 10.24, 10.28, 10.78, 11.20, 11.64, 12.78]
    assert [round(difficulty(*b), 2) for b in SATURN_TEST_BUCKETS] == published


def test_levels_start_at_3_5_5_and_rise_in_difficulty():
    assert SATURN_LEVELS[0] == (3, 5, 5)
    ds = [difficulty(*level) for level in SATURN_LEVELS]
    assert ds == sorted(ds)
    assert {(3, 5, 6), (3, 5, 13), (3, 5, 15)} <= set(SATURN_LEVELS)


def test_item_is_independent_of_how_many_are_generated():
    config = SatConfig(n=3, k=5, l=20, seed=7)
    few = list(generate_instances(config, 5))
    many = list(generate_instances(config, 40))
    assert many[:5] == few
    assert sample_instance(config, few[3].index) == few[3]
    assert list(generate_instances(SatConfig(n=3, k=5, l=20, seed=8), 5)) != few


def test_streams_and_seeds_differ():
    a = sample_instance(SatConfig(stream="train"), 0)
    b = sample_instance(SatConfig(stream="test"), 0)
    assert a.clauses != b.clauses


def test_deduplication_within_and_across_calls():
    config = SatConfig(n=2, k=3, l=3, seed=0)  # only C(9, 3) = 84 clause sets exist
    seen: set = set()
    first = list(generate_instances(config, 30, seen=seen))
    second = list(generate_instances(config.with_level((2, 3, 3)), 20, seen=seen, start=first[-1].index + 1))
    keys = [canonical_key(i.clauses) for i in first + second]
    assert len(set(keys)) == 50
    assert first[-1].index >= 29


def test_exhausted_space_fails_clearly():
    # l = 7 = every clause on 3 variables but the one the planted assignment falsifies:
    # one formula per assignment, each with exactly one model.
    config = SatConfig(n=3, k=3, l=7, max_rejections=500)
    instances = list(generate_instances(config, 8))
    assert all(i.num_solutions == 1 and brute_force_count(i.clauses, 3) == 1 for i in instances)
    with pytest.raises(RuntimeError, match="only 8 of 9"):
        list(generate_instances(config, 9))


def test_unique_solution_option():
    for instance in generate_instances(SatConfig(n=3, k=5, l=20, unique_solution=True), 10):
        assert brute_force_count(instance.clauses, 5) == 1
        assert instance.num_solutions == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=4, k=3, l=5), "n=4"),
        (dict(n=3, k=5, l=71), "only 70 planted clauses"),
        (dict(n=3, k=27, l=5), "A-Z"),
        (dict(n=0, k=5, l=5), "positive integer"),
        (dict(family="cubic"), "unknown SAT family"),
        (dict(unique_solution=True, count_cap=1), "count_cap"),
    ],
)
def test_impossible_parameters_fail_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SatConfig(**kwargs).validate()


def test_max_clauses():
    assert max_clauses(3, 5) == 70
    assert max_clauses(3, 5, "random") == 80


def test_count_models_cap_and_free_variables():
    assert count_models([[1]], 5)[:2] == (16, False)  # variables 2..5 occur nowhere
    assert count_models([[1, 2]], 10, cap=100)[:2] == (100, True)  # 768 models
    assert count_models([[1, 2]], 10, cap=768)[:2] == (768, False)
    count, capped, model = count_models([[1], [-1]], 3)
    assert (count, capped, model) == (0, False, None)


def test_random_family_keeps_only_satisfiable():
    l = clauses_for_ratio(8, 5.0)  # well above the threshold: most draws are UNSAT
    config = SatConfig(n=3, k=8, l=l, family="random", seed=1)
    instances = list(generate_instances(config, 5))
    assert all(i.index >= position for position, i in enumerate(instances))
    for instance in instances:
        assert len(set(instance.clauses)) == l
        assert glucose_satisfiable(instance.clauses)
        assert check_assignment(instance.clauses, instance.solution, 8)
        assert instance.num_solutions == brute_force_count(instance.clauses, 8)
    rejected = [sample_instance(config, i) for i in range(instances[-1].index) if i not in {x.index for x in instances}]
    assert rejected and all(not glucose_satisfiable(r.clauses) for r in rejected)


def test_saturn_notation_example():
    clauses = ((-2, -3, -4), (1, -2, -4), (1, 2, -4))
    assert text_to_clauses("!B!C!D & A!B!D & AB!D") == clauses
    assert clauses_to_text(clauses) == "!B!C!D & A!B!D & AB!D"


@pytest.mark.parametrize("text", ["", "A & ", "A!!B", "a", "A|B", "A & 3"])
def test_malformed_text_is_rejected(text):
    with pytest.raises(ValueError):
        text_to_clauses(text)


literal = st.integers(1, 26).flatmap(lambda v: st.sampled_from([v, -v]))
clause_lists = st.lists(st.lists(literal, min_size=1, max_size=6).map(tuple), min_size=1, max_size=12).map(tuple)


@settings(max_examples=200, deadline=None)
@given(clause_lists)
def test_clauses_text_round_trip(clauses):
    text = clauses_to_text(clauses)
    assert text_to_clauses(text) == clauses
    assert clauses_to_text(text_to_clauses(text)) == text


def test_check_assignment_is_strict():
    clauses = ((1, -2), (2, 3))
    assert check_assignment(clauses, "101", 3)
    assert not check_assignment(clauses, "1010", 3)
    assert not check_assignment(clauses, "10", 3)
    assert not check_assignment(clauses, "1x1", 3)
    assert not check_assignment(clauses, "100", 3)


def test_record_round_trip_and_mismatch():
    instance = sample_instance(SatConfig(n=4, k=7, l=20), 2)
    assert SatInstance.from_record(instance.to_record()) == instance
    broken = instance.to_record() | {"formula": "A & B"}
    with pytest.raises(ValueError, match="does not match"):
        SatInstance.from_record(broken)


def test_heldout_set_is_its_own_stream():
    heldout = heldout_instances((3, 5, 5), size=20, seed=0)
    assert len(heldout) == 20 and {i.stream for i in heldout} == {"heldout"}
    assert heldout == heldout_instances((3, 5, 5), size=20, seed=0)
