"""End-to-end runs of `python -m trainers.selfplay` on the tiny random model.

Each run is a few steps of a few games into a temporary run directory; the tests check the
directory layout, the metrics the run wrote, and the command line's handling of help,
unknown keys, bad values and an existing run directory.
"""

import json
import math
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from trainers.run.config import TrainConfig
from trainers.selfplay import main

ROOT = Path(__file__).resolve().parents[1]

# The smallest run that still trains, checkpoints and evaluates.
SMALL = [
    "model=tiny-random",
    "tensorboard=false",
    "progress=false",
    "steps=2",
    "games_per_step=4",
    "eval_games=2",
    "save_every=1",
    "max_new_tokens=8",
    "threads=1",
]
TIMING_KEYS = ("time/generation_s", "time/train_s", "time/env_s")


def run(out: Path, *overrides: str) -> list[dict]:
    """Run the CLI into `out`; return its metrics lines."""
    assert main([*SMALL, f"out={out}", *overrides]) == 0
    return read_metrics(out)


def read_metrics(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def check_layout(out: Path, metrics: list[dict], steps: int = 2) -> dict:
    """The run directory every run must leave; returns the final evaluation."""
    config = json.loads((out / "config.json").read_text())
    assert config["out"] == str(out)
    assert config["steps"] == steps
    assert [m["step"] for m in metrics] == list(range(steps))
    for m in metrics:
        for key in TIMING_KEYS:
            assert isinstance(m[key], float) and m[key] >= 0, key
        assert m["samples"] > 0
        assert 0 <= m["samples_trained"] <= m["samples"]
        if "invalid_rate" in m:
            assert 0.0 <= m["invalid_rate"] <= 1.0
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name != "best")
    # save_every=1, keep_checkpoints=2 (default): the last two steps survive
    assert checkpoints == [f"step_{s:08d}" for s in range(max(1, steps - 1), steps + 1)]
    best = json.loads((out / "checkpoints" / "best" / "meta.json").read_text())
    assert best["step"] in {e["step"] for e in map(json.loads, map(Path.read_text, (out / "eval").glob("step_*.json")))}
    for name in checkpoints:
        meta = json.loads((out / "checkpoints" / name / "meta.json").read_text())
        assert meta["step"] == int(name.split("_")[1])
        assert meta["weights"] == "model"
        assert (out / "checkpoints" / name / "model" / "model.safetensors").is_file()
    final = json.loads((out / "eval" / "final.json").read_text())
    assert final["step"] == steps
    return final


def check_self_play_returns(m: dict, env_id: str) -> None:
    """Every seat is the learner: the per-seat mean returns of a zero-sum game cancel."""
    first, second = m[f"return/{env_id}/0"], m[f"return/{env_id}/1"]
    assert math.isclose(first + second, 0.0, abs_tol=1e-9), (first, second)


def check_match_report(report: dict, eval_games: int = 2) -> None:
    assert report["games"] == 2 * eval_games  # both seats
    assert sum(seat["games"] for seat in report["per_seat"].values()) == report["games"]
    rates = report["win_rate"] + report["draw_rate"] + report["loss_rate"]
    assert math.isclose(rates, 1.0)
    assert 0.0 <= report["invalid_rate"] <= 1.0


# simple_negotiation's default (max_quantity=10) has 200 legal offers per turn and a 6k-token
# prompt under the byte-level tiny tokenizer: scoring every candidate in choice mode takes
# minutes on a CPU, so the test plays the max_quantity=1 variant (2-4 legal actions).
# TicTacToe's exact exploitability reads the model at 4,520 positions (about 90 s per
# evaluation for the tiny model's byte-level prompts): its own test below checks it.
GAME_KWARGS = {"simple_negotiation": ['env_kwargs={"max_quantity": 1}'], "tic_tac_toe": ["eval_positions=0"]}


@pytest.mark.parametrize("env_id", ["kuhn_poker", "tic_tac_toe", "simple_negotiation"])
def test_choice_mode_self_play_run(tmp_path, env_id):
    out = tmp_path / "run"
    metrics = run(out, f"env={env_id}", "mode=choice", "eval_opponents=random", *GAME_KWARGS.get(env_id, []))
    final = check_layout(out, metrics)
    for m in metrics:
        assert m["games"] == 4
        # pure self-play: every turn of every game is a learner sample
        assert m["samples"] == m["turns"] >= 4
        assert m["invalid_rate"] == 0.0  # choice mode only ever plays legal strings
        check_self_play_returns(m, env_id)
        if m["samples_trained"]:
            assert m["train/samples"] == m["samples_trained"]
        else:  # every advantage was zero (e.g. all draws): no update, no train/ metrics
            assert m["advantage/zero_fraction"] == 1.0
            assert not any(key.startswith("train/") for key in m)
    check_match_report(final[f"{env_id}/random"])
    assert final[f"{env_id}/random"]["invalid_rate"] == 0.0
    if env_id == "kuhn_poker":
        check_exploitability(final)


def test_direct_mode_kuhn_poker_run(tmp_path):
    out = tmp_path / "run"
    metrics = run(out, "env=kuhn_poker", "mode=direct", "eval_opponents=random,rule_based")
    final = check_layout(out, metrics)
    for m in metrics:
        assert m["games"] == 4
        assert m["samples"] == m["turns"]
        # an untrained random model never writes a legal answer; a forfeit ends the game
        # at the first invalid answer, so every game is one invalid turn
        assert m["invalid_rate"] == 1.0
        assert m["samples"] == 4
        check_self_play_returns(m, "kuhn_poker")
        assert m["truncated_rate"] == 0.0
    for opponent in ("random", "rule_based"):
        report = final[f"kuhn_poker/{opponent}"]
        check_match_report(report)
        assert report["invalid_rate"] == 1.0
        assert report["loss_rate"] == 1.0
        assert report["mean_return"] == -2.0  # forfeit: the worst outcome of a hand
    check_exploitability(final)


def check_exploitability(final: dict) -> None:
    """The reported exploitability is that of the reported policy table, recomputed here."""
    import games
    from games import analysis

    table = {key: {int(a): p for a, p in dist.items()} for key, dist in final["kuhn_poker/policy"].items()}
    assert len(table) == 12
    assert final["kuhn_poker/exploitability"] == pytest.approx(analysis.exploitability(games.load("kuhn_poker"), table), abs=1e-12)


@pytest.mark.slow
def test_tic_tac_toe_run_reports_its_exact_exploitability_at_every_evaluation(tmp_path):
    import games
    from games import positions
    from trainers.run.report import before_after_rows, evaluation_history

    out = tmp_path / "run"
    metrics = run(out, "env=tic_tac_toe", "mode=choice", "steps=1", "games_per_step=2", "eval_games=1",
                  "eval_opponents=random", "eval_positions=10000")
    check_layout(out, metrics, steps=1)
    graph = positions.position_graph(games.load("tic_tac_toe"))
    for step in (0, 1):
        evaluation = json.loads((out / "eval" / f"step_{step:08d}.json").read_text())
        assert "tic_tac_toe/policy" not in evaluation  # 4,520 positions: kept beside the evaluation
        tables = json.loads((out / "eval" / "policies" / f"step_{step:08d}.json").read_text())
        table = {key: {int(a): p for a, p in dist.items()} for key, dist in tables["tic_tac_toe"].items()}
        assert len(table) == 4520
        value = evaluation["tic_tac_toe/exploitability"]
        assert value == pytest.approx(positions.exploitability(graph, table), abs=1e-12)
        best_responses = evaluation["tic_tac_toe/best_response_values"]
        assert sum(best_responses) / 2 == pytest.approx(value, abs=1e-12)  # zero-sum: their mean
        assert 0.5 < value < 1.0  # near the uniform policy's 0.960, far from perfect play's 0
    rows = {name: (before, after) for name, before, after in before_after_rows(evaluation_history(out / "eval"))}
    assert rows["exploitability tic_tac_toe"][0] == json.loads((out / "eval" / "step_00000000.json").read_text())[
        "tic_tac_toe/exploitability"]


def test_sat_task_run(tmp_path):
    out = tmp_path / "run"
    metrics = run(out, "env=sat", "prompts_per_step=2", "group_size=2", "task_mode=direct")  # free text (choice: test_task_parts)
    final = check_layout(out, metrics)
    for m in metrics:
        assert m["samples"] == 4  # prompts_per_step * group_size
        # the random model never boxes an answer: every reward is SAT's no-answer -1
        assert m["reward/sat"] == -1.0 and m["solved/sat"] == 0.0 and m["invalid_rate/sat"] == 1.0
        assert "games" not in m  # no game was played
    assert set(final) == {"step", "sat"}
    assert final["sat"]["level"] == [3, 5, 5]  # SatEnv's default level
    assert final["sat"]["answers"] == 20 * 4  # 20 held-out formulas, eval_samples answers each
    assert final["sat"]["pass_at_1"] == 0.0 and final["sat"]["no_answer_rate"] == 1.0
    from curricula.sat import heldout_instances
    from envs.sat import SatTask

    assert final["sat"]["random_guess_rate"] == pytest.approx(SatTask().guess_rate(heldout_instances((3, 5, 5))))


def test_multi_env_run(tmp_path):
    out = tmp_path / "run"
    metrics = run(out, "env=kuhn_poker,tic_tac_toe", "eval_opponents=random", "advantage=rae", "eval_positions=0")
    final = check_layout(out, metrics)
    assert json.loads((out / "config.json").read_text())["env"] == ["kuhn_poker", "tic_tac_toe"]
    for m in metrics:
        assert m["games"] == 4  # split between the two games
        for env_id in ("kuhn_poker", "tic_tac_toe"):
            check_self_play_returns(m, env_id)
            assert f"baseline/{env_id}/0" in m
    for env_id in ("kuhn_poker", "tic_tac_toe"):
        check_match_report(final[f"{env_id}/random"])


def test_a_full_disk_at_a_checkpoint_stops_the_run_cleanly_and_it_resumes(tmp_path, capsys, monkeypatch):
    """A checkpoint that cannot be written (torch.save reports a full disk as a RuntimeError)
    stops the run with the last complete checkpoint named, leaves no half-written folder,
    and the same command with resume=true finishes the run."""
    import torch

    real_save = torch.save

    def full_disk_at_step_2(obj, path, *args, **kwargs):
        if "step_00000002" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 948820608 vs 948820500")
        return real_save(obj, path, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(torch, "save", full_disk_at_step_2)
    assert main([*SMALL, f"out={out}"]) == 1
    error = capsys.readouterr().err
    assert "could not write" in error and "is the disk full?" in error and "resume=true" in error
    assert f"its last complete checkpoint is {out / 'checkpoints' / 'step_00000001'}" in error
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step_")) == ["step_00000001"]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no staging left
    monkeypatch.setattr(torch, "save", real_save)
    assert main([*SMALL, f"out={out}", "resume=true"]) == 0
    assert [m["step"] for m in read_metrics(out)] == [0, 1]


def test_existing_run_directory_is_refused_without_resume(tmp_path, capsys):
    out = tmp_path / "run"
    run(out, "steps=1", "games_per_step=2", "eval_opponents=random")
    before = (out / "metrics.jsonl").read_text()
    assert main([*SMALL, f"out={out}", "steps=1"]) == 2
    assert "resume=true" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == before


def test_help_lists_every_key_with_its_default(capsys):
    assert main(["--help"]) == 0
    printed = capsys.readouterr().out
    defaults = TrainConfig()
    lines = printed.splitlines()
    for f in fields(TrainConfig):
        line = next((l for l in lines if l.split() and l.split()[0] == f.name), None)
        assert line is not None, f"--help does not list {f.name}"
        value = getattr(defaults, f.name)
        shown = ",".join(value) if isinstance(value, list) else json.dumps(value) if isinstance(value, dict) else value
        assert line.endswith(f"(default: {shown})"), line
    assert "env" in printed and "kuhn_poker" in printed


def test_unknown_key_exits_2_and_names_the_valid_keys(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["stpes=3", f"out={out}"]) == 2
    error = capsys.readouterr().err
    assert "stpes" in error
    for f in fields(TrainConfig):
        assert f.name in error
    assert not out.exists()


@pytest.mark.parametrize(
    "argument, expected",
    [
        ("mode=fast", ["mode='fast'", "choice", "direct", "think"]),
        ("steps=abc", ["steps='abc'", "int"]),
        ("steps=0", ["steps must be >= 1"]),
        ("resume=maybe", ["resume='maybe'", "bool"]),
        ("env=chess", ["chess", "kuhn_poker", "tic_tac_toe"]),
        ("steps", ["key=value"]),
    ],
)
def test_bad_values_are_clear_errors(tmp_path, capsys, argument, expected):
    out = tmp_path / "never"
    assert main([argument, f"out={out}"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ")
    for fragment in expected:
        assert fragment in error, (fragment, error)
    assert not out.exists()


def test_keys_this_run_would_ignore_are_refused_together_by_name(tmp_path, capsys):
    from trainers.run.config import SCOPED_KEYS

    out = tmp_path / "never"
    keys = ["league_size=2", "chunk=128", "lora_dropout=0.1", "format_phase=off", "format_steps=2", "opponent_seat=1"]
    assert main([*keys, f"out={out}"]) == 2
    error = capsys.readouterr().err
    for ignored, scope in [("league_size=2", "opponent=league"), ("chunk=128", "thinking=markovian"),
                           ("lora_dropout=0.1", "lora_rank"), ("format_steps=2", "format phase"), ("opponent_seat='1'", "opponent")]:
        assert ignored in error and scope in error, (ignored, error)
    assert not out.exists()
    # every key of the table alone, where its setting is off, is refused naming it
    changed = {"league_sampling": "prioritized", "opponent_seat": "1", "vllm_python": "elsewhere/python",
               "lora_targets": ["q_proj"], "format_threshold": 0.5, "lora_dropout": 0.1, "league_latest_prob": 0.25, "lora_alpha": 16.0,
               "ray_address": "10.0.0.1:6379", "submit": True, "eval_envs_mode": "think"}
    for key in SCOPED_KEYS:
        value = changed.get(key, getattr(TrainConfig(), key) + 1 if isinstance(getattr(TrainConfig(), key), int) else None)
        with pytest.raises(ValueError, match=key):
            TrainConfig(format_phase="off", **{key: value}).validate()
    # the format phase only acts on free-text answers: not in a run of choice-mode games
    with pytest.raises(ValueError, match="format_steps"):
        TrainConfig(env=["kuhn_poker"], format_steps=3).validate()
    TrainConfig(env=["kuhn_poker"], mode="direct", format_steps=3).validate()
    TrainConfig(env=["kuhn_poker", "sat"], task_mode="direct", format_steps=3).validate()
    # task_mode=auto resolves as the run does: SAT in a choice-mode run answers part by part
    with pytest.raises(ValueError, match="format_steps"):
        TrainConfig(env=["kuhn_poker", "sat"], format_steps=3).validate()
    TrainConfig(env=["sat"], mode="choice", thinking="markovian", format_steps=3).validate()  # Markovian traces are free text
    # each is accepted where it acts
    TrainConfig(opponent="league", league_size=2, opponent_seat="1").validate()
    TrainConfig(lora_rank=4, lora_dropout=0.1).validate()
    TrainConfig(mode="think", thinking="markovian", chunk=128, carry=64).validate()


def test_module_entry_point_exit_code(tmp_path):
    """`python -m trainers.selfplay` itself exits 2 on an unknown key, before loading a model."""
    result = subprocess.run(
        [sys.executable, "-m", "trainers.selfplay", "stpes=3", f"out={tmp_path / 'never'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2
    assert "unknown key 'stpes'" in result.stderr
    assert "valid keys:" in result.stderr
    assert result.stdout == ""


def test_game_parameters_reach_the_game_alongside_the_turn_limit(tmp_path):
    out = tmp_path / "run"
    code = main(
        [*SMALL, f"out={out}", "env=simple_negotiation", 'env_kwargs={"max_turns": 4, "max_quantity": 1}',
         "steps=1", "games_per_step=2", "eval_opponents=random", "turn_limit=50"]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["turns"] <= 2 * 4  # the negotiation's own 4-turn limit, per game


def test_opponent_with_only_task_envs_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([*SMALL, f"out={out}", "env=sat", "opponent=random", "steps=1", "prompts_per_step=1", "group_size=2"])
    assert code == 2
    assert "opponent=random needs a game env" in capsys.readouterr().err
    assert not out.exists()


def test_opponent_that_cannot_play_an_env_fails_before_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([*SMALL, f"out={out}", "env=kuhn_poker,tic_tac_toe", "opponent=equilibrium"])
    assert code == 2
    assert "tic_tac_toe" in capsys.readouterr().err
    assert not out.exists()


def test_learning_rate_schedules_against_hand_computed_values(tmp_path):
    cosine = TrainConfig(steps=5, lr=1.0, lr_schedule="cosine", lr_final_ratio=0.1)
    # 0.1 + 0.9 * (1 + cos(pi * i / 4)) / 2
    assert [cosine.lr_at(i) for i in range(5)] == pytest.approx([1.0, 0.868198, 0.55, 0.231802, 0.1], abs=1e-6)
    linear = TrainConfig(steps=3, lr=2.0, lr_schedule="linear", lr_final_ratio=0.5)
    assert [linear.lr_at(i) for i in range(3)] == [2.0, 1.5, 1.0]
    assert TrainConfig(steps=3, lr=2.0).lr_at(2) == 2.0



def test_the_optimizer_steps_with_the_scheduled_learning_rate_and_the_metrics_say_so(tmp_path, monkeypatch):
    from trainers.learning.learner import Learner

    used = []  # the lr in the optimizer's parameter groups when each update runs
    original = Learner.update
    monkeypatch.setattr(
        Learner, "update", lambda self, s: used.append({g["lr"] for g in self.optimizer.param_groups}) or original(self, s)
    )
    out = tmp_path / "run"
    lines = run(out, "env=kuhn_poker", "eval_opponents=random", "lr=1e-3", "lr_schedule=linear", "lr_final_ratio=0.5")
    assert used == [{1e-3}, {5e-4}]
    assert [m["lr"] for m in lines] == [1e-3, 5e-4]
