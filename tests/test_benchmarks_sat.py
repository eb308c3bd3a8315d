"""Benchmark generation CLI and the pass@k estimator."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.generate import main as generate_main
from benchmarks.passk import mean_pass_at_k, pass_at_k, pass_at_k_by_bucket, usable_ks
from curricula.sat import (
    SatInstance,
    canonical_key,
    difficulty,
    heldout_instances,
    load_benchmark_formulas,
    text_to_clauses,
)

REPO = Path(__file__).resolve().parents[1]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def run_generate(out, *args):
    generate_main(["sat", "--out", str(out), "--no-progress", *args])
    return {p.name: p.read_bytes() for p in sorted(Path(out).iterdir())}


# ----------------------------------------------------------------------------- pass@k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (12, 0, 1, 0.0),
        (12, 12, 10, 1.0),
        (12, 1, 1, 1 / 12),
        (12, 1, 3, 1 - 165 / 220),  # 1 - C(11,3)/C(12,3)
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (12, 3, 10, 1.0),  # fewer than 10 wrong samples: any 10 contain a correct one
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomials_everywhere():
    for n in range(1, 21):
        for c, k in itertools.product(range(n + 1), range(1, n + 1)):
            exact = 1 - math.comb(n - c, k) / math.comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_is_stable_for_many_samples():
    assert pass_at_k(2000, 1, 1) == pytest.approx(1 / 2000)
    assert 0.0 <= pass_at_k(5000, 3, 100) <= 1.0


@pytest.mark.parametrize("n, c, k", [(5, 6, 1), (5, -1, 1), (5, 2, 6), (5, 2, 0)])
def test_pass_at_k_rejects_bad_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_aggregation_per_bucket_and_overall():
    results = {"a": [(4, 4), (4, 0)], "b": [(4, 1)]}
    per_bucket, overall = pass_at_k_by_bucket(results, [1, 3])
    assert per_bucket["a"] == {1: 0.5, 3: 0.5}
    assert per_bucket["b"] == {1: 0.25, 3: 0.75}
    assert overall[1] == pytest.approx((1 + 0 + 0.25) / 3)
    assert mean_pass_at_k([(2, 1)], [1]) == {1: 0.5}
    assert usable_ks(6) == [1, 3, 5]


# --------------------------------------------------------------------------- generate


def test_custom_buckets_are_byte_identical_and_prefix_stable(tmp_path):
    buckets = ["--buckets", "3,5,20;4,7,40;3,6,20", "--seed", "3"]
    first = run_generate(tmp_path / "a", *buckets, "--per-bucket", "5")
    assert first == run_generate(tmp_path / "b", *buckets, "--per-bucket", "5")
    assert set(first) == {"test.jsonl", "manifest.json"}
    records = read_jsonl(tmp_path / "a" / "test.jsonl")
    assert [(r["n"], r["k"], r["l"]) for r in records] == [(3, 5, 20)] * 5 + [(4, 7, 40)] * 5 + [(3, 6, 20)] * 5
    for record in records:
        assert {"id", "n", "k", "l", "difficulty", "formula", "clauses", "num_solutions", "split"} <= set(record)
        assert text_to_clauses(record["formula"]) == tuple(map(tuple, record["clauses"]))
        assert record["difficulty"] == difficulty(record["n"], record["k"], record["l"])
        assert SatInstance.from_record(record).is_solution(record["solution"])
    run_generate(tmp_path / "c", *buckets, "--per-bucket", "3")
    assert read_jsonl(tmp_path / "c" / "test.jsonl") == [r for r in records if int(r["id"][-4:]) < 3]
    other_seed = run_generate(tmp_path / "d", *buckets[:-1], "4", "--per-bucket", "5")
    assert other_seed["test.jsonl"] != first["test.jsonl"]


def test_difficulty_range_selects_buckets(tmp_path):
    run_generate(tmp_path, "--difficulty", "9.5:9.7", "--per-bucket", "1")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    buckets = manifest["files"]["test.jsonl"]["buckets"]
    assert buckets and all(9.5 <= b["difficulty"] <= 9.7 for b in buckets)
    assert (3, 5, 20) in {(b["n"], b["k"], b["l"]) for b in buckets}


def test_random_family_with_ratio(tmp_path):
    run_generate(tmp_path, "--family", "random", "--ratio", "4.26", "--buckets", "3,10", "--per-bucket", "3")
    records = read_jsonl(tmp_path / "test.jsonl")
    assert [(r["k"], r["l"], r["family"]) for r in records] == [(10, 43, "random")] * 3
    assert all(r["num_solutions"] > 0 for r in records)


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "choose --preset, --buckets or --difficulty"),
        (["--preset", "saturn-2.6k", "--buckets", "3,5,5"], "--preset fixes the buckets"),
        (["--buckets", "3,5"], "a bucket is 'n,k,l'"),
        (["--buckets", "3,x,5"], "comma-separated integers"),
        (["--buckets", "6,5,20"], "n=6"),
        (["--buckets", "3,5,80"], "only 70"),
        (["--difficulty", "9"], "A:B"),
        (["--difficulty", "50:60"], "no bucket has D"),
        (["--buckets", "3,5,5", "--ratio", "4"], "--ratio applies to --family random"),
        (["--buckets", "3,5,5", "--per-bucket", "0"], "--per-bucket must be positive"),
    ],
)
def test_cli_errors_are_clear(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["sat", "--out", str(tmp_path), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_saturn_preset_structure(tmp_path):
    files = run_generate(tmp_path, "--preset", "saturn-2.6k", "--seed", "0")
    manifest = json.loads(files.pop("manifest.json"))
    expected_counts = {"test.jsonl": 1000}
    for stage, train in (("3_5_5", 250), ("3_5_6", 250), ("3_5_13", 500), ("3_5_15", 500)):
        expected_counts[f"train_{stage}.jsonl"] = train
        expected_counts[f"heldout_{stage}.jsonl"] = 20
        expected_counts[f"heldout_eval_{stage}.jsonl"] = 20
    assert {name: entry["count"] for name, entry in manifest["files"].items()} == expected_counts
    assert manifest["total"] == 2660 and manifest["generator_version"] == "sat-1"
    splits = {name: entry["split"] for name, entry in manifest["files"].items()}
    assert sum(expected_counts[name] for name, split in splits.items() if split.startswith("heldout")) == 160
    assert sum(expected_counts[name] for name, split in splits.items() if split == "train") == 1500
    assert all(entry["role"] for entry in manifest["files"].values())
    assert manifest["parameters"]["seed"] == 0 and manifest["parameters"]["preset"] == "saturn-2.6k"
    keys, ids = set(), set()
    for name, data in files.items():
        assert manifest["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
        records = [json.loads(line) for line in data.decode().splitlines()]
        assert len(records) == expected_counts[name]
        assert {r["split"] for r in records} == {splits[name]}
        for record in records:
            keys.add(canonical_key(record["clauses"]))
            ids.add(record["id"])
    assert len(keys) == len(ids) == 2660  # no formula (or id) twice across all files
    test = read_jsonl(tmp_path / "test.jsonl")
    assert [sum(1 for r in test if (r["n"], r["k"], r["l"]) == b) for b in {(r["n"], r["k"], r["l"]) for r in test}] == [100] * 10
    # the gate set is the curriculum's own held-out set at the same seed
    gate = [r["formula"] for r in read_jsonl(tmp_path / "heldout_3_5_5.jsonl")]
    assert gate == [i.formula for i in heldout_instances((3, 5, 5), size=20, seed=0)]
    # a trainer excludes the 1,160 evaluation formulas (test and both held-out roles)
    excluded = load_benchmark_formulas(str(tmp_path))
    assert len(excluded) == 1160 and {i.key for i in excluded} <= keys
    train_keys = {canonical_key(r["clauses"]) for name in files if splits[name] == "train" for r in read_jsonl(tmp_path / name)}
    assert not train_keys & {i.key for i in excluded}


def test_module_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.generate", "sat", "--buckets", "3,5,5", "--per-bucket", "2", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 2 instances" in result.stdout
    assert len(read_jsonl(tmp_path / "test.jsonl")) == 2


# --------------------------------------------------------------------------- evaluate


def two_problem_file(tmp_path):
    run_generate(tmp_path / "set", "--buckets", "3,5,5;3,5,6", "--per-bucket", "1")
    return tmp_path / "set" / "test.jsonl"


def test_scoring_report_counts_correct_samples(tmp_path):
    from benchmarks.sat_eval import format_table, load_problems, score_problems

    problems = load_problems(str(two_problem_file(tmp_path)))
    (_, easy), (_, harder) = problems
    right = lambda instance: f"\\boxed{{{instance.solution}}}"  # noqa: E731
    texts = [
        [right(easy), right(easy), "no idea", "\\boxed{2}"],  # 2 of 4 correct, 1 unanswered
        [f"\\boxed{{{harder.solution}1}}", "", "", ""],  # one bit too many: wrong
    ]
    report = score_problems(problems, texts)
    assert report["ks"] == [1, 3]
    easy_bucket, harder_bucket = report["buckets"]
    assert (easy_bucket["l"], harder_bucket["l"]) == (5, 6)
    assert easy_bucket["pass_at_k"] == {"1": 0.5, "3": 1.0}
    assert easy_bucket["no_answer_rate"] == 0.25 and harder_bucket["no_answer_rate"] == 0.75
    assert harder_bucket["pass_at_k"] == {"1": 0.0, "3": 0.0}
    assert report["overall"]["pass_at_k"] == {"1": 0.25, "3": 0.5}
    assert report["problems"][0]["rewards"] == [1.0, 1.0, -1.0, 0.0]
    table = format_table(report)
    assert "(3,5,5)" in table and "5.63" in table and "overall" in table


def test_load_problems_errors(tmp_path):
    from benchmarks.sat_eval import load_problems

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"n": 3, "k": 5, "l": 1, "clauses": [[1, 2, 3]]}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_problems(str(bad))
    assert len(load_problems(str(bad), limit=1)) == 1
    with pytest.raises(ValueError, match="cannot read"):
        load_problems(str(tmp_path / "missing.jsonl"))


def test_evaluate_rejects_unknown_task(capsys):
    from benchmarks.evaluate import main as evaluate_main

    assert evaluate_main(["chess"]) == 2  # neither a subcommand nor a key=value pair
    error = capsys.readouterr().err
    assert "unknown argument 'chess'" in error and "subcommand" in error


@pytest.mark.slow
def test_evaluate_end_to_end_with_tiny_random_model(tmp_path):
    data = two_problem_file(tmp_path)
    out = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.evaluate", "sat", "--data", str(data), "--model", "tiny-random",
         "--samples", "2", "--max-new-tokens", "4", "--out", str(out), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "pass@1" in result.stdout and "overall" in result.stdout
    report = json.loads(out.read_text())
    assert report["ks"] == [1] and report["samples"] == 2
    assert [(b["n"], b["k"], b["l"]) for b in report["buckets"]] == [(3, 5, 5), (3, 5, 6)]
    assert report["overall"]["num_problems"] == 2
    assert all(r in (-1.0, 0.0, 1.0) for p in report["problems"] for r in p["rewards"])


def test_evaluation_asks_in_the_format_a_model_was_trained_with(monkeypatch, tmp_path):
    """`--answer-format named --variable-notes` sends the env's named prompt with its notes."""
    from benchmarks import sat_eval
    from envs.sat import prompt_messages

    import trainers.generation as generation
    from trainers.models import load_model

    asked, real_generate = [], generation.generate

    def generate_and_record(model, tokenizer, batch, **kwargs):  # the real generation, its prompts kept
        asked.extend(batch)
        return real_generate(model, tokenizer, batch, **kwargs)

    monkeypatch.setattr(generation, "generate", generate_and_record)
    model, tokenizer = load_model("tiny-random", seed=0)
    problems = sat_eval.load_problems(str(two_problem_file(tmp_path)))
    instances = [instance for _, instance in problems]
    texts = sat_eval.sample_texts(model, tokenizer, instances, samples=1, max_new_tokens=4, temperature=0.6, top_p=1.0, seed=0,
                                  batch_size=2, progress=False, prompt_options={"answer_format": "named", "variable_notes": True})
    assert asked == [prompt_messages(i, answer_format="named", variable_notes=True) for i in instances]
    assert sat_eval.score_problems(problems, texts)["overall"]["num_problems"] == 2
    parser = __import__("argparse").ArgumentParser()
    sat_eval.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "x", "--model", "tiny-random", "--answer-format", "letters"])
