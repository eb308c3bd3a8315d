"""League sampling and Elo ratings against hand-computed values, and their exact resume."""

import json
import math
import random
from pathlib import Path

import pytest

from trainers.rollouts.league import PRIORITY_FLOOR, League
from trainers.evaluation.ratings import Ratings, policy_name


def fake_write(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{}")


def league(tmp_path, **options) -> League:
    settings = {"size": 3, "sampling": "uniform", "latest_prob": 0.25}
    return League(tmp_path / "league", **{**settings, **options})


# ---- the pool ------------------------------------------------------------------------------


def test_the_pool_keeps_the_newest_snapshots(tmp_path):
    pool = league(tmp_path, size=2)
    for step in (5, 10, 15):
        pool.add(step, fake_write)
    assert [s.name for s in pool.snapshots] == ["step_00000010", "step_00000015"]
    # a dropped snapshot's folder stays until no checkpoint names it
    assert (tmp_path / "league" / "snapshot_00000005").is_dir()
    pool.remove_unreferenced({"snapshot_00000010"})
    assert sorted(p.name for p in (tmp_path / "league").iterdir()) == ["snapshot_00000010", "snapshot_00000015"]


def test_uniform_draws_follow_latest_prob_and_spread_evenly(tmp_path):
    pool = league(tmp_path)
    for step in (1, 2, 3):
        pool.add(step, fake_write)
    drawn = pool.draw(12000, seed=3)
    latest = sum(d is None for d in drawn) / len(drawn)
    assert latest == pytest.approx(0.25, abs=0.015)
    counts = [sum(d is not None and d.step == step for d in drawn) for step in (1, 2, 3)]
    for count in counts:
        assert count / len(drawn) == pytest.approx(0.75 / 3, abs=0.015)
    assert pool.draw(100, seed=3) == drawn[:100]  # seeded: the same seed, the same games


def test_prioritized_weights_favour_the_snapshots_the_learner_loses_to(tmp_path):
    pool = league(tmp_path, sampling="prioritized", latest_prob=0.0)
    for step in (1, 2):
        pool.add(step, fake_write)
    # the learner beats step 1 every time and loses to step 2 every time, 3 games each
    for _ in range(3):
        pool.record("step_00000001", 1.0)
        pool.record("step_00000002", 0.0)
    # scores: 0.5 -> 0.55 -> 0.595 -> 0.6355 and 0.5 -> 0.45 -> 0.405 -> 0.3645
    assert pool.scores["step_00000001"] == pytest.approx(0.6355)
    assert pool.scores["step_00000002"] == pytest.approx(0.3645)
    weights = pool.weights()
    assert weights == pytest.approx([(1 - 0.6355) ** 2 + PRIORITY_FLOOR, (1 - 0.3645) ** 2 + PRIORITY_FLOOR])
    drawn = pool.draw(20000, seed=1)
    share = sum(d.step == 2 for d in drawn) / len(drawn)
    assert share == pytest.approx(weights[1] / sum(weights), abs=0.01)


def test_the_pool_survives_a_resume_and_drops_snapshots_written_after_the_checkpoint(tmp_path):
    pool = league(tmp_path, sampling="prioritized")
    for step in (2, 4):
        pool.add(step, fake_write)
    pool.record("step_00000002", 1.0)
    state = json.loads(json.dumps(pool.state_dict()))
    pool.add(6, fake_write)  # written by the killed run after its checkpoint
    resumed = league(tmp_path, sampling="prioritized")
    resumed.load_state_dict(state, step=4)
    assert resumed.snapshots == pool.snapshots[:2]
    assert resumed.scores == {"step_00000002": pytest.approx(0.55), "step_00000004": 0.5}
    assert not (tmp_path / "league" / "snapshot_00000006").exists()
    assert resumed.draw(50, seed=9) == [None if d is None else d for d in league_copy(tmp_path, state).draw(50, seed=9)]


def league_copy(tmp_path, state):
    copy = league(tmp_path, sampling="prioritized")
    copy.load_state_dict(state, step=4)
    return copy


def test_a_missing_snapshot_folder_is_a_clear_error(tmp_path):
    pool = league(tmp_path)
    pool.add(3, fake_write)
    state = pool.state_dict()
    (tmp_path / "league" / "snapshot_00000003" / "meta.json").unlink()
    (tmp_path / "league" / "snapshot_00000003").rmdir()
    with pytest.raises(FileNotFoundError, match="snapshot_00000003"):
        league(tmp_path).load_state_dict(state, step=3)


# ---- ratings ------------------------------------------------------------------------------


def test_two_player_rating_gap_is_the_logit_of_the_score_with_one_virtual_draw():
    ratings = Ratings()
    ratings.record("step_00000010", "random", wins=3, draws=0, losses=1)
    fitted = ratings.fit()
    # with the virtual draw: 3.5 of 5 points -> p = 0.7 -> 400 log10(0.7 / 0.3)
    assert fitted["random"] == pytest.approx(1000.0)
    assert fitted["step_00000010"] - fitted["random"] == pytest.approx(400 * math.log10(0.7 / 0.3), abs=1e-6)


def test_draws_count_half_and_results_add_up_in_any_order():
    a, b = Ratings(), Ratings()
    a.record("x", "random", 2, 2, 0)
    a.record("random", "x", 1, 0, 3)
    b.record("x", "random", 5, 2, 1)  # the same games, seen from x, recorded at once
    assert a.fit() == pytest.approx(b.fit())
    # x: 5 wins + 2 draws of 8 -> 6 points, with the virtual draw 6.5 of 9
    assert a.fit()["x"] - 1000 == pytest.approx(400 * math.log10(6.5 / 2.5), abs=1e-6)


def test_three_players_fit_the_bradley_terry_likelihood():
    ratings = Ratings()
    ratings.record("step_00000001", "random", 6, 0, 4)
    ratings.record("step_00000001", "rule_based", 3, 0, 7)
    ratings.record("rule_based", "random", 8, 0, 2)
    fitted = ratings.fit()
    strength = {name: 10 ** (value / 400) for name, value in fitted.items()}
    # at the maximum-likelihood point every player's expected score equals its actual score
    points = {"step_00000001": 6 + 3 + 1.0, "random": 4 + 2 + 1.0, "rule_based": 7 + 8 + 1.0}
    games = {("step_00000001", "random"): 11, ("step_00000001", "rule_based"): 11, ("rule_based", "random"): 11}
    for player, actual in points.items():
        expected = sum(
            n * strength[player] / (strength[player] + strength[other])
            for (first, second), n in games.items()
            for other in ([second] if first == player else [first] if second == player else [])
        )
        assert expected == pytest.approx(actual, abs=1e-6)
    assert fitted["random"] == pytest.approx(1000.0) and fitted["rule_based"] > fitted["step_00000001"] > fitted["random"]


def test_ratings_state_round_trips_through_json():
    ratings = Ratings()
    ratings.record("step_00000002", "random", 4, 1, 0)
    restored = Ratings()
    restored.load_state_dict(json.loads(json.dumps(ratings.state_dict())))
    assert restored.fit() == ratings.fit()
    with pytest.raises(ValueError):
        ratings.record("random", "random", 1, 0, 0)
    assert policy_name(40) == "step_00000040"
