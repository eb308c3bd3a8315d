"""policy_average=ema: the learner keeps a moving average of its weights, which evaluation,
checkpoints/best and resume use; the keys are refused where they cannot act."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from safetensors.torch import load_file

from trainers.run.config import TrainConfig, parse_overrides
from trainers.selfplay import main

BASE = [
    "model=tiny-random", "tensorboard=false", "progress=false", "env=kuhn_poker", "games_per_step=8",
    "eval_games=2", "eval_opponents=random", "eval_every=1", "save_every=2", "threads=1", "lr=1e-3",
    "advantage=rae", "policy_average=ema", "average_decay=0.5",
]


def _learner(**overrides):
    from trainers.learning.learner import Learner
    from trainers.models import load_model

    config = TrainConfig(model="tiny-random", policy_average="ema", **overrides).validate()
    model, tokenizer = load_model("tiny-random", seed=0)
    return Learner(model, config, tokenizer=tokenizer)


def test_average_moves_by_the_decay_and_is_served_only_inside_the_block():
    learner = _learner(average_decay=0.75)
    initial = [p.detach().clone() for p in learner.trainable_parameters]
    with torch.no_grad():
        for p in learner.trainable_parameters:
            p.add_(1.0)
    learner.update_average()
    current = [p.detach().clone() for p in learner.trainable_parameters]
    for average, start in zip(learner.average, initial):
        torch.testing.assert_close(average, start + 0.25)  # 0.75 * w0 + 0.25 * (w0 + 1)
    with learner.serving_average():
        for p, average in zip(learner.trainable_parameters, learner.average):
            assert torch.equal(p, average)
    for p, saved in zip(learner.trainable_parameters, current):
        assert torch.equal(p, saved)


def test_served_average_is_restored_after_an_error():
    learner = _learner()
    learner.average = [a + 3.0 for a in learner.average]
    current = [p.detach().clone() for p in learner.trainable_parameters]
    with pytest.raises(RuntimeError, match="boom"):
        with learner.serving_average():
            raise RuntimeError("boom")
    for p, saved in zip(learner.trainable_parameters, current):
        assert torch.equal(p, saved)


def _weights(folder: Path) -> dict:
    tensors = {}
    for file in sorted(folder.rglob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def test_runs_evaluate_and_keep_the_average_and_resume_exactly(tmp_path, kill_at_step):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*BASE, "steps=4", f"out={a}"]) == 0
    evaluation = json.loads((a / "eval" / "step_00000004.json").read_text())
    # the average lags the iterate: after four large steps their policies differ
    assert evaluation["kuhn_poker/iterate_exploitability"] != evaluation["kuhn_poker/exploitability"]

    kill_at_step(3)
    with pytest.raises(kill_at_step.error):
        main([*BASE, "steps=4", f"out={b}"])
    kill_at_step.disarm()
    assert main([*BASE, "steps=4", "resume=true", f"out={b}"]) == 0
    for name in ("step_00000004.json", "step_00000003.json"):
        assert json.loads((b / "eval" / name).read_text()) == json.loads((a / "eval" / name).read_text())
    for key, tensor in load_file(a / "checkpoints" / "step_00000004" / "average.safetensors").items():
        assert torch.equal(tensor, load_file(b / "checkpoints" / "step_00000004" / "average.safetensors")[key])


def test_best_policy_holds_the_averaged_weights(tmp_path):
    from trainers.selfplay import Trainer

    trainer = Trainer(parse_overrides([*BASE, f"out={tmp_path / 'run'}"]))
    trainer.run_dir.create(trainer.config)
    for step in range(2):
        trainer.train_step(step)
    trainer.evaluate(2)  # the first evaluation is always the best so far
    learner = trainer.learner
    names = [name for name, p in learner.model.named_parameters() if p.requires_grad]
    average = dict(zip(names, learner.average))
    saved = _weights(tmp_path / "run" / "checkpoints" / "best" / "model")
    current = dict(learner.model.named_parameters())
    moved = [n for n in names if n in saved and not torch.equal(average[n], current[n])]
    assert moved, "two steps at lr 1e-3 move the weights away from their average"
    for name in moved:
        assert torch.equal(saved[name], average[name]), name


def test_average_decay_without_an_average_is_refused():
    with pytest.raises(ValueError, match="set policy_average=ema"):
        parse_overrides(["average_decay=0.5"])
    with pytest.raises(ValueError, match="average_decay"):
        parse_overrides(["policy_average=ema", "average_decay=1.0"])
    with pytest.raises(ValueError, match="policy_average"):
        parse_overrides(["policy_average=mean"])


def test_openrlhf_refuses_the_average():
    from trainers.backends.openrlhf.launcher import refuse_unmapped_keys

    with pytest.raises(ValueError, match="policy_average='ema'"):
        refuse_unmapped_keys(TrainConfig(backend="openrlhf", policy_average="ema"))
