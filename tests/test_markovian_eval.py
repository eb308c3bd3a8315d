"""benchmarks.evaluate sat --thinking markovian: the same total budget, cap-hit share reported."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmarks.evaluate import main as evaluate_main
from benchmarks.generate import main as generate_main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sat")
    generate_main(["sat", "--out", str(out), "--no-progress", "--buckets", "3,4,4", "--per-bucket", "2"])
    return next(out.glob("*.jsonl"))


def evaluate(data, out, *extra):
    args = ["sat", "--data", str(data), "--model", "tiny-random", "--samples", "2", "--max-new-tokens", "40",
            "--no-progress", "--out", str(out), *extra]
    assert evaluate_main(args) == 0
    return json.loads(out.read_text())


def test_markovian_evaluation_uses_the_same_total_budget(data, tmp_path):
    plain = evaluate(data, tmp_path / "plain.json")
    markovian = evaluate(data, tmp_path / "markovian.json", "--thinking", "markovian", "--chunk", "16", "--carry", "8", "--head", "2")
    assert plain["thinking"] == "plain" and 0 <= plain["budget_hit_rate"] <= 1
    assert markovian["thinking"] == "markovian"
    assert markovian["max_chunks"] == 4 and markovian["thinking_budget"] == 16 + 3 * 8 == 40
    assert 0 <= markovian["budget_hit_rate"] <= 1
    assert markovian["thinking_tokens_per_trace"] <= 40
    assert markovian["overall"]["num_problems"] == plain["overall"]["num_problems"] == 2
    # a capped trace is no answer: the no-answer rate is at least the cap-hit rate
    assert markovian["overall"]["no_answer_rate"] >= markovian["budget_hit_rate"]


def test_bad_markovian_settings_are_clear(data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate_main(["sat", "--data", str(data), "--model", "tiny-random", "--thinking", "markovian",
                       "--chunk", "16", "--carry", "16", "--no-progress"])
    assert "carry" in capsys.readouterr().err
