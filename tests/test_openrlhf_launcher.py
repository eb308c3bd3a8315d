"""`python -m trainers.selfplay ... backend=openrlhf`: the written job, checked against OpenRLHF 0.11.2.

`openrlhf.cli.train_ppo_ray` cannot be imported without vLLM and DeepSpeed, and it builds
its parser inside `if __name__ == "__main__":`. `trainers.backends.openrlhf.cli` therefore builds
the parser by executing exactly those statements of the installed file (found with
`ast`); the written flags are parsed back with that unmodified parser, and then run
through OpenRLHF's own post-parse checks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import shlex
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
agent_base = pytest.importorskip("openrlhf.utils.agent")

from trainers.run.config import TrainConfig, parse_overrides
from trainers.backends.ray.worker import game_env_kwargs
from trainers.backends.openrlhf.cli import RAE_ALPHA_FLAG, openrlhf_parser, run
from trainers.backends.openrlhf.launcher import ENTRY_MODULE, MAPPED_KEYS, PACKAGES, REFUSED_KEYS, plan_run, shell_command, write_launch
from trainers.backends.openrlhf.train_ppo_ray import OPENRLHF_ENV_DEFAULTS, driver_env_vars
from trainers.models import load_model
from trainers.backends.openrlhf.agent import AgentExecutor
from trainers.backends.openrlhf.tasks import Row
from trainers.selfplay import Trainer, main

from cluster_standins.local_engine import LocalEngine, SamplingParams  # noqa: E402  (tests/ is on sys.path)

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

    from trainers.rollouts.play import run_tasks
    from trainers.run.seeds import TASK, derive_seed

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
        assert all(r.env_args == {} for r in tasks)  # the default prompt: older datasets read the same


def test_sat_rows_carry_the_prompt_options_the_run_sets(tmp_path):
    overrides = ["env=sat", "steps=1", "prompts_per_step=2", "group_size=4", "max_new_tokens=8",
                 'env_kwargs={"answer_format": "named", "variable_notes": true}']
    _, script, _ = written(tmp_path, *overrides)
    rows = [Row.from_label(json.loads(line)["label"]) for line in (script.parent / "prompts.jsonl").read_text().splitlines()]
    assert rows and all(r.env_args == {"answer_format": "named", "variable_notes": True} for r in rows)


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
        (["env=kuhn_poker", "lora_rank=8"], "issue 1081"),
        (["env=kuhn_poker", "lr_schedule=linear"], "decays to 0"),
        (["env=kuhn_poker", "games_per_step=4", "num_workers=2", "vllm_tensor_parallel=4"], "multiple of vllm_tensor_parallel"),
    ],
)
def test_what_openrlhf_cannot_run_is_a_clear_error(tmp_path, capsys, overrides, message):
    out = tmp_path / "never"
    assert main([*BASE, "backend=openrlhf", *overrides, f"out={out}"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_every_training_key_is_mapped_to_openrlhf_or_refused_by_name():
    keys = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(MAPPED_KEYS) | set(REFUSED_KEYS) == keys
    assert not set(MAPPED_KEYS) & set(REFUSED_KEYS)


def test_keys_openrlhf_cannot_honour_are_refused_together_by_name(tmp_path, capsys):
    out = tmp_path / "never"
    keys = ["thinking=markovian", "lr_schedule=cosine", "magnet_every=5", "kl_coef=0.1", "format_phase=on", "mode=think"]
    assert main([*BASE, "backend=openrlhf", "env=kuhn_poker", *keys, f"out={out}"]) == 2
    error = capsys.readouterr().err
    for refused in ("thinking=", "magnet_every=5", "format_phase="):
        assert refused in error
    for mapped in ("lr_schedule", "kl_coef"):
        assert f"{mapped}=" not in error
    # the choice-mode bonus has no OpenRLHF term (the job plays choice mode as free text)
    assert main([*BASE, "backend=openrlhf", "env=kuhn_poker", "mode=choice", "entropy_coef=0.5", f"out={out}"]) == 2
    assert "entropy_coef=0.5" in capsys.readouterr().err
    assert not out.exists()


def test_schedule_loss_aggregation_placement_and_vllm_memory_reach_their_flags(tmp_path):
    _, _, launch = written(tmp_path, "env=kuhn_poker", "steps=2", "games_per_step=8", "num_workers=4", "num_nodes=2",
                           "vllm_tensor_parallel=2", "vllm_gpu_memory=0.35", "lr_schedule=cosine", "lr_final_ratio=0.2",
                           "length_norm=token_mean", "kl_coef=0.1", "tensorboard=false")
    parsed = vars(openrlhf_parser().parse_args(_plain(openrlhf_flags(launch["argv"]))))
    assert {k: parsed[k] for k in ("actor.num_nodes", "actor.num_gpus_per_node", "ref.num_nodes", "vllm.num_engines",
                                   "vllm.tensor_parallel_size", "vllm.gpu_memory_utilization", "actor.lr_scheduler",
                                   "actor.min_lr_ratio", "actor.lr_warmup_ratio", "actor.loss_agg_mode", "logger.tensorboard_dir")} == {
        "actor.num_nodes": 2, "actor.num_gpus_per_node": 4, "ref.num_nodes": 2, "vllm.num_engines": 4,
        "vllm.tensor_parallel_size": 2, "vllm.gpu_memory_utilization": 0.35, "actor.lr_scheduler": "cosine_with_min_lr",
        "actor.min_lr_ratio": 0.2, "actor.lr_warmup_ratio": 0.0, "actor.loss_agg_mode": "seq-mean-token-mean",
        "logger.tensorboard_dir": None,
    }


def _plain(flags: list[str]) -> list[str]:
    """`flags` without this suite's two additions, for OpenRLHF's unmodified parser."""
    at = flags.index(RAE_ALPHA_FLAG)
    plain = flags[:at] + flags[at + 2:]
    plain[plain.index("--algo.advantage.estimator") + 1] = "reinforce"
    return plain


@pytest.mark.parametrize("key", ["num_nodes=2", "vllm_tensor_parallel=2"])
def test_placement_keys_of_the_openrlhf_job_are_refused_on_other_backends(key):
    with pytest.raises(ValueError, match=key.split("=")[0]):
        parse_overrides([*BASE, key])


def test_max_len_holds_the_longest_game_so_no_seat_runs_out_of_context(tmp_path):
    """`--data.max_len` from `plan_run`: every seat of fallback tic-tac-toe games (9 turns at most) fits."""
    model, tokenizer = load_model("tiny-random", seed=0)
    config = parse_overrides([*BASE, "backend=openrlhf", "env=tic_tac_toe", "mode=direct", "steps=1", "games_per_step=3", "max_new_tokens=12"])
    plan = plan_run(config)
    fallback = {**dict(plan.rows[0].env_args), "invalid_action_policy": "spiral"}
    rows = [dataclasses.replace(row, env_args=fallback) for row in plan.rows]
    engine = LocalEngine(model, tokenizer, seed=1)
    executor = AgentExecutor()

    async def play():
        params = SamplingParams(temperature=1.0)
        return await asyncio.gather(*[executor.execute(r.describe(), r.to_label(), params, plan.max_len, tokenizer, engine)
                                      for r in rows for _ in range(2)])

    responses = asyncio.run(play())
    assert all(r["extra_logs"]["context_truncated"] == 0 for r in responses)
    assert max(len(r["observation_tokens"]) for r in responses) <= plan.max_len


def test_the_job_driver_adds_only_the_env_vars_the_job_did_not_set():
    job = json.dumps({"runtime_env": {"env_vars": {"NCCL_DEBUG": "INFO", "TOKENIZERS_PARALLELISM": "false"}}})
    assert driver_env_vars({"RAY_JOB_CONFIG_JSON_ENV_VAR": job}) == {"RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}
    assert driver_env_vars({}) == OPENRLHF_ENV_DEFAULTS  # outside a job: OpenRLHF's own defaults
    assert driver_env_vars({"NCCL_DEBUG": "INFO"})["NCCL_DEBUG"] == "INFO"


def test_docs_list_every_key_with_what_the_launcher_does_with_it():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "openrlhf.md").read_text(encoding="utf-8")
    for key, text in {**MAPPED_KEYS, **REFUSED_KEYS}.items():
        assert f"| `{key}` | {text} |" in docs
