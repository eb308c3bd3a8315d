"""Out-of-domain evaluation in training (`eval_envs`): SPIRAL's protocol at every evaluation.

A run on Kuhn Poker with ``eval_envs=openspiel:nim`` plays Nim against a random opponent in
both seats at every evaluation and logs, plots and tabulates the win rate; a bad id is
refused before the run directory exists; a resumed run may add or change `eval_envs`.
"""

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("pyspiel")

from trainers.run.config import RESUMABLE_KEYS, parse_overrides, resume_conflicts
from trainers.evaluation.out_of_domain import SPIRAL_OOD, expand_env_ids
from trainers.run.report import before_after_rows, evaluation_history
from trainers.selfplay import main

TINY = [
    "model=tiny-random", "tensorboard=false", "progress=false", "games_per_step=2", "eval_games=1",
    "eval_opponents=random", "max_new_tokens=4", "threads=1", "env=kuhn_poker",
]
NIM = ["eval_envs=openspiel:nim", "eval_envs_games=2"]


def metrics_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def png_width(path: Path) -> int:
    """The width of a PNG from its header (bytes 16-20 of the IHDR chunk)."""
    return int.from_bytes(path.read_bytes()[16:20], "big")


def test_run_with_eval_envs_logs_plots_and_tabulates_the_ood_win_rate(tmp_path):
    out = tmp_path / "run"
    assert main([*TINY, *NIM, "steps=1", f"out={out}"]) == 0
    (metrics,) = metrics_of(out)
    assert 0.0 <= metrics["ood/openspiel:nim/win_rate"] <= 1.0
    assert metrics["ood/all/win_rate"] == metrics["ood/openspiel:nim/win_rate"]  # one env: all is nim
    history = evaluation_history(out / "eval")
    assert [e["step"] for e in history] == [0, 1]
    for evaluation in history:
        nim = evaluation["ood"]["openspiel:nim/random"]
        assert nim["games"] == 4 and set(nim["per_seat"]) == {"0", "1"}  # 2 games per seat
        low, high = nim["win_ci95"]
        assert 0 <= low <= nim["win_rate"] <= high <= 1
    rows = {name for name, _, _ in before_after_rows(history)}
    assert {"OOD win rate vs random (all)", "OOD win rate vs random (openspiel:nim)"} <= rows
    assert png_width(out / "summary.png") == 2500  # five 5-inch panels at 100 dpi: the OOD panel is the fifth


def test_a_run_without_eval_envs_keeps_four_panels_and_no_ood_metrics(tmp_path):
    out = tmp_path / "run"
    assert main([*TINY, "steps=1", f"out={out}"]) == 0
    assert not [k for k in metrics_of(out)[0] if k.startswith("ood/")]
    assert png_width(out / "summary.png") == 2000


@pytest.mark.parametrize(
    "argument, message",
    [
        ("eval_envs=openspiel:nim,no_such_game", "eval_envs: unknown env 'no_such_game'; registered envs: kuhn_poker"),
        ("eval_envs=sat", "eval_envs='sat' is a task"),
        ("eval_envs_mode=guess", "eval_envs_mode='guess' is not valid; choose one of: "),
        ("eval_envs_games=0", "eval_envs_games must be >= 1"),
    ],
)
def test_bad_eval_envs_are_refused_before_anything_is_created(tmp_path, capsys, argument, message):
    out = tmp_path / "run"
    assert main([*TINY, "steps=1", argument, f"out={out}"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_textarena_games_cannot_be_evaluated_in_choice_mode(tmp_path, capsys):
    pytest.importorskip("textarena")
    out = tmp_path / "run"
    assert main([*TINY, "steps=1", "eval_envs=spiral_ood", "eval_envs_mode=choice", f"out={out}"]) == 2
    assert "cannot be played in mode=choice" in capsys.readouterr().err
    assert not out.exists()


def test_eval_envs_keep_parenthesised_commas_and_expand_presets():
    config = parse_overrides(["eval_envs=openspiel:goofspiel(num_cards=4,points_order=descending),spiral_ood,openspiel:nim"])
    assert config.eval_envs == ["openspiel:goofspiel(num_cards=4,points_order=descending)", "spiral_ood", "openspiel:nim"]
    assert expand_env_ids(config.eval_envs) == ["openspiel:goofspiel(num_cards=4,points_order=descending)", *SPIRAL_OOD]


def test_mcts_is_an_accepted_opponent():
    assert parse_overrides(["opponent=mcts", "eval_opponents=random,mcts"]).eval_opponents == ["random", "mcts"]


def test_resume_may_add_eval_envs(tmp_path):
    assert {"eval_envs", "eval_envs_games", "eval_envs_mode"} <= set(RESUMABLE_KEYS)
    assert resume_conflicts(parse_overrides([]).to_dict(), parse_overrides(NIM)) == {}
    out = tmp_path / "run"
    assert main([*TINY, "steps=1", "save_every=1", f"out={out}"]) == 0
    assert main([*TINY, *NIM, "steps=2", "save_every=1", "resume=true", f"out={out}"]) == 0
    metrics = metrics_of(out)
    assert [m["step"] for m in metrics] == [0, 1]
    assert "ood/openspiel:nim/win_rate" in metrics[1] and "ood/openspiel:nim/win_rate" not in metrics[0]


def test_eval_transfer_adds_a_before_after_row_from_the_first_and_last_evaluation(tmp_path):
    pytest.importorskip("reasoning_gym")
    out = tmp_path / "run"
    assert main([*TINY, "steps=2", "eval_every=1", "eval_transfer=3", f"out={out}"]) == 0
    history = evaluation_history(out / "eval")
    assert [("transfer" in e) for e in history] == [True, False, True]  # step 0 and the last step only
    assert history[0]["transfer"]["basic_arithmetic"]["items"] == 3
    rows = {name: (before, after) for name, before, after in before_after_rows(history)}
    before, after = rows["transfer accuracy (basic_arithmetic)"]
    assert 0.0 <= before <= 1.0 and 0.0 <= after <= 1.0
    assert "transfer/basic_arithmetic/accuracy" in metrics_of(out)[-1]
