"""backend=ray on a real local Ray (num_cpus=2, one session for the module), model=tiny-random.

* one worker plays exactly the games `Trainer.play` plays (samples and results equal);
* a worker killed by its process id in the middle of a step is replaced, its games are
  replayed, and the step returns every requested game exactly once (and, replay being
  the same computation, the same samples as an undisturbed step);
* a seeded `python -m trainers.selfplay backend=ray num_workers=1` run writes the metrics
  of the local backend;
* the whole job killed (SIGKILL of the driver, workers included) resumes with
  `resume=true` and ends with the uninterrupted run's metrics;
* workers import the project from the copy shipped in their runtime env, and a worker
  whose replacement cannot be placed fails the step with a clear error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
ray = pytest.importorskip("ray")

from trainers.run.checkpoints import checkpoint_step, latest_intact
from trainers.run.config import parse_overrides
from trainers.backends.ray import RayRolloutEngine, split_shares
from trainers.selfplay import Trainer, main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PLAY = ["model=tiny-random", "threads=1", "env=tic_tac_toe", "mode=choice"]
RUN = [
    "model=tiny-random",
    "tensorboard=false",
    "progress=false",
    "env=kuhn_poker",
    "mode=choice",
    "games_per_step=8",
    "eval_games=2",
    "eval_opponents=random",
    "threads=1",
    "lr=1e-3",
    "advantage=rae",
    "save_every=1",
    "steps=4",
]


def test_workers_run_the_project_shipped_in_the_engines_runtime_env(tmp_path):
    """The engine starts its own Ray (no session yet: this test runs first) and ships the project."""
    script = (
        "import ray\n"
        "from trainers.run.config import parse_overrides\n"
        "from trainers.backends.ray import RayRolloutEngine\n"
        f"engine = RayRolloutEngine(parse_overrides({[*PLAY, 'num_workers=1', f'out={tmp_path}']!r}))\n"
        "print('PROJECT', ray.get(engine.workers[0].project_path.remote()))\n"
        "engine.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("PROJECT ")]
    assert Path(path) != REPO and "runtime_resources" in path  # Ray's upload, not this checkout


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def engine_factory(ray_session):
    engines = []

    def build(config):
        engine = RayRolloutEngine(config)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.close()  # frees the CPUs for the next test's workers


def sample_record(sample):
    return (
        sample.env_id, sample.game_id, sample.role, sample.reward, sample.invalid,
        sample.prompt_ids, sample.response_ids, sample.old_logprobs, sample.choice_index, sample.info["text"],
    )


def result_record(result):
    return (result.env_id, result.game_id, sorted(result.learner_seats), result.returns, result.invalid, result.turns, result.truncated)


def test_shares_are_contiguous_and_cover_every_game():
    assert [len(s) for s in split_shares(list(range(10)), 3)] == [3, 3, 4]
    assert sum(split_shares(list(range(10)), 3), []) == list(range(10))
    assert split_shares([1], 2) == [[], [1]]


def test_one_worker_plays_exactly_the_local_games(tmp_path, engine_factory):
    config = parse_overrides([*PLAY, "games_per_step=8", "num_workers=1", f"out={tmp_path}"])
    trainer = Trainer(config)
    specs, seed = trainer.game_specs(0), 1234
    local_samples, local_results, _ = trainer.play(specs, seed)

    engine = engine_factory(config)
    engine.broadcast(trainer.learner.model, version=0)
    samples, results, timing = engine.play(specs, seed)

    assert [sample_record(s) for s in samples] == [sample_record(s) for s in local_samples]
    assert [result_record(r) for r in results] == [result_record(r) for r in local_results]
    assert timing.extra["workers"] == 1 and timing.extra["worker_restarts"] == 0
    assert len(samples) > len(specs)  # several turns per game: the comparison is not vacuous


def test_new_weights_reach_the_workers(tmp_path, engine_factory):
    import torch

    config = parse_overrides([*PLAY, "games_per_step=4", "num_workers=1", f"out={tmp_path}"])
    trainer = Trainer(config)
    engine = engine_factory(config)
    specs = trainer.game_specs(0)
    engine.broadcast(trainer.learner.model, version=0)
    before, _, _ = engine.play(specs, 7)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an "update": every weight changes
        for parameter in trainer.learner.model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=noise) * 0.5)
    engine.broadcast(trainer.learner.model, version=1)
    after, _, _ = engine.play(specs, 7)
    local_after, _, _ = trainer.play(specs, 7)
    assert [s.old_logprobs for s in after] == [s.old_logprobs for s in local_after]
    assert [s.old_logprobs for s in after] != [s.old_logprobs for s in before]


def test_a_worker_killed_mid_step_is_replaced_and_its_games_replayed(tmp_path, engine_factory):
    config = parse_overrides([*PLAY, "games_per_step=24", f"out={tmp_path}"])
    trainer = Trainer(config)
    specs, seed = trainer.game_specs(0), 99
    requested = [spec.game_id for spec in specs]
    # two workers: the Ray run's keys (the trainer above plays nothing itself here)
    engine = engine_factory(parse_overrides([*PLAY, "games_per_step=24", "backend=ray", "num_workers=2", f"out={tmp_path}"]))
    engine.broadcast(trainer.learner.model, version=0)
    undisturbed = engine.play(specs, seed)

    victim = engine.workers[0]
    pid = ray.get(victim.pid.remote())
    step = engine.submit(specs, seed)
    deadline = time.monotonic() + 60
    while not ray.get(victim.is_playing.remote()):  # the worker is inside play_games
        assert time.monotonic() < deadline, "the worker never started playing"
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    samples, results, timing = engine.collect(step)

    assert [r.game_id for r in results] == requested  # every game, in order
    assert Counter(r.game_id for r in results) == Counter(requested)  # exactly once
    assert {s.game_id for s in samples} == set(requested)
    assert timing.extra["worker_restarts"] == 1
    assert timing.extra["replayed_games"] == len(split_shares(specs, 2)[0])
    # a replay is the same computation: the step is the one an undisturbed run returns
    assert [sample_record(s) for s in samples] == [sample_record(s) for s in undisturbed[0]]
    assert [result_record(r) for r in results] == [result_record(r) for r in undisturbed[1]]
    assert engine.worker_pids()[0] != pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    again = engine.play(specs, seed)  # the replacement keeps serving later steps
    assert [r.game_id for r in again[1]] == requested


def test_a_worker_whose_replacement_cannot_be_placed_fails_the_step_clearly(tmp_path, engine_factory):
    import threading

    config = parse_overrides([*PLAY, "games_per_step=4", "num_workers=1", f"out={tmp_path}"])
    trainer = Trainer(config)
    engine = engine_factory(config)
    engine.broadcast(trainer.learner.model, version=0)
    engine._actor_class = engine._actor_class.options(resources={"no_such_resource": 1})  # no node has it
    engine.replace_timeout_s = 3
    ray.kill(engine.workers[0], no_restart=True)
    outcome = {}

    def step():
        try:
            engine.play(trainer.game_specs(0), 0)
        except RuntimeError as error:
            outcome["error"] = str(error)

    thread = threading.Thread(target=step, daemon=True)  # a step that waits forever must not hang the tests
    thread.start()
    thread.join(timeout=120)
    assert "did not start within 3 s" in outcome.get("error", "the step never ended")
    assert "games 0..3" in outcome["error"]


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def deterministic(metrics: list[dict]) -> list[dict]:
    """Metrics without wall-clock figures and the Ray engine's own counters."""
    return [
        {k: v for k, v in m.items() if not (k.startswith(("time/", "rollout/")) or k.endswith("_s"))}
        for m in metrics
    ]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "run"
    assert main([*RUN, f"out={out}"]) == 0
    return out


def test_a_seeded_one_worker_run_writes_the_local_metrics(tmp_path, ray_session, local_run):
    out = tmp_path / "ray"
    assert main([*RUN, "backend=ray", "num_workers=1", f"out={out}"]) == 0
    metrics, reference = read_metrics(out), read_metrics(local_run)
    assert [m["step"] for m in metrics] == [0, 1, 2, 3]
    assert deterministic(metrics) == deterministic(reference)
    assert all(m["rollout/workers"] == 1 for m in metrics)
    assert len({json.dumps(m["train/loss"]) for m in reference}) > 1  # it trained
    final = json.loads((out / "eval" / "final.json").read_text())
    assert final == json.loads((local_run / "eval" / "final.json").read_text())


def test_the_whole_job_killed_resumes_with_the_uninterrupted_metrics(tmp_path, ray_session, local_run):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "trainers.selfplay", *RUN, "backend=ray", "num_workers=1",
               f"ray_address={ray_session}", f"out={out}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    log = open(tmp_path / "job.log", "w+")
    job = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            latest = latest_intact(out / "checkpoints") if (out / "checkpoints").is_dir() else None
            if latest is not None and checkpoint_step(latest) >= 1:
                break
            assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 3 minutes"
            time.sleep(0.01)
        os.kill(job.pid, signal.SIGKILL)  # the driver; Ray ends its workers with it
        job.wait(timeout=30)
    finally:
        if job.poll() is None:
            os.kill(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
        log.close()
    assert not (out / "eval" / "final.json").exists(), "the job finished before the kill"

    assert main([*RUN, "backend=ray", "num_workers=1", "resume=true", f"out={out}"]) == 0
    assert [m["step"] for m in read_metrics(out)] == [0, 1, 2, 3]
    assert deterministic(read_metrics(out)) == deterministic(read_metrics(local_run))
    final = json.loads((out / "eval" / "final.json").read_text())
    assert final == json.loads((local_run / "eval" / "final.json").read_text())
