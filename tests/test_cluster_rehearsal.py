"""A rehearsal of the cluster job: `backend=openrlhf submit=true` against a real local Ray head.

The test starts a Ray head (its own ports and temp dir, two fake GPUs) with
`tests/cluster_standins` on its PYTHONPATH and runs the commands of README.md's cluster
recipe (read from the README, with this head's address and a temporary `out=`):
`python -m trainers.selfplay ... backend=openrlhf submit=true` writes the job and submits
it with `ray job submit` exactly as a cluster user would; then the test reads what happened. Ray's job server, OpenRLHF
0.11.2's `train_ppo_ray.train` (placement groups, `RolloutRayActor`, `SamplesGenerator`,
`PPOTrainer` with our RAE experience maker, `WorkerWrap`) and this project's agent run as
they are; only vLLM's engine, DeepSpeed, flash-attn and the CUDA-bound model actor are CPU
stand-ins (tests/cluster_standins/README.md). The stand-ins append every generation, batch,
update, weight load and checkpoint to $REHEARSAL_LOG; the assertions read that log.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

pytest.importorskip("openrlhf")
pytest.importorskip("datasets")
pytest.importorskip("torchdata")

from trainers.learning.advantages import RoleBaselines  # noqa: E402
from trainers.backends.openrlhf.tasks import Row  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STANDINS = ROOT / "tests" / "cluster_standins"
pytestmark = pytest.mark.slow
NO_TOKEN_AUTH = {"RAY_AUTH_MODE": "disabled"}
"""Ray >= 2.52 turns token authentication on for a new cluster once ~/.ray/auth_token exists
(any earlier local ray.init() writes one); this cluster and its client agree to go without."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayHead:
    """A `ray start --head --block` of this test's own: its ports, its temp dir, its process group."""

    def __init__(self, tmp: Path, log: Path):
        # Ray's unix sockets live under its temp dir, and their paths may not exceed 107 bytes
        self.ray_temp = tempfile.mkdtemp(prefix="ray-rehearsal-", dir="/tmp")
        self.dashboard = f"http://127.0.0.1:{_free_port()}"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(STANDINS), str(ROOT)]),
            "REHEARSAL_LOG": str(log),
            "RAY_DEDUP_LOGS": "0",
            "OMP_NUM_THREADS": "1",
            **NO_TOKEN_AUTH,
        }
        ray = Path(sys.executable).with_name("ray")
        self.process = subprocess.Popen(
            [str(ray), "start", "--head", "--block", f"--port={_free_port()}", "--num-cpus=4", "--num-gpus=2",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard.rsplit(':', 1)[1]}",
             f"--temp-dir={self.ray_temp}", "--disable-usage-stats"],
            env=env, stdout=open(tmp / "ray-head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait_for_job_server(tmp / "ray-head.log")

    def _wait_for_job_server(self, head_log: Path, timeout: float = 90.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited: {head_log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2):
                    return
            except urllib.error.HTTPError:  # it answers (token authentication is the CLI's business)
                return
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"the Ray job server did not answer within {timeout:.0f} s: {head_log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop this head and every process of its session (Ray daemonizes some of them), no other Ray."""
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid in self._session_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.ray_temp, ignore_errors=True)

    def _session_pids(self) -> list[int]:
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and self.ray_temp.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
        return pids


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rehearsal")
    log = tmp / "events.jsonl"
    head = RayHead(tmp, log)
    yield head, tmp, log
    head.stop()


def readme_recipe() -> list[list[str]]:
    """The commands of README.md's cluster recipe (the fenced block after `<!-- cluster-recipe -->`)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- cluster-recipe -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def recipe_job(env: str) -> list[str]:
    """The README's `python -m trainers.selfplay env=<env> ...` command, as argv."""
    (command,) = [c for c in readme_recipe() if c[:3] == ["python", "-m", "trainers.selfplay"] and f"env={env}" in c]
    return command


def test_the_readme_recipe_starts_a_head_submits_the_jobs_and_stops():
    commands = readme_recipe()
    assert commands[0][:3] == ["ray", "start", "--head"] and commands[-1] == ["ray", "stop"]
    for command in commands[1:-1]:
        assert command[:3] == ["python", "-m", "trainers.selfplay"]
        assert {"backend=openrlhf", "submit=true"} <= set(command)


def submit(cluster, name: str, command: list[str]) -> tuple[Path, list[dict]]:
    """Run the README's job `command` against this test's head and run dir; returns (run dir, its events)."""
    head, tmp, log = cluster
    out = tmp / name
    start = log.stat().st_size if log.exists() else 0
    own = {"ray_address": head.dashboard, "out": str(out)}  # this head's port, this test's folder
    keys = [f"{k}={own[k]}" if (k := arg.split("=", 1)[0]) in own else arg for arg in command[3:]]
    result = subprocess.run(
        [sys.executable, "-m", "trainers.selfplay", *keys],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **NO_TOKEN_AUTH},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    with open(log, encoding="utf-8") as handle:
        handle.seek(start)
        events = [json.loads(line) for line in handle]
    return out, events


def by_event(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e["event"] == name]


def samples(events: list[dict]) -> list[dict]:
    """One dict per sample handed to the actor's update, with the update step that trained on it."""
    rows, step = [], 0
    for event in events:
        if event["event"] == "fit":
            step += 1
        if event["event"] != "append":
            continue
        for i, label in enumerate(event["labels"]):
            fields = ("role", "copy", "turns", "reward", "advantage", "action_tokens")
            rows.append({"row": Row.from_label(label), "step": step, **{k: event[k][i] for k in fields}})
    return rows


def test_a_self_play_job_runs_through_ray_openrlhf_and_the_agent(cluster):
    out, events = submit(cluster, "kuhn", recipe_job("kuhn_poker"))
    assert "steps=2" in recipe_job("kuhn_poker") and "max_new_tokens=24" in recipe_job("kuhn_poker")
    launch = json.loads((out / "openrlhf" / "launch.json").read_text())
    # Ray start-up, the engine and the actor built from the job's model
    assert len(by_event(events, "engine_started")) == 1 and len(by_event(events, "actor_ready")) == 1
    # every seat of every game reached the update once: rows x copies x seats per step, nothing lost or duplicated
    got = samples(events)
    assert len(got) == launch["samples_per_step"] * 2
    seats = Counter((s["row"].row, s["copy"], s["role"]) for s in got)
    assert set(seats.values()) == {1}
    assert {(r, c) for r, c, _ in seats} == {(r, c) for r in range(launch["rows"]) for c in range(launch["samples_per_prompt"] // 2)}
    assert all({role for (r, c, role) in seats if (r, c) == game} == {0, 1} for game in {(r, c) for r, c, _ in seats})
    # zero-sum returns per game, as the env scored them
    returns = defaultdict(float)
    for s in got:
        returns[(s["row"].row, s["copy"])] += s["reward"]
    assert all(abs(total) < 1e-6 for total in returns.values())
    # RAE: A = R - b[env, role], b read before this game's return updates it, a step's games in (row, copy)
    # order (OpenRLHF's dataloader shuffles the rows into steps)
    assert Counter(s["step"] for s in got) == {0: launch["samples_per_step"], 1: launch["samples_per_step"]}
    baselines = RoleBaselines(0.95)
    for step in range(2):
        for s in sorted((s for s in got if s["step"] == step), key=lambda s: (s["row"].row, s["copy"], s["role"])):
            if s["turns"] == 0:
                assert s["advantage"] == 0.0
                continue
            expected = s["reward"] - baselines.value(("kuhn_poker", s["role"]))
            assert s["advantage"] == pytest.approx(expected, abs=1e-5)
            baselines.update(("kuhn_poker", s["role"]), s["reward"])
    # the update changed the weights, the engine loaded exactly them, each step; checkpoints carry the baselines
    fits, broadcasts, loads = by_event(events, "fit"), by_event(events, "broadcast"), by_event(events, "engine_weights_loaded")
    assert len(fits) == len(broadcasts) == len(loads) == 2
    assert fits[0]["checksum"] != by_event(events, "actor_ready")[0]["checksum"]
    assert [b["checksum"] for b in broadcasts] == [w["checksum"] for w in loads]
    saves = by_event(events, "save_checkpoint")
    assert saves and all("selfplay_rae_baselines" in s["client_states"] for s in saves)
    assert (out / "openrlhf" / "final" / "config.json").is_file()
    # every turn stops at the chat's end of turn and stays within the per-turn budget
    generations = by_event(events, "generate")
    assert generations and all(g["max_tokens"] <= 24 and g["stop_token_ids"] for g in generations)


def test_a_sat_job_runs_grpo_groups_through_the_same_path(cluster):
    out, events = submit(cluster, "sat", recipe_job("sat"))
    assert {"steps=1", "group_size=4", "max_new_tokens=16"} <= set(recipe_job("sat"))
    got = samples(events)
    launch = json.loads((out / "openrlhf" / "launch.json").read_text())
    assert len(got) == launch["samples_per_step"] == 8
    groups = defaultdict(list)
    for s in got:
        assert s["row"].kind == "task" and s["role"] == 0
        groups[s["row"].row].append(s)
    assert sorted(len(g) for g in groups.values()) == [4, 4]
    for group in groups.values():  # GRPO within the row's group: mean 0, (R - mean) / (std + eps)
        rewards = [s["reward"] for s in group]
        mean = sum(rewards) / len(rewards)
        std = (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5
        for s in group:
            assert s["advantage"] == pytest.approx((s["reward"] - mean) / (std + 1e-6), abs=1e-4)
    assert len(by_event(events, "engine_weights_loaded")) == 1
