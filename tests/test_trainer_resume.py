"""Resume: a run stopped after a checkpoint and resumed equals the uninterrupted run.

Run A trains 4 steps (checkpoints at 2 and 4). Run B trains 2 steps, is "killed" (a
metrics line of an unfinished step and a crashed save's leftovers are left behind), then
resumed with steps=4. Every deterministic metric, the final evaluation and the final
weights must be the same as A's.
"""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from safetensors.torch import load_file

from trainers.selfplay import main

BASE = [
    "model=tiny-random",
    "tensorboard=false",
    "progress=false",
    "env=kuhn_poker",
    "mode=choice",
    "eval_games=2",
    "eval_opponents=random",
    "save_every=2",
    "threads=1",
    "lr=1e-3",  # large enough that the weights move visibly in 4 steps
    "advantage=rae",  # every turn trains (batch-relative methods can zero a tiny batch)
    "ppo_epochs=2",  # the shuffling generator's state must survive the resume too
]


def is_timing(key: str) -> bool:
    return key.startswith("time/") or key.endswith("time_s") or key.endswith("_s")


def deterministic(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not is_timing(k)} for m in metrics]


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def weights(checkpoint: Path) -> dict:
    files = sorted(checkpoint.rglob("*.safetensors"))
    assert files, f"no safetensors in {checkpoint}"
    tensors = {}
    for file in files:
        tensors.update({f"{file.parent.name}/{k}": v for k, v in load_file(file).items()})
    return tensors


@pytest.mark.parametrize("lora", [
    ["games_per_step=4"],
    ["games_per_step=4", "lora_rank=4"],
    ["samples_per_step=10"],  # waves of whole games: the same games again after the resume
], ids=["full", "lora", "by-samples"])
def test_resumed_run_reproduces_the_uninterrupted_run(tmp_path, lora, kill_at_step):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*BASE, *lora, "steps=4", f"out={a}"]) == 0
    kill_at_step(3)  # step 2 completes (metrics line written, no checkpoint covers it), then the kill
    with pytest.raises(kill_at_step.error):
        main([*BASE, *lora, "steps=4", f"out={b}"])
    kill_at_step.disarm()
    checkpoints = b / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best", "step_00000002"]
    assert [m["step"] for m in read_metrics(b)] == [0, 1, 2]

    # What else a kill leaves: a save that crashed half-way (hidden staging folder), and a
    # folder without meta.json (copied in by other means) that looks like a later checkpoint.
    staging = checkpoints / ".tmp-step_00000004-crashed"
    (staging / "model").mkdir(parents=True)
    (staging / "meta.json").write_text(json.dumps({"format": 1, "step": 4, "weights": "model"}))
    (checkpoints / "step_00000003").mkdir()
    (checkpoints / "step_00000003" / "optimizer.pt").write_bytes(b"half-written")

    assert main([*BASE, *lora, "steps=4", "resume=true", f"out={b}"]) == 0

    metrics_a, metrics_b = read_metrics(a), read_metrics(b)
    assert [m["step"] for m in metrics_b] == [0, 1, 2, 3]
    assert deterministic(metrics_b) == deterministic(metrics_a)
    # the check is not vacuous: the runs trained and their metrics carry the losses
    assert all(m["samples_trained"] > 0 and "train/loss" in m for m in metrics_a)
    assert len({json.dumps(m["train/loss"]) for m in metrics_a}) > 1

    final_a = json.loads((a / "eval" / "final.json").read_text())
    final_b = json.loads((b / "eval" / "final.json").read_text())
    assert final_b == final_a

    assert not staging.exists()  # the next save clears a crashed save's leftovers
    last_a, last_b = a / "checkpoints" / "step_00000004", checkpoints / "step_00000004"
    assert json.loads((last_b / "meta.json").read_text())["weights"] == ("adapter" if "lora_rank=4" in lora else "model")
    tensors_a, tensors_b = weights(last_a), weights(last_b)
    assert tensors_a.keys() == tensors_b.keys()
    for key in tensors_a:
        assert torch.equal(tensors_a[key], tensors_b[key]), key
    # and training moved the weights away from the step-2 checkpoint of run A
    tensors_mid = weights(a / "checkpoints" / "step_00000002")
    assert any(not torch.equal(tensors_mid[k], tensors_a[k]) for k in tensors_a)
    extra_a = json.loads((last_a / "extra_state.json").read_text())
    extra_b = json.loads((last_b / "extra_state.json").read_text())
    assert extra_b["advantage"] == extra_a["advantage"]
    assert extra_b["step"] == extra_a["step"] == 4


def test_resume_with_the_other_weight_kind_is_refused(tmp_path, capsys):
    """A LoRA run cannot silently resume a full fine-tuning checkpoint."""
    out = tmp_path / "run"
    assert main([*BASE, "steps=1", "games_per_step=2", "save_every=1", f"out={out}"]) == 0
    code = main([*BASE, "steps=2", "games_per_step=2", "save_every=1", "lora_rank=4", "resume=true", f"out={out}"])
    assert code == 2
    assert "lora_rank: saved 0, now 4" in capsys.readouterr().err
