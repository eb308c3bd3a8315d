"""A run never loses data and fails early on bad input: resume rules, atomic files, damaged
checkpoints, non-finite numbers, bad paths, and a real kill -9 in the middle of a run."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from safetensors.torch import load_file

from trainers.selfplay import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "model=tiny-random",
    "tensorboard=false",
    "progress=false",
    "games_per_step=4",
    "eval_games=2",
    "eval_opponents=random",
    "threads=1",
    "advantage=rae",
    "lr=1e-3",
]


def run(out, *overrides) -> int:
    return main([*SMALL, f"out={out}", *overrides])


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def deterministic(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not (k.startswith("time/") or k.endswith("time_s"))} for m in lines]


# ---- resume rules --------------------------------------------------------------------------


def test_resume_with_a_changed_run_key_is_refused_naming_the_keys(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(out, "steps=1", "save_every=1") == 0
    before = (out / "metrics.jsonl").read_text()
    assert run(out, "steps=2", "resume=true", "seed=5", "games_per_step=8") == 2
    error = capsys.readouterr().err
    assert "seed: saved 0, now 5" in error and "games_per_step: saved 4, now 8" in error
    assert "steps" in error.split("may change on resume:")[1]
    assert (out / "metrics.jsonl").read_text() == before


def test_resume_may_extend_the_run_and_apply_a_new_learning_rate(tmp_path):
    out = tmp_path / "run"
    assert run(out, "steps=1", "save_every=1") == 0
    assert run(out, "steps=2", "resume=true", "lr=5e-4", "eval_games=3") == 0
    assert [m["step"] for m in metrics(out)] == [0, 1]
    optimizer = torch.load(out / "checkpoints" / "step_00000002" / "optimizer.pt", weights_only=True)
    assert optimizer["param_groups"][0]["lr"] == 5e-4
    final = json.loads((out / "eval" / "final.json").read_text())
    assert final["kuhn_poker/random"]["games"] == 6  # the new eval_games acts: 3 per seat


def test_resume_without_a_checkpoint_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 0}\n')
    assert run(out, "steps=2", "resume=true") == 2
    assert "no intact checkpoint" in capsys.readouterr().err
    assert run(tmp_path / "nothing", "steps=2", "resume=true") == 2
    assert not (tmp_path / "nothing").exists()


def test_a_failed_metrics_rewrite_on_resume_keeps_every_line(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert run(out, "steps=3", "save_every=2") == 0
    before = (out / "metrics.jsonl").read_text()
    assert len(before.splitlines()) == 3

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("trainers.run.run_dir.os.replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        run(out, "steps=4", "resume=true")
    assert (out / "metrics.jsonl").read_text() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".metrics")]  # no temporary left behind


def test_a_damaged_newest_checkpoint_is_skipped_on_resume(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run(straight, "steps=3", "save_every=1") == 0
    assert run(resumed, "steps=2", "save_every=1") == 0
    weights = resumed / "checkpoints" / "step_00000002" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated by a crash of the disk
    with pytest.warns(UserWarning, match="step_00000002"):
        assert run(resumed, "steps=3", "save_every=1", "resume=true") == 0
    assert deterministic(metrics(resumed)) == deterministic(metrics(straight))


# ---- bad input fails first, creating nothing -------------------------------------------------


@pytest.mark.parametrize(
    "argument, fragment",
    [
        ("lr=inf", "lr=inf is not a finite number"),
        ("temperature=nan", "temperature=nan is not a finite number"),
        ("top_p=0", "top_p must lie in (0.0, 1.0]"),
        ("top_p=5", "top_p must lie in (0.0, 1.0]"),
        ("clip=nan", "clip=nan is not a finite number"),
        ("max_grad_norm=-1", "max_grad_norm must be > 0"),
        ('env_kwargs={"hand": 5}', "['hand'] are not accepted by any selected env"),
        ("eval_opponents=grandmaster", "eval_opponents='grandmaster' is not valid"),
        ("model=./no/such/model", "model folder './no/such/model' does not exist"),
        ("opponent=checkpoint:/no/such/run", "does not exist"),
    ],
)
def test_bad_values_fail_before_anything_is_created(tmp_path, capsys, argument, fragment):
    out = tmp_path / "never"
    assert run(out, argument) == 2
    error = capsys.readouterr().err
    assert fragment in error, error
    assert len(error.strip().splitlines()) == 1
    assert not out.exists()


def test_an_evaluation_opponent_that_cannot_play_fails_before_training(tmp_path, capsys):
    out = tmp_path / "never"
    assert run(out, "env=tic_tac_toe", "eval_opponents=equilibrium") == 2
    assert "no equilibrium opponent for game 'tic_tac_toe'" in capsys.readouterr().err
    assert not out.exists()


def test_out_that_is_a_file_or_unwritable_is_a_one_line_error(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    assert run(a_file) == 2
    assert "is a file" in capsys.readouterr().err
    assert run(a_file / "run") == 2
    assert "is a file" in capsys.readouterr().err
    assert run("/proc/selfplay-run") == 2  # a file system that takes no new files, even from root
    assert "cannot write" in capsys.readouterr().err
    assert a_file.read_text() == "not a folder"


# ---- non-finite training stops before a checkpoint is damaged --------------------------------


def test_a_diverging_run_stops_before_writing_non_finite_weights(tmp_path, capsys):
    out = tmp_path / "run"
    code = run(out, "steps=6", "save_every=1", "lr=1e30", "ppo_epochs=2", "max_grad_norm=1e30")
    assert code == 1
    assert "stopping before the optimizer steps" in capsys.readouterr().err
    saved = sorted((out / "checkpoints").glob("step_*"))
    for checkpoint in saved:
        for name, tensor in load_file(checkpoint / "model" / "model.safetensors").items():
            assert torch.isfinite(tensor).all(), (checkpoint.name, name)
    assert len(metrics(out)) == len(saved)  # one line per completed step, none for the failed one


# ---- a real kill -9 ------------------------------------------------------------------------


def test_kill_9_mid_run_then_resume_equals_the_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    arguments = ["steps=6", "save_every=1", "keep_checkpoints=2"]
    assert run(straight, *arguments) == 0
    command = [sys.executable, "-m", "trainers.selfplay", *SMALL, f"out={killed}", *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (killed / "checkpoints" / "step_00000003").exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "checkpoints").is_dir()
    assert run(killed, *arguments, "resume=true") == 0
    assert deterministic(metrics(killed)) == deterministic(metrics(straight))
    final = [json.loads((folder / "eval" / "final.json").read_text()) for folder in (straight, killed)]
    assert final[0] == final[1]
    assert math.isfinite(final[0]["kuhn_poker/exploitability"])
