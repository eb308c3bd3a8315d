"""benchmarks.seed_spread: medians and spreads over seeds from run directories."""

import json

import pytest

from benchmarks.seed_spread import main


def _run(folder, evaluations: dict, metrics: list[dict]):
    (folder / "eval").mkdir(parents=True)
    for step, evaluation in evaluations.items():
        (folder / "eval" / f"step_{step:08d}.json").write_text(json.dumps({"step": step, **evaluation}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return str(folder)


def test_median_spread_and_final_over_seeds(tmp_path, capsys):
    key = "advantage_diagnostics/kuhn_poker/rae/correlation"
    runs = [
        _run(tmp_path / "a", {0: {"kuhn_poker/exploitability": 0.3}, 10: {"kuhn_poker/exploitability": 0.1}}, [{"step": 0, key: 0.2}]),
        _run(tmp_path / "b", {0: {"kuhn_poker/exploitability": 0.4}, 10: {"kuhn_poker/exploitability": 0.3}}, [{"step": 0, key: 0.4}]),
        _run(tmp_path / "c", {0: {"kuhn_poker/exploitability": 0.2}, 10: {"kuhn_poker/exploitability": 0.2},
                              20: {"kuhn_poker/exploitability": 0.05}}, [{"step": 0, key: 0.9}]),
    ]
    assert main([*runs, "--diagnostics", "0"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["figure"]["steps"]["10"] == {"median": 0.2, "min": 0.1, "max": 0.3, "runs": 3}
    assert "20" not in report["figure"]["steps"]  # only steps every run evaluated
    assert report["figure"]["final"]["median"] == pytest.approx(0.1)  # each run's last: 0.1, 0.3, 0.05
    assert report["figure"]["final_steps"] == [10, 10, 20]
    assert report["diagnostics"]["kuhn_poker"]["rae"]["0"]["median"] == 0.4


def test_nested_figures_and_clear_errors(tmp_path, capsys):
    run = _run(tmp_path / "sat", {0: {"sat": {"pass_at_1": 0.5}}, 5: {"sat": {"pass_at_1": 0.7}}}, [{"step": 0}])
    assert main([run, "--figure", "sat/pass_at_1"]) == 0
    assert json.loads(capsys.readouterr().out)["figure"]["final"]["median"] == 0.7
    assert main([run, "--figure", "kuhn_poker/exploitability"]) == 2
    assert "missing" in capsys.readouterr().err
    assert main([run, "--diagnostics", "0"]) == 2
    assert main([str(tmp_path / "absent")]) == 2
