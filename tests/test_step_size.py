"""samples_per_step: a step of whole games whose learner turns reach the sample count."""

from collections import Counter

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from trainers.rollouts.step_size import first_wave_turns, games_kept, learner_turn_range, sample_shares, wave_size
from trainers.run.config import parse_overrides
from trainers.selfplay import Trainer

BASE = ["model=tiny-random", "tensorboard=false", "progress=false", "threads=1"]


def test_the_rule_in_numbers():
    assert sample_shares(128, ["a", "b", "c"]) == {"a": 43, "b": 43, "c": 42}
    assert wave_size(128, []) == 16  # first guess: 8 turns a game
    assert wave_size(128, [2] * 16) == 48 + 1  # 96 short at 2 a game, plus one
    assert wave_size(128, [8] * 16) == 0
    assert games_kept(10, [3, 3, 3, 3, 3]) == 4  # 12 turns: the fewest whole games reaching 10
    with pytest.raises(ValueError, match="no turn"):
        wave_size(10, [0, 0])


def test_the_first_guess_stays_within_what_a_game_can_give():
    assert first_wave_turns(1, 9) == 8  # TicTacToe: the default guess fits
    assert first_wave_turns(10, 10) == 10  # a fixed-length game gets its length
    assert first_wave_turns(2, 3) == 3  # Kuhn Poker cannot give 8
    assert wave_size(128, [], first_wave_turns(10, 10)) == 13
    # against an opponent the learner holds one seat of two: half the turns
    assert learner_turn_range(10, 10, num_players=2, learner_seats=1) == (5, 5)
    assert learner_turn_range(5, 9, num_players=2, learner_seats=1) == (2, 5)
    assert learner_turn_range(5, 9, num_players=2, learner_seats=2) == (5, 9)


def test_a_fixed_length_game_plays_one_wave_of_the_games_it_keeps(tmp_path):
    """Simple Negotiation always lasts its ten turns in choice mode: the first wave is exactly
    the games the step keeps; in direct mode a forfeit can end a game early, so it guesses low."""
    samples, stats = step_of(tmp_path, "env=simple_negotiation", "samples_per_step=30", "max_new_tokens=8", name="choice")
    assert stats["games"] == stats["rollout/games_played"] == 3 and stats["rollout/waves"] == 1
    trainer = Trainer(parse_overrides([*BASE, f"out={tmp_path / 'direct'}", "env=simple_negotiation", "mode=direct", "samples_per_step=30"]))
    assert trainer.first_wave_turns == {"simple_negotiation": 8}
    trainer = Trainer(parse_overrides([*BASE, f"out={tmp_path / 'vs'}", "env=simple_negotiation", "opponent=random", "samples_per_step=30"]))
    assert trainer.first_wave_turns == {"simple_negotiation": 5}


def step_of(tmp_path, *overrides, name="run"):
    trainer = Trainer(parse_overrides([*BASE, f"out={tmp_path / name}", *overrides]))
    return trainer.rollout(0)


def test_a_step_trains_on_the_whole_games_that_reach_the_sample_count(tmp_path):
    samples, stats = step_of(tmp_path, "env=tic_tac_toe", "samples_per_step=40")
    turns = Counter(s.game_id for s in samples)
    assert len(samples) >= 40 and len(samples) - max(turns.values()) < 40  # no game could be left out
    assert len(turns) == stats["games"] <= stats["rollout/games_played"]
    # whole games: every turn of every kept game, as many as the game had
    for game_id, count in turns.items():
        roles = Counter(s.role for s in samples if s.game_id == game_id)
        assert abs(roles[0] - roles[1]) <= 1 and sum(roles.values()) == count


def test_the_same_seed_gives_the_same_step(tmp_path):
    record = lambda samples: [(s.game_id, s.role, s.response_ids, s.reward) for s in samples]  # noqa: E731
    first, _ = step_of(tmp_path, "env=tic_tac_toe", "samples_per_step=30", name="a")
    second, _ = step_of(tmp_path, "env=tic_tac_toe", "samples_per_step=30", name="b")
    assert record(first) == record(second)


def test_envs_share_the_samples_and_roles_alternate_per_env(tmp_path):
    samples, _ = step_of(tmp_path, "env=kuhn_poker,tic_tac_toe", "samples_per_step=60", "opponent=random")
    by_env = Counter(s.env_id for s in samples)
    assert by_env["kuhn_poker"] >= 30 and by_env["tic_tac_toe"] >= 30
    assert by_env["kuhn_poker"] < 30 + 3 and by_env["tic_tac_toe"] < 30 + 9
    for env_id in by_env:
        seats = Counter(s.role for s in samples if s.env_id == env_id)
        assert set(seats) == {0, 1}  # the learner plays both seats in every env


def test_games_per_step_still_sizes_a_step_by_games(tmp_path):
    _, stats = step_of(tmp_path, "env=kuhn_poker", "games_per_step=6")
    assert stats["games"] == 6 and "rollout/waves" not in stats


@pytest.mark.parametrize("overrides, message", [
    (["samples_per_step=64", "games_per_step=8"], "samples_per_step=64 and games_per_step=8 both size a step"),
    (["samples_per_step=-1"], "samples_per_step must be >= 0"),
])
def test_bad_combinations_name_the_keys(overrides, message):
    with pytest.raises(ValueError, match=message):
        parse_overrides(overrides)


@pytest.mark.parametrize("env, games, samples", [
    ("kuhn_poker", 512, 0),  # the main job's batch: Kuhn Poker registers its own step
    ("tic_tac_toe", 0, 128),  # long games: SPIRAL's 128 turn samples
    ("simple_negotiation", 0, 128),
    ("kuhn_poker,tic_tac_toe", 0, 128),  # several games: samples, balanced over them
    ("openspiel:kuhn_poker", 0, 128),  # a library game registers no step of its own
])
def test_the_games_choose_the_step_when_neither_key_is_set(env, games, samples):
    config = parse_overrides([f"env={env}"])
    assert (config.games_per_step, config.samples_per_step) == (games, samples)
    assert parse_overrides([f"env={env}", "games_per_step=7"]).samples_per_step == 0  # a key set wins
    assert parse_overrides([f"env={env}", "samples_per_step=9"]).games_per_step == 0


def test_a_run_without_games_has_no_game_shares():
    assert sample_shares(128, []) == {}
    assert parse_overrides(["env=sat"]).samples_per_step == 128  # sized like any run; no game plays it


def test_a_registered_game_can_name_its_own_step():
    from envs.registry import register

    register("short_kuhn_for_step_test", game="kuhn_poker", games_per_step=64, overwrite=True)
    assert parse_overrides(["env=short_kuhn_for_step_test"]).games_per_step == 64
    with pytest.raises(ValueError, match="games_per_step must be an int >= 0"):
        register("bad_step_for_test", game="kuhn_poker", games_per_step=-1)


def test_openrlhf_sizes_its_games_from_the_sample_share():
    from trainers.backends.openrlhf.launcher import games_per_env

    config = parse_overrides([*BASE, "env=kuhn_poker,tic_tac_toe", "samples_per_step=100"])
    games = games_per_env(config, ["kuhn_poker", "tic_tac_toe"], "direct")
    assert 50 / 3 <= games["kuhn_poker"] <= 50 / 2  # 2-3 turns a hand
    assert 50 / 9 <= games["tic_tac_toe"] <= 50 / 5  # 5-9 turns a game
    fixed = parse_overrides([*BASE, "env=kuhn_poker,tic_tac_toe", "games_per_step=5", "samples_per_step=0"])
    assert games_per_env(fixed, ["kuhn_poker", "tic_tac_toe"], "direct") == {"kuhn_poker": 3, "tic_tac_toe": 2}
