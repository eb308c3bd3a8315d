"""`backend=openrlhf`: the OpenRLHF-on-Ray job of a run, written into its run directory.

    python -m trainers.selfplay env=kuhn_poker backend=openrlhf model=Qwen/Qwen3-4B-Base num_workers=8

writes `<out>/config.json` and the job's working directory `<out>/openrlhf/`:

    launch.sh       the complete `ray job submit ... -- python -m trainers.openrlhf.train_ppo_ray ...`
    launch.json     the same command as an argv list, and the numbers behind it
    prompts.jsonl   the prompt dataset: one row per game (or task instance), label = JSON
    agent.py        the file `--train.agent_func_path` names (imports trainers.openrlhf.agent)
    model/          model=tiny-random only: the tiny model saved as a Hugging Face folder

prints the command, and with `submit=true` runs it against `ray_address` (a Ray job
server, default http://127.0.0.1:8265). The job ships this checkout's packages
(`py_modules`) and `<out>/openrlhf` (`working_dir`) with it; checkpoints, the final model
and TensorBoard logs go to `<out>/openrlhf/{ckpt,final,tensorboard}` on the node of
OpenRLHF's rank 0 (put `out` on storage the cluster shares). Resubmitting the same
command resumes from the last checkpoint (`--ckpt.load_enable`).

How the run's settings map onto OpenRLHF's flags is `openrlhf_flags`; docs/openrlhf.md
explains the sample layout. Every flag is checked against OpenRLHF 0.11.2's own parser
and post-parse checks before anything is written, when openrlhf is installed.
"""

from __future__ import annotations

import importlib
import json
import math
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import envs
from trainers import seeds
from trainers.config import TrainConfig
from trainers.distributed.worker import game_env_kwargs
from trainers.openrlhf import OPENRLHF_VERSION
from trainers.openrlhf.tasks import Row
from trainers.seeds import derive_seed

LAUNCH_DIR = "openrlhf"
ENTRY_MODULE = "trainers.openrlhf.train_ppo_ray"
DEFAULT_JOB_ADDRESS = "http://127.0.0.1:8265"
MAX_LEN = 8192
"""Tokens per sample (a seat's whole multi-turn game, or a task prompt and answer)."""
VLLM_GPU_MEMORY = 0.6
"""vLLM's share of each GPU; the DeepSpeed actor sleeps beside it (colocated)."""
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
PACKAGES = ("games", "envs", "curricula", "trainers")
JOB_ENV_VARS = {"TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "WARN", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}
"""What `openrlhf.cli.train_ppo_ray.train` sets when it starts Ray itself; a submitted job's
runtime env replaces that, so the job carries the same values."""
AGENT_SHIM = '''"""The agent file for OpenRLHF's --train.agent_func_path (written by trainers.openrlhf.launcher)."""

from trainers.openrlhf.agent import AgentExecutor  # noqa: F401
'''


@dataclass
class Plan:
    """The numbers of an OpenRLHF run derived from a `TrainConfig` (nothing written yet)."""

    rows: list[Row]
    rows_per_step: int
    samples_per_prompt: int
    samples_per_step: int
    mode: str
    notes: list[str] = field(default_factory=list)


def plan_run(config: TrainConfig) -> Plan:
    """Check that the run fits OpenRLHF and lay out its prompt dataset (steps x rows per step)."""
    notes = []
    kinds = {env_id: envs.spec(env_id).kind for env_id in config.env}  # raises for an unknown env
    game_envs = [e for e, kind in kinds.items() if kind == "game"]
    task_envs = [e for e, kind in kinds.items() if kind == "task"]
    if config.opponent != "none":
        raise ValueError(f"backend=openrlhf trains by pure self-play (opponent=none); opponent={config.opponent} runs with backend=local or ray")
    if config.advantage not in ("auto", "rae"):
        raise ValueError(f"backend=openrlhf uses RAE for games and GRPO for tasks (advantage=auto or rae); got advantage={config.advantage}")
    if config.curriculum != "none":
        raise ValueError("backend=openrlhf writes its prompt dataset before the run, so a curriculum cannot move it; set the SAT level with env_kwargs")
    unsupported = [e for e in task_envs if e != "sat"]
    if unsupported:
        raise ValueError(f"task envs {unsupported} have no OpenRLHF adapter; available: sat")
    mode = config.mode
    if mode == "choice":
        mode = "direct"
        notes.append("mode=choice scores legal actions, which vLLM's agent interface cannot; games are played in direct mode")
    players = {e: envs.make(e).game.num_players() for e in game_envs}
    if task_envs:
        n = config.group_size
        uneven = [e for e, p in players.items() if n % p]
        if uneven:
            raise ValueError(f"group_size={n} (samples per prompt) must be a multiple of the players of {uneven}")
    else:
        n = math.lcm(*players.values())
    if config.lora_rank and float(config.lora_alpha) != int(config.lora_alpha):
        raise ValueError(f"OpenRLHF takes an integer LoRA alpha; got lora_alpha={config.lora_alpha}")

    task_env_objects = [_task_env(config, env_id) for env_id in task_envs]
    rows: list[Row] = []
    for step in range(config.steps):
        rows += _game_rows(config, game_envs, players, n, step, mode, start=len(rows))
        rows += _task_rows(config, task_env_objects, step, start=len(rows))
    rows_per_step = len(rows) // config.steps
    samples_per_step = rows_per_step * n
    if config.mini_batch_size and samples_per_step % config.mini_batch_size:
        raise ValueError(f"mini_batch_size={config.mini_batch_size} must divide the {samples_per_step} samples of a step")
    train_batch = config.mini_batch_size or samples_per_step
    if train_batch % config.num_workers:
        raise ValueError(f"the training batch ({train_batch} samples) must split evenly over num_workers={config.num_workers} GPUs")
    return Plan(rows, rows_per_step, n, samples_per_step, mode, notes)


def _game_rows(config, game_envs, players, n, step, mode, start) -> list[Row]:
    """The step's games as rows of n/players games each, envs taken in turn (as the local trainer does)."""
    if not game_envs:
        return []
    games = {e: 0 for e in game_envs}
    for index in range(config.games_per_step):
        games[game_envs[index % len(game_envs)]] += 1
    counts = {e: math.ceil(games[e] * players[e] / n) for e in game_envs}
    rows, index = [], 0
    while any(counts.values()):
        for env_id in game_envs:
            if counts[env_id]:
                counts[env_id] -= 1
                env_args = {**game_env_kwargs(config, env_id), "mode": mode}
                rows.append(
                    Row("game", env_id, start + len(rows), config.max_new_tokens,
                        seed=derive_seed(config.seed, seeds.GAME, step, index), players=players[env_id], env_args=env_args)
                )
                index += 1
    return rows


def _task_env(config: TrainConfig, env_id: str):
    """The task env the local trainer trains on: the run's env arguments, held-out formulas excluded."""
    from trainers.preflight import sat_exclusions

    accepted = set(envs.registry.parameters(env_id))
    return envs.make(env_id, exclude=sat_exclusions(config, None), **{k: v for k, v in config.env_kwargs.items() if k in accepted})


def _task_rows(config, task_envs: list, step, start) -> list[Row]:
    """The step's SAT instances: the ones the local trainer draws (same seeds, same exclusions)."""
    rows = []
    for offset, env in enumerate(task_envs):
        step_seed = derive_seed(config.seed, seeds.TASK, step, offset)
        for group in range(config.prompts_per_step):
            env.reset(seed=derive_seed(step_seed, seeds.TASK, group))
            instance = env.instance
            rows.append(Row("task", "sat", start + len(rows), config.max_new_tokens, level=instance.level, formula=instance.formula))
    return rows


def openrlhf_flags(config: TrainConfig, plan: Plan, *, model: str, folder: Path) -> list[str]:
    """OpenRLHF 0.11.2 flags for this run (each one checked against its parser by the tests)."""
    gpus = config.num_workers
    flags: list = [
        ("--actor.model_name_or_path", model),
        # placement: every model and the vLLM engines share the GPUs of one node, one engine per GPU
        ("--actor.num_nodes", 1), ("--actor.num_gpus_per_node", gpus),
        ("--vllm.num_engines", gpus), ("--vllm.tensor_parallel_size", 1),
        "--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep",
        ("--vllm.gpu_memory_utilization", VLLM_GPU_MEMORY),
        # our environments, through the agent file and its dataset (paths in the job's working dir)
        ("--train.agent_func_path", "agent.py"),
        ("--data.prompt_dataset", "prompts.jsonl"), ("--data.input_key", "input"), ("--data.label_key", "label"),
        ("--data.max_len", MAX_LEN),
        # rollouts: a step is rows_per_step rows x n samples
        ("--rollout.batch_size", plan.rows_per_step),
        ("--rollout.n_samples_per_prompt", plan.samples_per_prompt),
        ("--rollout.max_new_tokens", config.max_new_tokens),
        ("--rollout.temperature", config.temperature), ("--rollout.top_p", config.top_p),
        # advantages: RAE for games, GRPO for tasks
        ("--algo.advantage.estimator", "rae"), ("--algo.advantage.rae_alpha", config.rae_alpha),
        ("--algo.kl.init_coef", config.kl_coef),
        # PPO
        ("--train.batch_size", config.mini_batch_size or plan.samples_per_step),
        ("--train.max_epochs", config.ppo_epochs), ("--train.num_episodes", 1), ("--train.seed", config.seed),
        ("--actor.adam.lr", config.lr), ("--actor.adam.betas", config.adam_beta1, config.adam_beta2),
        ("--actor.adam.eps", config.adam_eps), ("--actor.adam.weight_decay", config.weight_decay),
        ("--actor.lr_scheduler", "constant"), ("--actor.max_norm", config.max_grad_norm),
        ("--actor.eps_clip", config.clip), ("--actor.loss_agg_mode", "token-mean"),
        ("--ds.param_dtype", "bf16"),
    ]
    if config.kl_coef > 0:  # k3 KL as a loss term, as the local learner does
        flags += ["--algo.kl.use_loss", ("--algo.kl.estimator", "k3"), ("--ref.num_nodes", 1), ("--ref.num_gpus_per_node", gpus)]
    if config.lora_rank:
        flags += [("--ds.lora.rank", config.lora_rank), ("--ds.lora.alpha", int(config.lora_alpha)),
                  ("--ds.lora.dropout", config.lora_dropout), ("--ds.lora.target_modules", *config.lora_targets)]
    flags += [
        ("--ckpt.path", folder / "ckpt"), ("--ckpt.save_steps", config.save_every or -1),
        ("--ckpt.max_num", max(1, config.keep_checkpoints)), "--ckpt.load_enable",
        ("--ckpt.output_dir", folder / "final"), ("--logger.tensorboard_dir", folder / "tensorboard"),
    ]
    argv = []
    for flag in flags:
        if isinstance(flag, str):
            argv.append(flag)
        else:
            argv += [flag[0], *(str(value) for value in flag[1:])]
    return argv


def job_command(config: TrainConfig, flags: list[str], folder: Path) -> list[str]:
    """`ray job submit` of the entry module with `flags`, shipping this checkout's packages."""
    runtime_env = {
        "working_dir": str(folder),
        "py_modules": [str(Path(importlib.import_module(p).__file__).parent) for p in PACKAGES],
        "excludes": ["ckpt", "final", "tensorboard"],
        "env_vars": JOB_ENV_VARS,
    }
    return [
        "ray", "job", "submit",
        "--address", config.ray_address or DEFAULT_JOB_ADDRESS,
        "--runtime-env-json", json.dumps(runtime_env, sort_keys=True),
        "--", "python", "-m", ENTRY_MODULE, *flags,
    ]


def write_launch(config: TrainConfig) -> Path:
    """Write the job's files into `<out>/openrlhf/` (see the module docstring); returns launch.sh."""
    from trainers.run_dir import RunDirectory

    out = Path(config.out).expanduser().resolve()
    if (out / "metrics.jsonl").exists() or (out / "checkpoints").is_dir():
        raise ValueError(f"{config.out} holds a local run; choose another out= for the OpenRLHF job")
    plan = plan_run(config)
    folder = out / LAUNCH_DIR
    model = _model_reference(config, folder)
    flags = openrlhf_flags(config, plan, model=model, folder=folder)
    check_flags(flags)
    folder.mkdir(parents=True, exist_ok=True)
    RunDirectory(out).create(config)
    if config.model == "tiny-random":
        _save_tiny_random(config, folder / "model")
    (folder / "prompts.jsonl").write_text("".join(
        json.dumps({"input": row.describe(), "label": row.to_label()}) + "\n" for row in plan.rows
    ))
    (folder / "agent.py").write_text(AGENT_SHIM)
    argv = job_command(config, flags, folder)
    (folder / "launch.json").write_text(json.dumps({
        "argv": argv,
        "openrlhf": OPENRLHF_VERSION,
        "rows": len(plan.rows),
        "rows_per_step": plan.rows_per_step,
        "samples_per_prompt": plan.samples_per_prompt,
        "samples_per_step": plan.samples_per_step,
        "mode": plan.mode,
        "notes": plan.notes,
    }, indent=1))
    script = folder / "launch.sh"
    script.write_text(f"#!/usr/bin/env bash\n# OpenRLHF job of {out} (trainers.openrlhf.launcher; docs/openrlhf.md)\nset -euo pipefail\n{shell_command(argv)}\n")
    script.chmod(0o755)
    return script


def shell_command(argv: list[str]) -> str:
    """`argv` as one shell command, a flag (with its values) per line."""
    lines: list[list[str]] = [[]]
    for arg in argv:
        if arg.startswith("--") and lines[-1]:
            lines.append([])
        lines[-1].append(arg)
    return " \\\n    ".join(" ".join(shlex.quote(a) for a in line) for line in lines)


def check_flags(flags: list[str]) -> None:
    """Parse `flags` with OpenRLHF 0.11.2's own parser and run its post-parse checks (if installed)."""
    from trainers.openrlhf.cli import run

    try:
        run(flags, train=lambda args: None)
    except ModuleNotFoundError:  # openrlhf is not installed here: the cluster checks them
        return
    except RuntimeError as error:  # another openrlhf version
        raise ValueError(str(error)) from None
    except (SystemExit, AssertionError) as error:
        raise ValueError(f"OpenRLHF 0.11.2 rejects the written flags: {error}") from None


def launch(config: TrainConfig) -> int:
    """Write the job, print its command, and submit it when `submit=true`; returns an exit code."""
    script = write_launch(config)
    argv = json.loads((script.parent / "launch.json").read_text())["argv"]
    for note in json.loads((script.parent / "launch.json").read_text())["notes"]:
        print(f"note: {note}")
    print(f"OpenRLHF job written to {script.parent} (docs/openrlhf.md); its command:\n")
    print(shell_command(argv))
    if not config.submit:
        print(f"\nsubmit it with: bash {script}   (or rerun with submit=true)")
        return 0
    ray_cli = shutil.which("ray") or shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray_cli is None:
        raise ValueError("submit=true needs the `ray` command (pip install 'ray[default]')")
    return subprocess.call([ray_cli, *argv[1:]])


def _model_reference(config: TrainConfig, folder: Path) -> str:
    """What `--actor.model_name_or_path` says: a path the job's nodes read, or a hub id."""
    from trainers.models import check_model_name

    name = config.model
    if name == "tiny-random":
        return "./model"  # saved into the working dir, shipped with the job
    if name in HUB_IDS:
        return HUB_IDS[name]
    check_model_name(name)
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "model" / "config.json").is_file():  # a checkpoint of a local run
            path = path / "model"
        if not (path / "config.json").is_file():
            raise ValueError(f"model={name} is not a Hugging Face model folder (no config.json); OpenRLHF loads full models only")
        return str(path.resolve())
    return name  # a hub id


def _save_tiny_random(config: TrainConfig, folder: Path) -> None:
    from trainers.models import load_model

    model, tokenizer = load_model("tiny-random", seed=config.seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

