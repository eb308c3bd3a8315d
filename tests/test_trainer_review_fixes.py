"""Defects found by review of the trainer (issue 15), each pinned by a test on the tiny random model.

Every test here failed before its fix: the names say what the trainer must do.
"""

import json
import math
import random

import gymnasium
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import envs
from envs.spaces import text_space
from trainers.run.config import parse_overrides
from trainers.selfplay import Trainer, main

SMALL = [
    "model=tiny-random", "tensorboard=false", "progress=false", "steps=1", "games_per_step=4",
    "eval_games=2", "max_new_tokens=8", "threads=1",
]


def trainer(tmp_path, *overrides):
    return Trainer(parse_overrides([*SMALL, f"out={tmp_path / 'run'}", *overrides]))


# -- 1. opponent_seat is the fixed opponent's seat -----------------------------------------


@pytest.mark.parametrize("seat", ["0", "1"])
def test_opponent_seat_is_the_seat_the_fixed_opponent_takes(tmp_path, seat):
    specs = trainer(tmp_path, "opponent=random", f"opponent_seat={seat}").game_specs(0)
    learner = 1 - int(seat)
    assert [spec.learner_seats for spec in specs] == [(learner,)] * 4


# -- 2. the format phase in a mixed game + task run ----------------------------------------


def test_format_phase_of_a_mixed_run_clones_the_task_and_trains_the_choice_game_by_rl(tmp_path, monkeypatch):
    from trainers.learning.learner import Learner

    calls = {"imitate": [], "update": []}
    original_imitate, original_update = Learner.imitate, Learner.update
    monkeypatch.setattr(Learner, "imitate", lambda self, s: calls["imitate"].append(list(s)) or original_imitate(self, s))
    monkeypatch.setattr(Learner, "update", lambda self, s: calls["update"].append(list(s)) or original_update(self, s))
    run = trainer(tmp_path, "env=kuhn_poker,sat", "mode=choice", "prompts_per_step=2", "group_size=2",
                  "format_epochs=1", "advantage=rae", "task_mode=direct")  # free-text SAT has a format to learn
    metrics = run.train_step(0)
    assert metrics["invalid_rate/sat"] > 0.2  # a random model boxes nothing: SAT is in its format phase
    cloned = [s for batch in calls["imitate"] for s in batch]
    assert cloned and {s.env_id for s in cloned} == {"sat"}
    assert all(set(s.info["text"].removesuffix(run.tokenizer.eos_token or "")) <= set("\\boxed{}01") for s in cloned)
    trained = [s for batch in calls["update"] for s in batch]
    assert trained and {s.env_id for s in trained} == {"kuhn_poker"}  # RL goes on for the game


# -- 3. Markovian game runs are evaluated with the policy that was trained ------------------


MARKOVIAN = ["mode=think", "thinking=markovian", "chunk=16", "carry=8", "head=2", "max_chunks=2",
             "eval_opponents=random", "advantage=rae", "format_phase=off"]


def test_markovian_game_runs_are_evaluated_with_markovian_traces(tmp_path):
    from trainers.generation.base import PromptIds

    run = trainer(tmp_path, *MARKOVIAN)
    backend = run.policy.backend
    prompts, original = [], backend.generate
    backend.generate = lambda p, **kw: prompts.extend(p) or original(p, **kw)
    run.evaluate(0)
    assert prompts and all(isinstance(p, PromptIds) for p in prompts)  # every call is a chunk of a trace


# -- 4. eval_temperature applies to every evaluation --------------------------------------


def test_exploitability_is_measured_at_the_evaluation_temperature(tmp_path):
    tables = {}
    for temperature in ("1.0", "0.25"):
        run = trainer(tmp_path / temperature, "eval_opponents=random", f"eval_temperature={temperature}")
        tables[temperature] = run.evaluate(0)["kuhn_poker/policy"]
    key = next(iter(tables["1.0"]))
    cold, warm = tables["0.25"][key], tables["1.0"][key]
    # softmax(s / T): at T = 0.25 the odds ratio is the 4th power of the T = 1 one
    a, b = sorted(warm)[:2]
    assert math.log(cold[a] / cold[b]) == pytest.approx(4 * math.log(warm[a] / warm[b]), rel=1e-6)


def test_a_think_mode_policy_that_answers_invalidly_is_not_the_best(tmp_path):
    from trainers.evaluation.evaluate import selection_score

    run = trainer(tmp_path, "mode=think", "eval_opponents=random", "format_phase=off")
    results = run.evaluate(0)
    invalid = results["kuhn_poker/policy_invalid_rate"]
    assert invalid > 0.5  # the random model rarely boxes a legal action
    metric, value = selection_score(results, "step_00000000")
    assert metric == "exploitability"
    assert value == pytest.approx(results["kuhn_poker/exploitability"] + invalid * 4.0)  # Kuhn: returns in [-2, 2]


# -- 5. backend=ray with only tasks is refused --------------------------------------------


def test_backend_ray_with_only_task_envs_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMALL, f"out={out}", "env=sat", "backend=ray", "num_workers=2"]) == 2
    assert "backend=ray" in capsys.readouterr().err
    assert not out.exists()


# -- 6. one KL, normalised like the PPO term; loss_tokens read by the learner ---------------


def _text_batch(size=4, seed=0):
    from trainers.learning.samples import TurnSample

    rng = random.Random(seed)
    samples = []
    for i in range(size):
        prompt = [rng.randrange(3, 200) for _ in range(5)]
        response = [rng.randrange(3, 200) for _ in range(3 + i)]
        samples.append(TurnSample(prompt, response, [0.0] * len(response), "kuhn_poker", i % 2, i))
    return samples


def _learner(**overrides):
    from trainers.run.config import TrainConfig
    from trainers.learning.learner import Learner
    from trainers.models import load_model

    settings = dict(mode="direct", max_new_tokens=16, lr=1e-2, ppo_epochs=1, mini_batch_size=0, entropy_coef=0.0,
                    recompute_old_logprobs=True, max_grad_norm=1e9, seed=1)
    return Learner(load_model("tiny-random", seed=0)[0], TrainConfig(**{**settings, **overrides}).validate())


def test_the_text_kl_is_normalised_by_the_same_width_as_the_ppo_term():
    learner = _learner(kl_coef=1.0)
    with torch.no_grad():
        for p in learner.model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # move away from the reference (the initial weights)
    batch = _text_batch()
    reference = learner.reference_scores(batch).rows
    learner.model.zero_grad()
    rows = learner.score(learner.model, batch).rows
    width = 16  # max_new_tokens: the PPO term's constant
    kl = sum((torch.exp(q - p) - (q - p) - 1).sum() for p, q in zip(rows, reference)) / (len(batch) * width)
    kl.backward()
    expected = torch.cat([p.grad.flatten() for p in learner.model.parameters() if p.grad is not None]).norm().item()
    for sample in batch:
        sample.advantage = 0.0
    assert learner.update(batch)["grad_norm"] == pytest.approx(expected, rel=1e-4)


def test_the_learner_divides_a_sample_by_its_loss_tokens():
    import dataclasses

    batch = _text_batch(size=2)
    for sample in batch:
        sample.advantage = 1.0
    with_tokens = [dataclasses.replace(s, loss_tokens=40) for s in batch]
    # the same loss written as a scaled advantage: divide by 40 instead of the width 16
    scaled = [dataclasses.replace(s, advantage=16 / 40) for s in batch]
    assert _learner().update(with_tokens)["grad_norm"] == pytest.approx(_learner().update(scaled)["grad_norm"], rel=1e-5)


# -- 7. any registered task gets evaluation and a best checkpoint --------------------------


class DigitTask(gymnasium.Env):
    """+1 when the answer holds a digit, else 0; its reset info carries a 3-number level."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = text_space(256)
        self.action_space = text_space(4096)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.question = f"Say a number near {int(self.np_random.integers(0, 100))}."
        return self.question, {"level": (1, 2, 3)}

    def step(self, action):
        reward = 1.0 if any(c.isdigit() for c in action) else 0.0
        return self.question, reward, True, False, {"answer": action}


def test_a_registered_task_gets_evaluation_and_a_best_checkpoint(tmp_path):
    envs.register("digit_task", entry_point=DigitTask, overwrite=True)
    out = tmp_path / "run"
    assert main([*SMALL, f"out={out}", "env=digit_task", "prompts_per_step=2", "group_size=2", "eval_samples=2"]) == 0
    final = json.loads((out / "eval" / "final.json").read_text())
    assert final["digit_task"]["answers"] == 20 * 2  # 20 held-out instances, 2 answers each
    assert 0 <= final["digit_task"]["pass_at_1"] <= 1
    best = json.loads((out / "checkpoints" / "best" / "meta.json").read_text())
    assert best["pass_at_1"] == max(
        json.loads(p.read_text())["digit_task"]["pass_at_1"] for p in (out / "eval").glob("step_*.json")
    )


def test_only_sat_gets_the_sat_answer_space(tmp_path):
    from trainers.rollouts.play import run_tasks

    envs.register("digit_task", entry_point=DigitTask, overwrite=True)
    run = trainer(tmp_path, "env=digit_task")
    samples, _, _ = run_tasks("digit_task", envs.make("digit_task"), run.task_policy, prompts=1, group_size=2, seed=0)
    assert all("choices" not in s.info for s in samples)


# -- 8. the report: a rating panel; a missing TensorBoard is said -------------------------


def test_summary_png_has_a_rating_panel(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from trainers.run.report import write_summary_plot

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    for step, rating in ((0, 990.0), (10, 1010.0)):
        (eval_dir / f"step_{step:08d}.json").write_text(json.dumps(
            {"step": step, "kuhn_poker/exploitability": 0.3, "ratings": {f"step_{step:08d}": rating, "random": 1000.0}}
        ))
    figures = []
    original = plt.Figure.savefig
    monkeypatch.setattr(plt.Figure, "savefig", lambda self, *a, **k: figures.append(self) or original(self, *a, **k))
    write_summary_plot(eval_dir, tmp_path / "summary.png")
    (figure,) = figures
    rating_axes = [axis for axis in figure.axes if "rating" in axis.get_title().lower()]
    assert rating_axes
    (line,) = rating_axes[0].get_lines()
    assert list(line.get_ydata()) == [990.0, 1010.0]


def test_tensorboard_true_without_tensorboard_says_so(tmp_path, monkeypatch, capsys):
    import builtins

    from trainers.run.report import tensorboard_writer

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert tensorboard_writer(tmp_path, parse_overrides(["tensorboard=true"])) is None
    err = capsys.readouterr().err
    assert "tensorboard" in err and "tensorboard=false" in err
