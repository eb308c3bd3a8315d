"""`python -m trainers.selfplay ... backend=openrlhf`: the written job, checked against OpenRLHF 0.11.2.

`openrlhf.cli.train_ppo_ray` cannot be imported without vLLM and DeepSpeed, and it builds
its parser inside `if __name__ == "__main__":`. `trainers.openrlhf.cli` therefore builds
the parser by executing exactly those statements of the installed file (found with
`ast`); the written flags are parsed back with that unmodified parser, and then run
through OpenRLHF's own post-parse checks.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shlex
import socket
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
agent_base = pytest.importorskip("openrlhf.utils.agent")

from trainers.config import parse_overrides
from trainers.distributed.worker import game_env_kwargs
from trainers.openrlhf.cli import RAE_ALPHA_FLAG, openrlhf_parser, run
from trainers.openrlhf.launcher import ENTRY_MODULE, PACKAGES, shell_command, write_launch
from trainers.openrlhf.local_engine import LocalEngine, SamplingParams
from trainers.openrlhf.tasks import Row
from trainers.selfplay import Trainer, main

BASE = ["model=tiny-random", "tensorboard=false", "progress=false", "threads=1"]


def written(tmp_path, *overrides):
    config = parse_overrides([*BASE, "backend=openrlhf", f"out={tmp_path / 'run'}", *overrides])
    script = write_launch(config)
    return config, script, json.loads((script.parent / "launch.json").read_text())


def openrlhf_flags(argv: list[str]) -> list[str]:
    assert argv[:3] == ["ray", "job", "submit"]
    start = argv.index("--")
    assert argv[start + 1:start + 4] == ["python", "-m", ENTRY_MODULE]
    return argv[start + 4:]


def test_the_written_flags_are_openrlhfs_own(tmp_path):
    config, script, launch = written(
        tmp_path, "env=kuhn_poker", "steps=3", "games_per_step=8", "num_workers=2", "lr=2e-6", "kl_coef=0.01",
        "ppo_epochs=2", "max_new_tokens=48", "temperature=0.9",
    )
    flags = openrlhf_flags(launch["argv"])

    # 1. OpenRLHF's unmodified parser accepts every flag (our two additions aside)
    at = flags.index(RAE_ALPHA_FLAG)
    plain = flags[:at] + flags[at + 2:]
    plain[plain.index("--algo.advantage.estimator") + 1] = "reinforce"  # "rae" is the one added choice
    parsed = vars(openrlhf_parser().parse_args(plain))
    expected = {
        "actor.model_name_or_path": "./model",
        "train.agent_func_path": "agent.py",
        "data.prompt_dataset": "prompts.jsonl",
        "data.input_key": "input",
        "data.label_key": "label",
        "vllm.num_engines": 2,
        "actor.num_gpus_per_node": 2,
        "ref.num_gpus_per_node": 2,
        "train.colocate_all": True,
        "rollout.n_samples_per_prompt": 2,  # one game per row: a sample per seat
        "rollout.batch_size": 8,
        "train.batch_size": 16,
        "rollout.max_new_tokens": 48,
        "rollout.temperature": 0.9,
        "train.max_epochs": 2,
        "actor.adam.lr": 2e-6,
        "algo.kl.init_coef": 0.01,
        "algo.kl.use_loss": True,
        "algo.kl.estimator": "k3",
        "actor.lr_scheduler": "constant",
        "ckpt.load_enable": True,
        "ckpt.path": str(script.parent / "ckpt"),
        "train.seed": 0,
    }
    assert {k: parsed[k] for k in expected} == expected

    # 2. with RAE registered, OpenRLHF's own post-parse checks pass and `train` gets the args
    received = run(flags, train=lambda args: None)
    assert received.algo.advantage.estimator == "rae"
    assert received.algo.advantage.rae_alpha == config.rae_alpha
    assert received.reward.remote_url == ["agent"]  # OpenRLHF's own rule for an agent file
    assert received.critic.model_name_or_path is None  # no critic: not GAE

    # 3. launch.sh is the same command, quoted for the shell
    body = script.read_text().split("set -euo pipefail\n", 1)[1]
    assert body.strip() == shell_command(launch["argv"])
    assert shlex.split(body.replace("\\\n", " ")) == launch["argv"]
    runtime_env = json.loads(launch["argv"][launch["argv"].index("--runtime-env-json") + 1])
    assert runtime_env["working_dir"] == str(script.parent)
    assert sorted(Path(p).name for p in runtime_env["py_modules"]) == sorted(PACKAGES)


def test_a_bad_value_is_caught_by_openrlhfs_parser(tmp_path):
    config, _, launch = written(tmp_path, "env=kuhn_poker", "steps=1", "games_per_step=2")
    flags = openrlhf_flags(launch["argv"])
    flags[flags.index("--actor.loss_agg_mode") + 1] = "sum"
    with pytest.raises(SystemExit):
        run(flags, train=lambda args: None)


def test_the_dataset_holds_the_local_trainers_games_and_sat_instances(tmp_path):
    overrides = ["env=kuhn_poker,sat", "steps=2", "games_per_step=4", "prompts_per_step=3", "group_size=4", "max_new_tokens=8"]
    _, script, launch = written(tmp_path, *overrides)
    rows = [Row.from_label(json.loads(line)["label"]) for line in (script.parent / "prompts.jsonl").read_text().splitlines()]
    assert launch["samples_per_prompt"] == 4  # the GRPO group; a kuhn row then holds 2 games
    assert launch["rows_per_step"] == 2 + 3 and len(rows) == 10
    assert [r.row for r in rows] == list(range(10))

    from trainers.rollout import run_tasks
    from trainers.seeds import TASK, derive_seed

    trainer = Trainer(parse_overrides([*BASE, *overrides, f"out={tmp_path / 'local'}"]))
    for step in range(2):
        games = [r for r in rows[step * 5:(step + 1) * 5] if r.kind == "game"]
        specs = trainer.game_specs(step)
        assert [r.seed for r in games] == [s.seed for s in specs[:2]]  # copy 0 of each row is a local game
        assert all(r.env_args == {**game_env_kwargs(trainer.config, "kuhn_poker"), "mode": "direct"} for r in games)
        tasks = [r for r in rows[step * 5:(step + 1) * 5] if r.kind == "task"]
        _, results, _ = run_tasks("sat", trainer.make_task_env("sat"), trainer.task_policy, prompts=3, group_size=1,
                                  seed=derive_seed(0, TASK, step, 0))
        assert [r.formula for r in tasks] == [result.info["formula"] for result in results]


def test_the_agent_file_loads_as_openrlhf_loads_it_and_plays_the_written_rows(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, script, launch = written(tmp_path, "env=tic_tac_toe", "steps=1", "games_per_step=2", "max_new_tokens=8")
    folder = script.parent
    spec = importlib.util.spec_from_file_location("agent_module", folder / "agent.py")  # as vllm_engine.py does
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert issubclass(module.AgentExecutor, agent_base.AgentExecutorBase)
    executor = module.AgentExecutor()

    model = AutoModelForCausalLM.from_pretrained(folder / "model")  # what the vLLM engines load
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    engine = LocalEngine(model, tokenizer)
    lines = [json.loads(line) for line in (folder / "prompts.jsonl").read_text().splitlines()]
    n = launch["samples_per_prompt"]

    async def rollout():
        params = SamplingParams()
        return await asyncio.gather(*[
            executor.execute(line["input"], line["label"], params, 8192, tokenizer, engine) for line in lines for _ in range(n)
        ])

    responses = asyncio.run(rollout())
    assert len(responses) == len(lines) * n == 4
    assert sorted((Row.from_label(r["label"]).row, r["extra_logs"]["role"]) for r in responses) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_main_writes_the_job_and_prints_its_command(tmp_path, capsys):
    out = tmp_path / "job"
    assert main([*BASE, "env=kuhn_poker", "backend=openrlhf", "steps=2", "games_per_step=4", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "ray job submit" in printed and "--algo.advantage.estimator rae" in printed
    assert "direct mode" in printed  # the choice-mode note
    assert (out / "config.json").exists() and (out / "openrlhf" / "launch.sh").exists()
    assert json.loads((out / "config.json").read_text())["backend"] == "openrlhf"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["env=kuhn_poker", "opponent=random"], "pure self-play"),
        (["env=sat", "curriculum=saturn"], "curriculum"),
        (["env=kuhn_poker,sat", "group_size=3"], "multiple of the players"),
        (["env=kuhn_poker", "games_per_step=4", "num_workers=3"], "num_workers=3"),
        (["env=kuhn_poker", "advantage=prompt_norm"], "RAE"),
    ],
)
def test_what_openrlhf_cannot_run_is_a_clear_error(tmp_path, capsys, overrides, message):
    out = tmp_path / "never"
    assert main([*BASE, "backend=openrlhf", *overrides, f"out={out}"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_submit_true_sends_the_job_to_a_ray_job_server(tmp_path):
    """A real local Ray with its job server: the job ships our packages and its working dir, runs
    the entry module on the cluster, passes OpenRLHF's parser and checks, and stops where
    OpenRLHF's `train()` needs the GPU stack (vLLM) that this machine does not have."""
    ray = pytest.importorskip("ray")
    from ray.job_submission import JobSubmissionClient

    from trainers.openrlhf.launcher import launch

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = ray.init(num_cpus=2, include_dashboard=True, dashboard_port=port, log_to_driver=False)
    try:
        address = f"http://{context.dashboard_url}"
        config = parse_overrides([*BASE, "env=kuhn_poker", "backend=openrlhf", "steps=1", "games_per_step=2",
                                  "submit=true", f"ray_address={address}", f"out={tmp_path / 'run'}"])
        assert launch(config) != 0  # the job fails, as it must without vLLM
        client = JobSubmissionClient(address)
        (job,) = [job for job in client.list_jobs() if job.submission_id]  # not this test's own driver
        assert job.entrypoint.startswith(f"python -m {ENTRY_MODULE} --actor.model_name_or_path ./model")
        assert job.runtime_env["working_dir"].startswith("gcs://")  # uploaded with the job
        logs = client.get_job_logs(job.submission_id)
        assert "No module named 'vllm'" in logs
        assert "trainers/openrlhf/train_ppo_ray.py" in logs and "in train" in logs  # parsed, checked, then train()
    finally:
        ray.shutdown()
