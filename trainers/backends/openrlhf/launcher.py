"""`backend=openrlhf`: the OpenRLHF-on-Ray job of a run, written into its run directory.

    python -m trainers.selfplay env=kuhn_poker backend=openrlhf model=Qwen/Qwen3-4B-Base num_workers=8

writes `<out>/config.json` and the job's working directory `<out>/openrlhf/`:

    launch.sh       the complete `ray job submit ... -- python -m trainers.backends.openrlhf.train_ppo_ray ...`
    launch.json     the same command as an argv list, and the numbers behind it
    prompts.jsonl   the prompt dataset: one row per game (or task instance), label = JSON
    agent.py        the file `--train.agent_func_path` names (imports trainers.backends.openrlhf.agent)
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
from envs.sat import SatTask
from trainers.run import seeds
from trainers.rollouts.step_size import sample_shares
from trainers.run.config import TrainConfig
from trainers.backends.openrlhf import OPENRLHF_VERSION
from trainers.backends.openrlhf.tasks import Row
from trainers.backends.openrlhf.train_ppo_ray import OPENRLHF_ENV_DEFAULTS
from trainers.run.setup import RunSetup, env_kinds, game_env_kwargs
from trainers.run.seeds import derive_seed

LAUNCH_DIR = "openrlhf"
ENTRY_MODULE = "trainers.backends.openrlhf.train_ppo_ray"
DEFAULT_JOB_ADDRESS = "http://127.0.0.1:8265"
CHAT_TOKENS_PER_TURN = 64
"""Room for a turn's chat-template tokens (role headers, end of turn) beside its text."""
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
PACKAGES = ("games", "envs", "curricula", "trainers")
JOB_ENV_VARS = OPENRLHF_ENV_DEFAULTS
"""The env vars `openrlhf.cli.train_ppo_ray.train` gives its workers, carried by the job's
runtime env (our entry point starts Ray without repeating them: see its docstring)."""
AGENT_SHIM = '''"""The agent file for OpenRLHF's --train.agent_func_path (written by trainers.backends.openrlhf.launcher)."""

from trainers.backends.openrlhf.agent import AgentExecutor  # noqa: F401
'''


@dataclass
class Plan:
    """The numbers of an OpenRLHF run derived from a `TrainConfig` (nothing written yet)."""

    rows: list[Row]
    rows_per_step: int
    samples_per_prompt: int
    samples_per_step: int
    mode: str
    max_len: int
    notes: list[str] = field(default_factory=list)


MAPPED_KEYS = {
    "env": "the prompt dataset's rows (games and SAT instances)",
    "env_kwargs": "each row's env arguments",
    "mode": "each row's env arguments (choice is played as direct: see the launch notes)",
    "invalid_action_policy": "each game row's env arguments",
    "turn_limit": "each game row's env arguments; --data.max_len",
    "benchmark": "SAT rows never drawn from the benchmark's formulas",
    "model": "--actor.model_name_or_path",
    "dtype": "--ds.param_dtype (bf16; OpenRLHF trains in bf16 or fp16)",
    "samples_per_step": "--rollout.batch_size (rows per step): each game env's share over the mean turns of seeded random games",
    "games_per_step": "--rollout.batch_size (rows per step)",
    "prompts_per_step": "--rollout.batch_size (rows per step)",
    "group_size": "--rollout.n_samples_per_prompt",
    "max_new_tokens": "--rollout.max_new_tokens and the agent's per-turn budget; --data.max_len",
    "temperature": "--rollout.temperature",
    "top_p": "--rollout.top_p",
    "advantage": "--algo.advantage.estimator rae (auto or rae)",
    "rae_alpha": "--algo.advantage.rae_alpha",
    "advantage_diagnostics": "auto and off: none (the job computes advantages on the cluster, where exact analysis has no hook); on is refused",
    "lr": "--actor.adam.lr",
    "lr_schedule": "--actor.lr_scheduler (constant, cosine_with_min_lr; linear when lr_final_ratio=0)",
    "lr_final_ratio": "--actor.min_lr_ratio",
    "weight_decay": "--actor.adam.weight_decay",
    "adam_beta1": "--actor.adam.betas",
    "adam_beta2": "--actor.adam.betas",
    "adam_eps": "--actor.adam.eps",
    "ppo_epochs": "--train.max_epochs",
    "mini_batch_size": "--train.batch_size",
    "clip": "--actor.eps_clip",
    "kl_coef": "--algo.kl.init_coef (with --algo.kl.use_loss --algo.kl.estimator k3 when > 0)",
    "length_norm": "--actor.loss_agg_mode (constant: token-mean; token_mean: seq-mean-token-mean)",
    "max_grad_norm": "--actor.max_norm",
    "recompute_old_logprobs": "always on: OpenRLHF's actor recomputes the old log-probs",
    "steps": "rows in the dataset (steps x rows per step, one episode)",
    "seed": "--train.seed and every row's seed",
    "out": "--ckpt.path, --ckpt.output_dir, --logger.tensorboard_dir, the job's working dir",
    "save_every": "--ckpt.save_steps",
    "keep_checkpoints": "--ckpt.max_num",
    "tensorboard": "--logger.tensorboard_dir (omitted when false)",
    "backend": "this launcher",
    "num_workers": "GPUs per node: --actor.num_gpus_per_node (--ref.* with kl_coef > 0)",
    "num_nodes": "--actor.num_nodes (--ref.* with kl_coef > 0)",
    "vllm_tensor_parallel": "--vllm.tensor_parallel_size; --vllm.num_engines = nodes x GPUs / tensor parallel",
    "vllm_gpu_memory": "--vllm.gpu_memory_utilization",
    "ray_address": "`ray job submit --address`",
    "submit": "runs the written `ray job submit`",
    "progress": "false: `ray job submit --no-wait` (returns once submitted; follow with `ray job logs`)",
    "threads": "this launcher's torch threads (it saves model=tiny-random and sizes --data.max_len)",
}
"""How each `TrainConfig` key reaches the OpenRLHF job (docs/openrlhf.md has this table)."""

REFUSED_KEYS = {
    "opponent": "OpenRLHF trains by pure self-play (opponent=none); fixed opponents and leagues run with backend=local or ray",
    "opponent_seat": "it places a fixed opponent, and OpenRLHF trains by pure self-play",
    "curriculum": "the prompt dataset is written before the run, so a curriculum cannot move it; set the SAT level with env_kwargs",
    "lora_rank": "OpenRLHF 0.11 sends PEFT parameter names to its vLLM engines without merging the adapters (OpenRLHF issue 1081), so the first weight sync fails; train all weights",
    "lora_alpha": "it applies to LoRA, which the OpenRLHF job cannot use (see lora_rank)",
    "lora_dropout": "it applies to LoRA, which the OpenRLHF job cannot use (see lora_rank)",
    "lora_targets": "it applies to LoRA, which the OpenRLHF job cannot use (see lora_rank)",
    "generation_batch_size": "OpenRLHF's vLLM engines batch requests themselves",
    "choice_chain": "the job plays choice mode as direct (free text), where no turn is chained; chained choices run with backend=local or ray",
    "task_mode": "the job's agent answers tasks in the games' free-text mode (direct, or think with mode=think); part-by-part choices run with backend=local or ray",
    "task_credit": "the job's agent answers tasks in free text (no parts to credit); task_credit=counterfactual runs with backend=local",
    "game_credit": "the job plays choice mode as direct (free text), where a choice has no distribution over its options to credit; game_credit=counterfactual, counterfactual_centered and solved run with backend=local or ray",
    "reward": "one OpenRLHF agent execution returns one reward for all of a seat's turns, so a turn cannot be credited with its own margin; reward=margin and turn_margin run with backend=local or ray",
    "thinking": "Markovian thinking resets the context between chunks, and one OpenRLHF agent execution returns one token sequence",
    "chunk": "it applies to thinking=markovian (see thinking)",
    "carry": "it applies to thinking=markovian (see thinking)",
    "head": "it applies to thinking=markovian (see thinking)",
    "max_chunks": "it applies to thinking=markovian (see thinking)",
    "generation": "OpenRLHF generates with its own vLLM engines",
    "vllm_python": "OpenRLHF generates with its own vLLM engines, in the job's python",
    "state_weighting": "OpenRLHF weighs samples by its loss aggregation (see length_norm)",
    "micro_batch_size": "OpenRLHF's micro-batches are --train.micro_batch_size (edit launch.sh)",
    "micro_batch_tokens": "OpenRLHF's micro-batches are --train.micro_batch_size (edit launch.sh)",
    "magnet_every": "OpenRLHF's KL reference is the initial model for the whole run",
    "policy_average": "OpenRLHF saves the current weights; it keeps no moving average of them",
    "average_decay": "it applies to policy_average=ema (see policy_average)",
    "entropy_coef": "it is the choice-mode entropy bonus, and OpenRLHF plays free text (direct or think)",
    "league_every": "it applies to opponent=league (see opponent)",
    "league_size": "it applies to opponent=league (see opponent)",
    "league_sampling": "it applies to opponent=league (see opponent)",
    "league_latest_prob": "it applies to opponent=league (see opponent)",
    "format_phase": "OpenRLHF has no behaviour-cloning phase; run one locally first and pass its checkpoint as model=",
    "format_steps": "it applies to the format phase (see format_phase)",
    "format_epochs": "it applies to the format phase (see format_phase)",
    "format_threshold": "it applies to the format phase (see format_phase)",
    "eval_every": "the OpenRLHF job does not evaluate; evaluate its final model with python -m benchmarks.evaluate",
    "eval_games": "the OpenRLHF job does not evaluate (see eval_every)",
    "eval_samples": "the OpenRLHF job does not evaluate (see eval_every)",
    "eval_opponents": "the OpenRLHF job does not evaluate (see eval_every)",
    "eval_temperature": "the OpenRLHF job does not evaluate (see eval_every)",
    "eval_positions": "the OpenRLHF job does not evaluate (see eval_every)",
    "eval_envs": "the OpenRLHF job does not evaluate (see eval_every)",
    "eval_envs_games": "the OpenRLHF job does not evaluate (see eval_every)",
    "eval_envs_mode": "the OpenRLHF job does not evaluate (see eval_every)",
    "eval_transfer": "the OpenRLHF job does not evaluate (see eval_every)",
    "device": "OpenRLHF places its models on the GPUs Ray gives it",
    "resume": "resubmit the job's launch.sh: OpenRLHF resumes from <out>/openrlhf/ckpt (--ckpt.load_enable)",
}
"""Keys the OpenRLHF job has no equivalent for, with the reason: a value other than the
default is refused by name (`refuse_unmapped_keys`)."""

LR_SCHEDULERS = {"constant": "constant", "cosine": "cosine_with_min_lr", "linear": "linear"}
"""lr_schedule -> OpenRLHF's --actor.lr_scheduler (transformers' schedulers; no warm-up, as locally)."""
LOSS_AGGREGATION = {"constant": "token-mean", "token_mean": "seq-mean-token-mean"}
"""length_norm -> --actor.loss_agg_mode: every token of the batch weighs the same, or every sample."""


def refuse_unmapped_keys(config: TrainConfig) -> list[str]:
    """Raise naming every key set away from its default that the OpenRLHF job cannot honour;
    return notes for mapped keys that the job plays differently."""
    defaults = TrainConfig()
    refused = [f"{key}={getattr(config, key)!r} ({reason})" for key, reason in REFUSED_KEYS.items()
               if getattr(config, key) != getattr(defaults, key)]
    if config.advantage not in ("auto", "rae"):
        refused.append(f"advantage={config.advantage} (the OpenRLHF job uses RAE for games and GRPO for tasks: advantage=auto or rae)")
    if config.advantage_diagnostics == "on":
        refused.append("advantage_diagnostics=on (the job computes advantages on the cluster, where exact analysis has no hook: auto or off)")
    if config.lr_schedule == "linear" and config.lr_final_ratio:
        refused.append(f"lr_schedule=linear with lr_final_ratio={config.lr_final_ratio} (OpenRLHF's linear schedule decays to 0: set lr_final_ratio=0, or use cosine)")
    if refused:
        raise ValueError("backend=openrlhf cannot honour " + "; ".join(refused))
    notes = []
    if config.dtype == "float32":
        notes.append("dtype=float32 is the CPU default; OpenRLHF trains in bf16")
    return notes


def plan_run(config: TrainConfig) -> Plan:
    """Check that the run fits OpenRLHF and lay out its prompt dataset (steps x rows per step)."""
    notes = []
    game_envs, task_envs = env_kinds(config)  # raises for an unknown env
    notes += refuse_unmapped_keys(config)
    unsupported = [e for e in task_envs if e != "sat"]
    if unsupported:
        raise ValueError(f"task envs {unsupported} have no OpenRLHF adapter; available: sat")
    mode = config.mode
    if mode == "choice":
        mode = "direct"
        notes.append("mode=choice scores legal actions, which vLLM's agent interface cannot; games are played in direct mode")
    players = {e: envs.make(e, **{**game_env_kwargs(config, e), "mode": mode}).game.num_players() for e in game_envs}
    if task_envs:
        n = config.group_size
        uneven = [e for e, p in players.items() if n % p]
        if uneven:
            raise ValueError(f"group_size={n} (samples per prompt) must be a multiple of the players of {uneven}")
    else:
        n = math.lcm(*players.values())

    setup = RunSetup(config)  # the same envs (arguments, held-out exclusions) as a local run
    task_env_objects = [setup.make_task_env(env_id) for env_id in task_envs]
    games = games_per_env(config, game_envs, mode)
    rows: list[Row] = []
    for step in range(config.steps):
        rows += _game_rows(config, games, players, n, step, mode, start=len(rows))
        rows += _task_rows(config, task_env_objects, step, start=len(rows))
    rows_per_step = len(rows) // config.steps
    samples_per_step = rows_per_step * n
    if config.mini_batch_size and samples_per_step % config.mini_batch_size:
        raise ValueError(f"mini_batch_size={config.mini_batch_size} must divide the {samples_per_step} samples of a step")
    train_batch = config.mini_batch_size or samples_per_step
    if train_batch % config.num_workers:
        raise ValueError(f"the training batch ({train_batch} samples) must split evenly over num_workers={config.num_workers} GPUs")
    if config.num_workers % config.vllm_tensor_parallel:
        raise ValueError(f"num_workers={config.num_workers} GPUs per node must be a multiple of vllm_tensor_parallel={config.vllm_tensor_parallel}")
    max_len = context_length(config, game_envs, task_env_objects, mode)
    return Plan(rows, rows_per_step, n, samples_per_step, mode, max_len, notes)


def context_length(config: TrainConfig, game_envs: list[str], task_envs: list, mode: str) -> int:
    """`--data.max_len`: tokens one sample may hold, sized so that no game runs out of context.

    A game's sample is one seat's whole conversation: at most ceil(longest game / players)
    turns, each a prompt plus `max_new_tokens`. A prompt's token count is bounded by its
    character count (a token covers at least one character) plus the chat template's
    tokens; the longest prompt is found by playing seeded random games. A task sample is
    one prompt and one answer.
    """
    longest = 0
    for env_id in game_envs:
        env = envs.make(env_id, **{**game_env_kwargs(config, env_id), "mode": mode})
        game = env.game
        turns = game.max_game_length()
        if env.turn_limit is not None:
            turns = min(turns, env.turn_limit)
        seat_turns = math.ceil(turns / game.num_players())
        prompt = _longest_prompt_chars(env, seed=derive_seed(config.seed, "context_length"))
        longest = max(longest, seat_turns * (prompt + CHAT_TOKENS_PER_TURN + config.max_new_tokens))
    for env in task_envs:
        env.reset(seed=derive_seed(config.seed, "context_length"))
        prompt = sum(len(m["content"]) for m in env.messages())
        longest = max(longest, prompt + CHAT_TOKENS_PER_TURN + config.max_new_tokens)
    return longest


def _longest_prompt_chars(env, *, seed: int, games: int = 20) -> int:
    """The longest turn prompt (all its messages, in characters) over `games` seeded random games."""
    return max(max(game) for game in _random_games(env, seed=seed, games=games))


def _mean_turns(env, *, seed: int, games: int = 20) -> float:
    """Turns per game (every seat's) over `games` seeded random games."""
    return sum(map(len, _random_games(env, seed=seed, games=games))) / games


def _random_games(env, *, seed: int, games: int) -> list[list[int]]:
    """Per seeded game of uniformly random legal moves: each turn prompt's length in characters."""
    import random

    rng = random.Random(seed)
    played = []
    for game in range(games):
        env.reset(seed=derive_seed(seed, "game", game))
        prompts = []
        while not env.is_over():
            prompts.append(sum(len(m["content"]) for m in env.turn_prompt().messages()))
            mask = env.observe(env.agent_selection)["action_mask"]
            env.step(rng.choice([a for a, legal in enumerate(mask) if legal]))
        played.append(prompts)
    return played


def games_per_env(config: TrainConfig, game_envs: list[str], mode: str) -> dict[str, int]:
    """The games each env plays in a step of the job.

    `games_per_step` is dealt to the envs in turn, as the local trainer deals it. Sized by
    `samples_per_step`, the dataset is written before the run, so the local trainer's waves
    (trainers.rollouts.step_size) cannot adapt it: each env plays its share of the samples
    over the mean turns of seeded random games (every seat trains: the job is pure self-play).
    """
    if config.games_per_step:
        return {env_id: len(range(k, config.games_per_step, len(game_envs))) for k, env_id in enumerate(game_envs)}
    shares = sample_shares(config.samples_per_step, game_envs)
    seed = derive_seed(config.seed, "games_per_env")
    return {
        env_id: math.ceil(shares[env_id] / _mean_turns(envs.make(env_id, **{**game_env_kwargs(config, env_id), "mode": mode}), seed=seed))
        for env_id in game_envs
    }


def _game_rows(config, games: dict[str, int], players, n, step, mode, start) -> list[Row]:
    """The step's games (`games` per env) as rows of n/players games each, envs taken in turn (as the local trainer does)."""
    game_envs = list(games)
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




def _task_rows(config, task_envs: list, step, start) -> list[Row]:
    """The step's SAT instances: the ones the local trainer draws (same seeds, same exclusions)."""
    rows = []
    defaults = SatTask().prompt_options()  # a row names only the options away from these: older datasets read the same
    for offset, env in enumerate(task_envs):
        prompt_args = {k: v for k, v in env.task_hooks.prompt_options().items() if v != defaults[k]}
        step_seed = derive_seed(config.seed, seeds.TASK, step, offset)
        for group in range(config.prompts_per_step):
            env.reset(seed=derive_seed(step_seed, seeds.TASK, group))
            instance = env.instance
            rows.append(Row("task", "sat", start + len(rows), config.max_new_tokens, env_args=dict(prompt_args),
                            level=instance.level, formula=instance.formula))
    return rows


def openrlhf_flags(config: TrainConfig, plan: Plan, *, model: str, folder: Path) -> list[str]:
    """OpenRLHF 0.11.2 flags for this run (each one checked against its parser by the tests)."""
    gpus = config.num_workers
    flags: list = [
        ("--actor.model_name_or_path", model),
        # placement: every model and the vLLM engines share the GPUs (colocated, sleeping in turn)
        ("--actor.num_nodes", config.num_nodes), ("--actor.num_gpus_per_node", gpus),
        ("--vllm.num_engines", config.num_nodes * gpus // config.vllm_tensor_parallel),
        ("--vllm.tensor_parallel_size", config.vllm_tensor_parallel),
        "--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep",
        ("--vllm.gpu_memory_utilization", config.vllm_gpu_memory),
        # our environments, through the agent file and its dataset (paths in the job's working dir)
        ("--train.agent_func_path", "agent.py"),
        ("--data.prompt_dataset", "prompts.jsonl"), ("--data.input_key", "input"), ("--data.label_key", "label"),
        ("--data.max_len", plan.max_len),
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
        ("--actor.lr_scheduler", LR_SCHEDULERS[config.lr_schedule]), ("--actor.lr_warmup_ratio", 0.0),
        ("--actor.min_lr_ratio", config.lr_final_ratio), ("--actor.max_norm", config.max_grad_norm),
        ("--actor.eps_clip", config.clip), ("--actor.loss_agg_mode", LOSS_AGGREGATION[config.length_norm]),
        ("--ds.param_dtype", "bf16"),
    ]
    if config.kl_coef > 0:  # k3 KL as a loss term, as the local learner does
        flags += ["--algo.kl.use_loss", ("--algo.kl.estimator", "k3"),
                  ("--ref.num_nodes", config.num_nodes), ("--ref.num_gpus_per_node", gpus)]
    flags += [
        ("--ckpt.path", folder / "ckpt"), ("--ckpt.save_steps", config.save_every or -1),
        ("--ckpt.max_num", max(1, config.keep_checkpoints)), "--ckpt.load_enable",
        ("--ckpt.output_dir", folder / "final"),
    ]
    if config.tensorboard:
        flags.append(("--logger.tensorboard_dir", folder / "tensorboard"))
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
        *([] if config.progress else ["--no-wait"]),
        "--runtime-env-json", json.dumps(runtime_env, sort_keys=True),
        "--", "python", "-m", ENTRY_MODULE, *flags,
    ]


def write_launch(config: TrainConfig) -> Path:
    """Write the job's files into `<out>/openrlhf/` (see the module docstring); returns launch.sh."""
    from trainers.run.preflight import preflight
    from trainers.run.run_dir import RunDirectory

    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    out = Path(config.out).expanduser().resolve()
    if (out / "metrics.jsonl").exists() or (out / "checkpoints").is_dir():
        raise ValueError(f"{config.out} holds a local run; choose another out= for the OpenRLHF job")
    plan = plan_run(config)
    preflight(config)
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
    script.write_text(f"#!/usr/bin/env bash\n# OpenRLHF job of {out} (trainers.backends.openrlhf.launcher; docs/openrlhf.md)\nset -euo pipefail\n{shell_command(argv)}\n")
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
    from trainers.backends.openrlhf.cli import run

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

