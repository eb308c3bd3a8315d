"""benchmarks.train_step: one game at a time, or several games in one run (`together=`)."""

import pytest

from benchmarks import train_step


def test_a_run_of_several_games_reports_each_games_share_of_the_step():
    line = train_step.full_steps(["kuhn_poker", "tic_tac_toe"], model="tiny-random", repeats=1, samples_per_step=12)
    per_env = line["per_env"]
    assert set(per_env) == {"kuhn_poker", "tic_tac_toe"}
    # the step's 12 turn samples split 6 / 6; whole games are kept, so each game reaches its share
    assert all(counts["turn_samples"] >= 6 for counts in per_env.values())
    assert all(counts["samples"] <= counts["turn_samples"] for counts in per_env.values())
    assert line["samples"] == sum(counts["samples"] for counts in per_env.values())
    assert line["samples_per_step"] == 12 and line["step_s"] > 0


def test_one_game_alone_has_no_per_game_breakdown():
    line = train_step.full_steps(["tic_tac_toe"], model="tiny-random", repeats=1, samples_per_step=6)
    assert "per_env" not in line and line["games"] >= 1


@pytest.mark.parametrize("argument", ["together=kuhn_poker", "together=", "games=kuhn_poker", "together=kuhn_poker,kuhn_poker"])
def test_a_bad_argument_is_refused_before_anything_runs(argument, capsys):
    with pytest.raises(SystemExit):
        train_step.main([argument])
    assert "together=ID,ID" in capsys.readouterr().err


def test_a_chained_turn_counts_once_in_its_games_share():
    line = train_step.full_steps(["kuhn_poker", "simple_negotiation"], model="tiny-random", repeats=1, samples_per_step=8)
    # one whole negotiation of 10 turns reaches the share of 4; its offers' parts are not turns
    assert line["per_env"]["simple_negotiation"]["turn_samples"] == 10
