"""benchmarks.evaluate: bad data files and options fail before any model loads, naming what is wrong."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import game_eval, sat_eval
from benchmarks.evaluate import check_output_path
from benchmarks.evaluate import main as evaluate_main
from curricula.sat import SatConfig, sample_instance

GOOD = sample_instance(SatConfig(n=3, k=5, l=5), 0).to_record()


def write_records(path, *records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def no_model_load(monkeypatch):
    """Any attempt to load a model fails the test: checks must come first."""
    import trainers.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(trainers.models, "load_model", refuse)


# ------------------------------------------------------------------------ SAT records


@pytest.mark.parametrize(
    "change, message",
    [
        ({"clauses": [[1, 2]] + GOOD["clauses"][1:]}, "clause 1 [1, 2] has 2 literals, but n=3"),
        ({"clauses": [[1, 2, "3"]] + GOOD["clauses"][1:]}, "not a list of integer literals"),
        ({"clauses": [[1, 2, 3.0]] + GOOD["clauses"][1:]}, "not a list of integer literals"),
        ({"clauses": [[1, 2, 6]] + GOOD["clauses"][1:]}, "outside ±1..5"),
        ({"clauses": [[1, 0, 2]] + GOOD["clauses"][1:]}, "outside ±1..5"),
        ({"clauses": [[1, -1, 2]] + GOOD["clauses"][1:]}, "mentions a variable twice"),
        ({"clauses": "A & B"}, "clauses must be a list"),
        ({"formula": "A!B!C & B & C & D & E"}, "does not match its clauses"),
        ({"formula": 7}, "does not match its clauses"),
        ({"n": "3"}, "must be a positive integer"),
        ({"k": 30}, "at most 26"),
        ({"l": 4}, "l=4 but 5 clauses"),
        ({"num_solutions": "many"}, "'num_solutions' must be an integer"),
    ],
)
def test_inconsistent_records_are_rejected_with_file_and_line(tmp_path, change, message):
    path = write_records(tmp_path / "set.jsonl", GOOD, GOOD | change)
    with pytest.raises(ValueError, match="set.jsonl:2: ") as error:
        sat_eval.load_problems(path)
    assert message in str(error.value)


@pytest.mark.parametrize("field", ["n", "k", "l", "clauses"])
def test_records_missing_a_field_are_rejected(tmp_path, field):
    record = {key: value for key, value in GOOD.items() if key != field}
    with pytest.raises(ValueError, match=rf"set.jsonl:1: .*lacks field\(s\) \['{field}'\]"):
        sat_eval.load_problems(write_records(tmp_path / "set.jsonl", record))


@pytest.mark.parametrize("line, message", [('{"n": 3,', "malformed JSON"), ("[1, 2]", "JSON object"), ("\xff", "malformed JSON")])
def test_malformed_lines_are_rejected(tmp_path, line, message):
    path = tmp_path / "set.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + line.encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=f"set.jsonl:2: .*{message}"):
        sat_eval.load_problems(str(path))


def test_consistent_records_load(tmp_path):
    [(problem_id, instance)] = sat_eval.load_problems(write_records(tmp_path / "set.jsonl", GOOD | {"id": "x"}))
    assert problem_id == "x" and instance.to_record() == GOOD


# ---------------------------------------------------------------------- output paths


def unwritable_paths(tmp_path) -> list[str]:
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    return [str(tmp_path / "file" / "sub" / "report.json"), str(tmp_path / "file" / "report.json"), str(tmp_path / "folder")]


def test_unwritable_output_paths_are_named(tmp_path):
    for path in unwritable_paths(tmp_path):
        with pytest.raises(ValueError, match="--out="):
            check_output_path(path, "--out")
    created = tmp_path / "new" / "deeper" / "report.json"
    check_output_path(str(created), "--out")
    assert created.parent.is_dir() and not created.exists() and os.listdir(created.parent) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="cannot be written"):
            check_output_path(str(folder / "report.json"), "--out")
    finally:
        folder.chmod(0o755)


def test_sat_evaluation_checks_out_before_loading_a_model(tmp_path, monkeypatch, capsys):
    no_model_load(monkeypatch)
    data = write_records(tmp_path / "set.jsonl", GOOD)
    for out in unwritable_paths(tmp_path):
        with pytest.raises(SystemExit):
            evaluate_main(["sat", "--data", data, "--model", "tiny-random", "--out", out])
        assert "--out=" in capsys.readouterr().err


def test_sat_evaluation_checks_data_before_loading_a_model(tmp_path, monkeypatch, capsys):
    no_model_load(monkeypatch)
    data = write_records(tmp_path / "set.jsonl", GOOD | {"l": 2})
    with pytest.raises(SystemExit):
        evaluate_main(["sat", "--data", data, "--model", "tiny-random"])
    assert "set.jsonl:1:" in capsys.readouterr().err


# -------------------------------------------------------------------- game options


@pytest.mark.parametrize(
    "argument, message",
    [
        ("games=-5", "games=-5: must be an integer >= 1"),
        ("games=0", "games=0: must be an integer >= 1"),
        ("max_new_tokens=0", "max_new_tokens=0: must be an integer >= 1"),
        ("hands=0", "hands=0: must be an integer >= 1"),
        ("threads=-1", "threads=-1: must be an integer >= 0"),
        ("temperature=-0.1", "temperature=-0.1: must be a finite number >= 0"),
        ("temperature=nan", "temperature=nan: must be a finite number >= 0"),
        ("temperature=inf", "temperature=inf: must be a finite number >= 0"),
        ("opponent=random,randm", "opponent='randm': unknown opponent 'randm'; valid opponents: random, rule_based, equilibrium"),
        ("mode=fast", "mode='fast': valid modes are"),
        ("env=chess", "env='chess': unknown env 'chess'"),
        ("env=sat", "is a task env"),
        ("games=many", "games='many': expected a int"),
    ],
)
def test_bad_game_options_fail_in_one_line_before_the_model_loads(monkeypatch, capsys, argument, message):
    no_model_load(monkeypatch)
    assert evaluate_main(["env=kuhn_poker", "model=tiny-random", argument]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_opponent_that_cannot_play_the_game_is_named(monkeypatch, capsys):
    no_model_load(monkeypatch)
    assert evaluate_main(["env=tic_tac_toe", "opponent=equilibrium"]) == 2
    assert "opponent='equilibrium': no equilibrium opponent for game 'tic_tac_toe'" in capsys.readouterr().err


def test_unwritable_game_out_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
    no_model_load(monkeypatch)
    for out in unwritable_paths(tmp_path):
        assert evaluate_main(["env=kuhn_poker", f"out={out}"]) == 2
        assert "out=" in capsys.readouterr().err


def test_valid_game_options_pass_the_check():
    options = game_eval.parse(["env=kuhn_poker", "opponent=random, rule_based,equilibrium", "games=1", "temperature=0"])
    game_eval.check_options(options)
    assert game_eval.opponent_names(options) == ["random", "rule_based", "equilibrium"]
