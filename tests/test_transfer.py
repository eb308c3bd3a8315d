"""Reasoning transfer (`python -m benchmarks.transfer`): scoring, seeded problems, paired test."""

import json
from dataclasses import dataclass

import pytest

from benchmarks import transfer
from benchmarks.transfer import exact_match, final_answer, last_boxed

pytest.importorskip("torch")


# ------------------------------------------------------------------------- scoring


def test_the_last_boxed_answer_keeps_nested_braces():
    assert last_boxed("\\boxed{1} so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert last_boxed("no box") is None and last_boxed("\\boxed{open") is None


def test_without_a_box_the_final_number_is_the_answer():
    assert final_answer("12 apples and 3 pears: 1,234.5 in all.") == "1,234.5"
    assert final_answer("I do not know") is None


@pytest.mark.parametrize(
    "reply, answer, score",
    [
        ("so \\boxed{42}", "42", 1.0),
        ("the total is 1,000.", "1000", 1.0),
        ("\\boxed{0.50}", "0.5", 1.0),
        ("\\boxed{ $-3$ }", "-3", 1.0),
        ("\\boxed{\\frac{1}{2}}", "\\boxed{\\frac{1}{2}}", 1.0),
        ("\\boxed{41} not 42", "42", 0.0),  # the box decides, not the last number
        ("no answer", "42", 0.0),
    ],
)
def test_exact_match(reply, answer, score):
    assert exact_match(reply, answer) == score


# ------------------------------------------------------------- a stub policy, by hand


@dataclass
class Reply:
    text: str


class Answers:
    """A policy that answers each question from a table (right or wrong on purpose)."""

    def __init__(self, table):
        self.table = table

    def act(self, prompts, *, seed, temperature=None):
        return [Reply(self.table[p[0]["content"].split("\n\n")[0]]) for p in prompts]


def data_file(tmp_path):
    rows = [{"question": "1+1?", "answer": "2"}, {"question": "2*3?", "answer": "6"}, {"question": "10-4?", "answer": "\\boxed{6}"}]
    path = tmp_path / "math.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_paired_comparison_of_two_policies_by_hand(tmp_path, monkeypatch):
    a = Answers({"1+1?": "\\boxed{2}", "2*3?": "\\boxed{5}", "10-4?": "6"})  # 2 of 3
    b = Answers({"1+1?": "\\boxed{2}", "2*3?": "\\boxed{6}", "10-4?": "\\boxed{6}"})  # 3 of 3
    monkeypatch.setattr(transfer, "_policy", lambda model, options: {"a": a, "b": b}[model])
    report = transfer.run(transfer.parse(["model=a,b", f"data={data_file(tmp_path)}"]))
    assert report["models"]["A"]["data"]["accuracy"] == pytest.approx(2 / 3)
    assert report["models"]["B"]["all"]["accuracy"] == 1.0
    paired = report["paired"]["all"]
    assert paired["pairs"] == 3 and paired["difference"] == pytest.approx(1 / 3)
    assert (paired["better"], paired["worse"]) == (1, 0) and paired["sign_test_p"] == 1.0
    # differences 0, 1, 0: sample sd sqrt(1/3), half-width 1.96 * sd / sqrt(3)
    half = 1.96 * (1 / 3) ** 0.5 / 3**0.5
    assert paired["difference_ci95"] == pytest.approx([1 / 3 - half, 1 / 3 + half])


# -------------------------------------------------------------- tiny-random, end to end


def test_data_file_with_two_tiny_models(tmp_path, capsys):
    out = tmp_path / "report.json"
    code = transfer.main(["model=tiny-random,tiny-random", f"data={data_file(tmp_path)}", "max_new_tokens=4",
                          "threads=1", f"out={out}"])
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert "B - A [95% CI]" in printed[0]
    line = json.loads(printed[-1])
    assert line == json.loads(out.read_text())
    assert line["models"]["A"]["all"]["items"] == 3
    # the same model twice, greedy, on the same items: identical answers
    assert line["paired"]["all"]["pairs"] == 3 and line["paired"]["all"]["difference"] == 0.0


def test_reasoning_gym_families_are_seeded_and_scored_by_their_scorer():
    pytest.importorskip("reasoning_gym")
    first = transfer.reasoning_gym_items("basic_arithmetic", count=3, seed=7)
    again = transfer.reasoning_gym_items("basic_arithmetic", count=3, seed=7)
    assert [i.question for i in first] == [i.question for i in again]
    assert [i.question for i in transfer.reasoning_gym_items("basic_arithmetic", count=3, seed=8)] != [i.question for i in first]
    for item in first + transfer.reasoning_gym_items("knights_knaves", count=2, seed=7):
        assert item.score(f"so \\boxed{{{item.answer}}}") == 1.0
        assert item.score("\\boxed{nonsense}") == 0.0


def test_default_families_with_a_tiny_model(capsys):
    pytest.importorskip("reasoning_gym")
    assert transfer.main(["model=tiny-random", "count=2", "max_new_tokens=4", "threads=1"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line["models"]["tiny-random"]) == {"basic_arithmetic", "knights_knaves", "all", "model"}
    assert line["models"]["tiny-random"]["all"]["items"] == 4 and "paired" not in line


@pytest.mark.parametrize(
    "argument, message",
    [
        ("modle=x", "unknown key 'modle'; valid keys: model"),
        ("count=0", "count must be >= 1"),
        ("prompt=chat", "prompt='chat' is not valid"),
        ("model=a,b,c", "give one model, or two (A,B)"),
        ("tasks=no_such_family", "unknown reasoning-gym family 'no_such_family'"),
        ("data=/no/such/file.jsonl", "cannot be read"),
    ],
)
def test_bad_options_are_named_before_a_model_loads(capsys, argument, message):
    if argument.startswith("tasks"):
        pytest.importorskip("reasoning_gym")
    assert transfer.main(["model=tiny-random", argument]) == 2
    assert message in capsys.readouterr().err


def test_malformed_data_rows_are_named(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "1+1?"}\n')
    assert transfer.main(["model=tiny-random", f"data={path}"]) == 2
    assert 'line 1: expected an object with "question" and "answer"' in capsys.readouterr().err
