"""The trainer's one configuration: a dataclass, `key=value` overrides, clear errors.

Every setting of a run lives in `TrainConfig` with its default and a one-line help text,
grouped in sections (what to train on, model, rollouts, advantages and loss, league and
regularisation, run). The learner, the rollout and the CLI all read this same object, so
the value a user sets is the value that acts. `parse_overrides(["env=kuhn_poker",
"steps=50"])` returns a validated config; an unknown key names the valid ones, a bad or
non-finite value names the key and the range it must lie in.

Stable keys (kept across changes): env, model, steps, seed, out, resume, save_every.

Resume: `RESUMABLE_KEYS` may differ from the saved run's config (they change how long
the run goes, how it is evaluated and logged, or the learning rate, which is applied to
the restored optimizer); any other difference is an error naming the keys
(`resume_conflicts`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from envs.opponents import ALL_OPPONENTS
from envs.opponents import OPPONENT_NAMES as FIXED_OPPONENTS
from envs.protocol import CHAIN_ABOVE, CHOICE_CHAIN, MODES
from trainers.learning.advantages import METHODS as ADVANTAGE_METHODS
from trainers.rollouts.parts import TASK_CREDITS
from trainers.rollouts.decision_credit import GAME_CREDITS
from trainers.rollouts.rewards import GAME_REWARDS
from trainers.learning.advantages import STATE_WEIGHTINGS

LENGTH_NORMS = ("constant", "token_mean")
"""How a sample's summed token loss is divided (trainers.learning.loss.ppo_clipped_loss)."""
OPPONENTS = ("none", "league", *ALL_OPPONENTS)
INVALID_ACTION_POLICIES = ("forfeit", "spiral", "textarena")
LEAGUE_SAMPLING = ("uniform", "prioritized")
FORMAT_PHASE = ("auto", "on", "off")
THINKING = ("plain", "markovian")
GENERATION_BACKENDS = ("transformers", "vllm")
BACKENDS = ("local", "ray", "openrlhf")
LR_SCHEDULES = ("constant", "cosine", "linear")
POLICY_AVERAGES = ("none", "ema")

RESUMABLE_KEYS = (
    "steps",
    "resume",
    "lr",
    "save_every",
    "keep_checkpoints",
    "eval_every",
    "eval_games",
    "eval_samples",
    "eval_opponents",
    "eval_temperature",
    "eval_positions",
    "eval_envs",
    "eval_envs_games",
    "eval_envs_mode",
    "eval_transfer",
    "threads",
    "tensorboard",
    "progress",
    "vllm_python",
    "ray_address",
    "submit",
)
"""Keys a resumed run may change: run length, checkpoint cadence, evaluation, logging,
threads, and `lr` (set on the restored optimizer's parameter groups). Everything else
changes what the run computes, so a resume with a different value is refused."""


def _help(text: str, **kwargs) -> Any:
    """A dataclass field carrying its help text in metadata."""
    if "default_factory" in kwargs:
        return field(default_factory=kwargs["default_factory"], metadata={"help": text})
    return field(default=kwargs["default"], metadata={"help": text})


@dataclass
class TrainConfig:
    # -- what to train on -----------------------------------------------------------
    env: list[str] = _help("env id, or a comma-separated list for multi-game training", default_factory=lambda: ["kuhn_poker"])
    env_kwargs: dict = _help("JSON object of env arguments, e.g. {\"hands\": 5}; each key must be accepted by at least one selected env", default_factory=dict)
    mode: str = _help("text protocol mode: choice | direct | think", default="choice")
    choice_chain: str = _help(f"auto (mode=choice: a game turn with more than {CHAIN_ABOVE} legal actions, as Simple Negotiation's 200 offers, is answered as a chain of small choices over the actions' words, and its prompt describes the actions in patterns instead of listing them; envs/action_chain.py) | off (every legal action is one candidate)", default="auto")
    task_mode: str = _help("how tasks answer: auto (choice when mode=choice and every task spells its answers in parts, as SAT's bits; else the games' free-text mode) | choice (part by part: one choice per variable; trainers/rollouts/parts.py) | direct | think", default="auto")
    task_credit: str = _help("how the parts of a task answer chosen part by part share its credit: answer (each part gets the answer's GRPO advantage) | counterfactual (each part gets R minus the expected R of swapping that part alone under the policy's own distribution, from the task's scorer; trainers/rollouts/parts.py)", default="answer")
    game_credit: str = _help("how a game turn's choices are credited: turn (every choice of a turn gets the advantage of the turn's reward) | counterfactual (choice mode: a choice whose options each move the mover's score margin at once by a known amount, as accepting or denying a pending trade, gets the margin change of the option taken minus its expectation under the policy's own distribution, from the game's rules; other choices keep their turn's credit; trainers/rollouts/decision_credit.py) | counterfactual_centered (the same, each option's credits then centred over the step's choices that took it, so no option is pushed up or down everywhere at once) | solved (the same gap with each option valued by perfect play from there on, for games small enough to solve over their positions: TicTacToe)", default="turn")
    reward: str = _help("what game turns are trained on: outcome (each turn gets its player's return: win/draw/loss) | margin (each turn gets the change of its player's score margin from that turn to the game's end, in games that define one, as Simple Negotiation's difference of gains; trainers/rollouts/rewards.py) | turn_margin (the change from that turn to the same player's next turn: the turn's own effect, none of the later trades'). Evaluation reports the outcome either way", default="outcome")
    invalid_action_policy: str = _help("what an invalid answer costs: forfeit | spiral | textarena", default="forfeit")
    turn_limit: int = _help("cut a game after this many turns and score it a draw", default=50)
    opponent: str = _help("none (pure self-play) | league (past snapshots) | random | rule_based | equilibrium | mcts (OpenSpiel games) | checkpoint:PATH (a frozen model) on one seat", default="none")
    opponent_seat: str = _help("seat the fixed opponent (or league snapshot) takes: 0, 1 or alternate (between games); the learner plays the other seats", default="alternate")
    curriculum: str = _help("difficulty curriculum for task envs: none | saturn", default="none")
    benchmark: str = _help("a folder written by benchmarks.generate: its test and held-out formulas are never drawn for training", default="")
    # -- model ------------------------------------------------------------------------
    model: str = _help("smollm2-135m | tiny-random | a local Hugging Face folder | a run or checkpoint folder | a hub id", default="smollm2-135m")
    dtype: str = _help("float32 | bfloat16", default="float32")
    lora_rank: int = _help("LoRA rank; 0 trains all weights", default=0)
    lora_alpha: float = _help("LoRA alpha", default=32.0)
    lora_dropout: float = _help("LoRA dropout", default=0.0)
    lora_targets: list[str] = _help("modules that get LoRA adapters", default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    # -- rollouts ---------------------------------------------------------------------
    samples_per_step: int = _help("learner turn samples a step trains on, split evenly over the game envs: whole games are played in waves until the learner's turns reach it (trainers.rollouts.step_size). 0 with games_per_step=0 (the defaults): the games choose, Kuhn Poker alone plays 512 games a step (about 1,150 turns), every other run trains on 128 samples (SPIRAL's step)", default=0)
    games_per_step: int = _help("games a step plays, all at once; set at most one of games_per_step and samples_per_step (0 and 0: the games choose, see samples_per_step)", default=0)
    prompts_per_step: int = _help("task prompts per step (single-agent tasks)", default=8)
    group_size: int = _help("samples per task prompt (GRPO group)", default=8)
    max_new_tokens: int = _help("generated tokens per turn (think/direct modes)", default=64)
    temperature: float = _help("sampling temperature for rollouts", default=1.0)
    top_p: float = _help("nucleus sampling for rollouts, in (0, 1]", default=1.0)
    generation_batch_size: int = _help("prompts per generation call", default=32)
    # -- Markovian thinking (Delethink) ------------------------------------------------
    thinking: str = _help("plain | markovian: reason in chunks of `chunk` tokens, each starting from the query plus `carry` carried tokens (tasks, and games with mode=think)", default="plain")
    chunk: int = _help("thinking=markovian: chunk size C; the first chunk generates C tokens, later ones C - carry", default=512)
    carry: int = _help("thinking=markovian: tokens carried into the next chunk, m < chunk (head + the last carry - head generated)", default=256)
    head: int = _help("thinking=markovian: carried tokens taken from the start of the first chunk, kept for the whole trace", default=64)
    max_chunks: int = _help("thinking=markovian: chunks per trace at most, I (budget C + (I - 1)(C - carry))", default=5)
    generation: str = _help("rollout engine: transformers (in-process) | vllm (vLLM in its own environment, new weights loaded after every update; backend=local)", default="transformers")
    vllm_python: str = _help("generation=vllm: python of the vLLM environment (made by: bash scripts/test-vllm.sh --setup-only)", default=".venv-vllm/bin/python")
    # -- advantages and loss ----------------------------------------------------------
    advantage: str = _help("auto (action_centered in choice mode, else rae) | rae | state_baseline | prompt_norm | action_centered | batch_q | grpo | dr_grpo | none | exact (the true advantage from exact analysis: an oracle, small games in self-play, choice mode); tasks use grpo", default="auto")
    advantage_diagnostics: str = _help("auto | on | off: log each estimator's correlation, sign agreement and variance against the true advantage Q(I, a) - V(I) from exact analysis (auto: in every game small enough, played in self-play in choice mode; trainers/learning/diagnostics.py)", default="auto")
    rae_alpha: float = _help("EMA decay of the per-(env, role) baselines, in (0, 1)", default=0.95)
    state_weighting: str = _help("visits (a state weighs as often as it is reached) | uniform (every visited state weighs the same, as in CFR: rarely reached states keep learning)", default="visits")
    lr: float = _help("learning rate (AdamW); the peak of the schedule", default=3e-6)
    lr_schedule: str = _help("constant | cosine (from lr down to lr_final_ratio * lr at the last step) | linear", default="constant")
    lr_final_ratio: float = _help("lr at the last step as a fraction of lr (cosine, linear)", default=0.1)
    weight_decay: float = _help("AdamW weight decay", default=0.0)
    adam_beta1: float = _help("AdamW beta1, in [0, 1)", default=0.9)
    adam_beta2: float = _help("AdamW beta2, in [0, 1)", default=0.999)
    adam_eps: float = _help("AdamW epsilon", default=1e-8)
    ppo_epochs: int = _help("passes over each batch", default=1)
    mini_batch_size: int = _help("samples per optimizer step (0: the whole batch is one step per epoch)", default=0)
    micro_batch_size: int = _help("distinct prompts per forward/backward pass (samples that share a prompt and answer share one forward)", default=64)
    micro_batch_tokens: int = _help("tokens through the model per forward/backward pass at most: the prompts' shared prefix once, then every row padded to the widest (bounds activation memory, which grows with the tokens of a pass; trainers.learning.learner.forward_tokens)", default=1024)
    clip: float = _help("PPO clip range", default=0.2)
    kl_coef: float = _help("weight of the KL to the reference policy (0 = none); with magnet_every > 0 this is magnetic mirror descent", default=0.0)
    magnet_every: int = _help("refresh the KL reference (the magnet) to the current policy every this many steps (0: the initial policy stays the reference)", default=0)
    policy_average: str = _help("none | ema: evaluate, keep as best and export an exponential moving average of the weights (rollouts still play the current weights); in zero-sum self-play the average of the iterates converges where the last iterate cycles", default="none")
    average_decay: float = _help("policy_average=ema: the average moves by (1 - average_decay) towards the current weights after every update, in [0, 1)", default=0.9)
    entropy_coef: float = _help("entropy bonus on the choice distribution (choice mode: the exact entropy over a turn's candidates); a free-text answer has none, so a value other than 0 and the default is refused where no turn is a choice", default=0.05)
    length_norm: str = _help("constant (Dr. GRPO, SPIRAL) | token_mean", default="constant")
    max_grad_norm: float = _help("gradient-norm clipping (> 0)", default=1.0)
    recompute_old_logprobs: bool = _help("recompute the rollout's log-probs with the learner before the update (for engines whose numbers differ)", default=False)
    # -- league -----------------------------------------------------------------------
    league_every: int = _help("opponent=league: snapshot the learner every this many steps", default=5)
    league_size: int = _help("opponent=league: snapshots kept (oldest dropped first)", default=4)
    league_sampling: str = _help("opponent=league: uniform (fictitious self-play) | prioritized (favour snapshots the learner does worst against)", default="uniform")
    league_latest_prob: float = _help("opponent=league: probability that a game is played against the current policy itself", default=0.5)
    # -- answer format ----------------------------------------------------------------
    format_phase: str = _help("behaviour cloning of the answer format before RL (direct/think): auto (when the invalid rate is high) | on | off", default="auto")
    format_steps: int = _help("format-phase steps at most", default=10)
    format_epochs: int = _help("optimizer steps on each format step's cloned answers", default=4)
    format_threshold: float = _help("format phase runs while the invalid rate is above this", default=0.2)
    # -- run --------------------------------------------------------------------------
    steps: int = _help("training steps", default=40)
    seed: int = _help("seed of everything", default=0)
    out: str = _help("run directory", default="runs/selfplay")
    resume: bool = _help("continue from the last intact checkpoint in `out`", default=False)
    save_every: int = _help("checkpoint every this many steps (0: only at the end)", default=10)
    keep_checkpoints: int = _help("how many checkpoints to keep (the best one is kept apart)", default=2)
    eval_every: int = _help("evaluate every this many steps (0: only at the start and the end)", default=10)
    eval_games: int = _help("evaluation games per opponent and seat", default=50)
    eval_samples: int = _help("answers per held-out task instance in evaluation (pass@1 is their mean)", default=4)
    eval_opponents: list[str] = _help("fixed opponents for evaluation (random, rule_based, equilibrium, mcts), or auto: every one that can play the game", default_factory=lambda: ["auto"])
    eval_temperature: float = _help("sampling temperature in evaluation", default=0.6)
    eval_positions: int = _help("exact exploitability of a perfect-information game over its positions (games/positions.py) when it has at most this many positions to move from, one model call each (TicTacToe: 4,520; seconds on a GPU, 10-40 minutes per evaluation on a 2-core CPU, so set it there deliberately, e.g. eval_positions=10000); 0: only games whose history tree is small (Kuhn Poker)", default=0)
    eval_envs: list[str] = _help("out-of-domain games played against a random opponent at every evaluation (SPIRAL's protocol): env ids, or the preset spiral_ood; empty: none", default_factory=list)
    eval_envs_games: int = _help("eval_envs: games per env and seat", default=20)
    eval_envs_mode: str = _help("eval_envs: text protocol mode of the out-of-domain games: direct | think (TextArena moves cannot be listed for choice)", default="direct")
    eval_transfer: int = _help("reasoning transfer: this many seeded reasoning-gym basic_arithmetic problems answered greedily at the first and the last evaluation (a before/after row); 0: none; needs reasoning-gym (scripts/setup.sh installs it)", default=0)
    threads: int = _help("torch CPU threads (0: torch's default); 1 per run when runs share a machine", default=0)
    tensorboard: bool = _help("write TensorBoard logs", default=True)
    progress: bool = _help("show a progress bar", default=True)
    # -- backends (docs/openrlhf.md) ----------------------------------------------------
    backend: str = _help("where rollouts run: local (this process) | ray (Ray actor rollout workers) | openrlhf (write the OpenRLHF-on-Ray job; docs/openrlhf.md)", default="local")
    num_workers: int = _help("backend=ray: rollout worker actors; backend=openrlhf: GPUs per node", default=1)
    num_nodes: int = _help("backend=openrlhf: nodes of the Ray cluster the job trains on", default=1)
    vllm_tensor_parallel: int = _help("backend=openrlhf: GPUs per vLLM engine (tensor parallel); engines = num_nodes x num_workers / this", default=1)
    vllm_gpu_memory: float = _help("share of a GPU's memory vLLM may take (generation=vllm on CUDA, backend=openrlhf): the learner needs the rest", default=0.5)
    ray_address: str = _help("backend=ray: '' starts a local Ray, an address joins a cluster; backend=openrlhf: the Ray job server to submit to (default http://127.0.0.1:8265)", default="")
    submit: bool = _help("backend=openrlhf: also run the written `ray job submit` command", default=False)
    device: str = _help("torch device of the model: cpu | cuda | cuda:N", default="cpu")

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the key and its valid range for any bad value."""
        _one_of("mode", self.mode, MODES)
        _one_of("task_mode", self.task_mode, ("auto",) + MODES)
        _one_of("task_credit", self.task_credit, TASK_CREDITS)
        _one_of("reward", self.reward, GAME_REWARDS)
        _one_of("game_credit", self.game_credit, GAME_CREDITS)
        _one_of("choice_chain", self.choice_chain, CHOICE_CHAIN)
        _one_of("advantage", self.advantage, ("auto",) + ADVANTAGE_METHODS)
        _one_of("length_norm", self.length_norm, LENGTH_NORMS)
        _one_of("advantage_diagnostics", self.advantage_diagnostics, ("auto", "on", "off"))
        _one_of("policy_average", self.policy_average, POLICY_AVERAGES)
        _in_range("average_decay", self.average_decay, 0.0, 1.0, closed_high=False)
        if self.entropy_coef not in (0.0, TrainConfig.entropy_coef) and self.mode != "choice" and self.task_mode != "choice":
            raise ValueError(f"entropy_coef={self.entropy_coef} is a bonus on the choice distribution, and in mode={self.mode} no turn "
                             "is a choice (docs/learning_runs: a bonus over direct mode's legal answers raised its invalid rate): "
                             "use mode=choice (or task_mode=choice for tasks), or leave entropy_coef")
        if self.average_decay != TrainConfig.average_decay and self.policy_average == "none":
            raise ValueError("average_decay sets policy_average=ema's moving average; set policy_average=ema as well")
        if not self.opponent.startswith("checkpoint:"):
            _one_of("opponent", self.opponent, OPPONENTS + ("checkpoint:PATH",))
        elif not self.opponent.split(":", 1)[1]:
            raise ValueError("opponent=checkpoint:PATH needs a path after the colon")
        _one_of("opponent_seat", self.opponent_seat, ("0", "1", "alternate"))
        _one_of("invalid_action_policy", self.invalid_action_policy, INVALID_ACTION_POLICIES)
        _one_of("curriculum", self.curriculum, ("none", "saturn"))
        _one_of("dtype", self.dtype, ("float32", "bfloat16"))
        _one_of("generation", self.generation, GENERATION_BACKENDS)
        _one_of("league_sampling", self.league_sampling, LEAGUE_SAMPLING)
        _one_of("format_phase", self.format_phase, FORMAT_PHASE)
        _one_of("thinking", self.thinking, THINKING)
        if self.thinking == "markovian":
            from envs.markovian import MarkovianConfig

            MarkovianConfig(self.chunk, self.carry, self.head, self.max_chunks).validate()
        _one_of("backend", self.backend, BACKENDS)
        _at_least("num_workers", self.num_workers, 1)
        _at_least("num_nodes", self.num_nodes, 1)
        _at_least("vllm_tensor_parallel", self.vllm_tensor_parallel, 1)
        _in_range("vllm_gpu_memory", self.vllm_gpu_memory, 0.0, 1.0, closed_low=False, closed_high=False)
        if self.num_nodes != 1 and self.backend != "openrlhf":
            raise ValueError(f"num_nodes places the OpenRLHF job (backend=openrlhf); backend={self.backend} runs on this machine or its Ray workers")
        vllm_on_gpu = self.backend == "openrlhf" or (self.generation == "vllm" and self.device != "cpu")
        for key in ("vllm_tensor_parallel", "vllm_gpu_memory"):
            if getattr(self, key) != getattr(TrainConfig, key) and not vllm_on_gpu:
                raise ValueError(f"{key} sizes vLLM on GPUs (generation=vllm with device=cuda, or backend=openrlhf); "
                                 f"this run has generation={self.generation}, device={self.device}, backend={self.backend}")
        if self.device != "cpu" and not (self.device == "cuda" or (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ValueError(f"device={self.device!r} is not valid; choose one of: cpu, cuda, cuda:N")
        _one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _one_of("state_weighting", self.state_weighting, STATE_WEIGHTINGS)
        if self.eval_opponents != ["auto"]:
            for opponent in self.eval_opponents:
                _one_of("eval_opponents", opponent, ALL_OPPONENTS)
        _one_of("eval_envs_mode", self.eval_envs_mode, MODES)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name}={value} is not a finite number")
        _step_size(self)
        positive = ("steps", "prompts_per_step", "group_size", "max_new_tokens", "ppo_epochs",
                    "micro_batch_size", "micro_batch_tokens", "generation_batch_size", "turn_limit", "eval_games", "eval_samples", "eval_envs_games", "league_every",
                    "league_size", "format_epochs")
        for name in positive:
            _at_least(name, getattr(self, name), 1)
        non_negative = ("threads", "eval_transfer", "eval_positions", "lora_rank", "save_every", "eval_every", "keep_checkpoints", "mini_batch_size",
                        "magnet_every", "format_steps", "entropy_coef", "kl_coef", "weight_decay", "temperature",
                        "eval_temperature", "lora_dropout", "adam_eps")
        for name in non_negative:
            _at_least(name, getattr(self, name), 0)
        for name in ("lr", "clip", "max_grad_norm", "lora_alpha"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        _in_range("rae_alpha", self.rae_alpha, 0.0, 1.0, closed_high=False, closed_low=False)
        _in_range("top_p", self.top_p, 0.0, 1.0, closed_low=False)
        _in_range("adam_beta1", self.adam_beta1, 0.0, 1.0, closed_high=False)
        _in_range("adam_beta2", self.adam_beta2, 0.0, 1.0, closed_high=False)
        _in_range("league_latest_prob", self.league_latest_prob, 0.0, 1.0)
        _in_range("format_threshold", self.format_threshold, 0.0, 1.0)
        _in_range("lr_final_ratio", self.lr_final_ratio, 0.0, 1.0)
        _in_range("lora_dropout", self.lora_dropout, 0.0, 1.0, closed_high=False)
        if not self.env:
            raise ValueError("env must name at least one environment")
        if len(set(self.env)) != len(self.env):
            raise ValueError(f"env lists an environment twice: {','.join(self.env)}")
        if self.magnet_every and not self.kl_coef:
            raise ValueError("magnet_every refreshes the KL reference; set kl_coef > 0 as well")
        defaults = TrainConfig()
        inert = [f"{key}={getattr(self, key)!r} (it applies to {scope})" for key, (scope, applies) in SCOPED_KEYS.items()
                 if getattr(self, key) != getattr(defaults, key) and not applies(self)]
        if inert:
            raise ValueError("this run would ignore " + "; ".join(inert) + ": set what they apply to, or leave them at their defaults")
        return self

    def advantage_method(self) -> str:
        """The advantage estimator for game turns (`auto` resolved by mode).

        In choice mode a shared network first learns what is common to every state
        ("always bet, always call" in Kuhn Poker) and settles there, because a per-state
        baseline leaves each action's mean advantage over all states in the gradient;
        `action_centered` removes that common part, so only state-dependent signal is left
        (the learning runs in docs/learning_runs compare the estimators). Free text has no
        shared action strings to centre on, so it uses SPIRAL's RAE.
        """
        if self.advantage != "auto":
            return self.advantage
        return "action_centered" if self.mode == "choice" else "rae"

    def lr_at(self, step: int) -> float:
        """The learning rate of training step `step` (0-based) under `lr_schedule`.

        A pure function of the step, so a resumed run continues the same schedule; a
        decaying rate lets the last iterate of self-play settle instead of orbiting.
        """
        if self.lr_schedule == "constant" or self.steps <= 1:
            return self.lr
        progress = min(step / (self.steps - 1), 1.0)
        final = self.lr * self.lr_final_ratio
        if self.lr_schedule == "linear":
            return self.lr + (final - self.lr) * progress
        return final + (self.lr - final) * 0.5 * (1 + math.cos(math.pi * progress))

    def loss_length_constant(self) -> int | None:
        """The constant of `length_norm=constant`: the generation budget for free text.

        None in choice mode (a choice sample is one "token"); the learner then uses the
        longest response of each update.
        """
        return None if self.mode == "choice" else self.max_new_tokens

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resume_conflicts(saved: dict, current: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Keys whose value differs from the saved run's and may not change on resume.

    Returns ``{key: (saved value, current value)}``; keys the saved config does not have
    (a run from an older version) are compared with their default.
    """
    defaults = TrainConfig().to_dict()
    conflicts = {}
    for key, value in current.to_dict().items():
        if key in RESUMABLE_KEYS or key == "out":
            continue
        before = saved.get(key, defaults[key])
        if before != value:
            conflicts[key] = (before, value)
    return conflicts


def split_list(text: str) -> list[str]:
    """Comma-separated items; commas inside parentheses belong to an item
    (`openspiel:goofspiel(num_cards=4,points_order=descending)`)."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    items.append(current.strip())
    return [item for item in items if item]


def _step_size(config: "TrainConfig") -> None:
    """At most one of the two keys sizes a step; with neither set, the run's games choose
    (`trainers.rollouts.step_size.default_step_size`: Kuhn Poker alone plays 512 games,
    every other run trains on 128 turn samples)."""
    from trainers.rollouts.step_size import default_step_size

    _at_least("samples_per_step", config.samples_per_step, 0)
    _at_least("games_per_step", config.games_per_step, 0)
    if config.games_per_step and config.samples_per_step:
        raise ValueError(f"samples_per_step={config.samples_per_step} and games_per_step={config.games_per_step} both size a step; "
                         f"set one of them")
    if not config.games_per_step and not config.samples_per_step:
        config.games_per_step, config.samples_per_step = default_step_size(config.env)


def _one_of(name: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(valid)}")


def _at_least(name: str, value, low) -> None:
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


_LEAGUE = ("opponent=league", lambda c: c.opponent == "league")
_MARKOVIAN = ("thinking=markovian", lambda c: c.thinking == "markovian")
_LORA = ("LoRA (lora_rank > 0)", lambda c: c.lora_rank > 0)
_CLUSTER = ("backend=ray or openrlhf", lambda c: c.backend in ("ray", "openrlhf"))
_EVAL_ENVS = ("eval_envs (out-of-domain games at every evaluation)", lambda c: bool(c.eval_envs))
_FORMAT_PHASE = ("the format phase (format_phase=auto or on, with free-text answers)",
                 lambda c: c.format_phase != "off" and _answers_in_free_text(c))

SCOPED_KEYS = {
    **dict.fromkeys(("league_every", "league_size", "league_sampling", "league_latest_prob"), _LEAGUE),
    "opponent_seat": ("games against an opponent (opponent other than none)", lambda c: c.opponent != "none"),
    **dict.fromkeys(("chunk", "carry", "head", "max_chunks"), _MARKOVIAN),
    **dict.fromkeys(("lora_alpha", "lora_dropout", "lora_targets"), _LORA),
    "vllm_python": ("generation=vllm", lambda c: c.generation == "vllm"),
    **dict.fromkeys(("num_workers", "ray_address"), _CLUSTER),
    "submit": ("backend=openrlhf", lambda c: c.backend == "openrlhf"),
    **dict.fromkeys(("eval_envs_games", "eval_envs_mode"), _EVAL_ENVS),
    **dict.fromkeys(("format_steps", "format_epochs", "format_threshold"), _FORMAT_PHASE),
}
"""Keys that only act under another setting, with that setting: a value other than the
default where the setting is off would be accepted and ignored, so `validate` refuses it by
name (as `average_decay` without `policy_average=ema`, `magnet_every` without `kl_coef`)."""


def _answers_in_free_text(config: TrainConfig) -> bool:
    """Whether some turn of the run may answer in free text (only those have a format to
    learn): games outside choice mode, or tasks not answered part by part (``task_mode=auto``
    resolved as the run resolves it: SAT in a choice-mode run answers part by part)."""
    if config.mode != "choice":
        return True
    from trainers.run.setup import RunSetup

    try:
        setup = RunSetup(config)
        return bool(setup.task_envs) and setup.task_mode != "choice"
    except ValueError:  # an unknown env id: the run's own env check names it
        return True


def _in_range(name: str, value: float, low: float, high: float, *, closed_low=True, closed_high=True) -> None:
    above = value >= low if closed_low else value > low
    below = value <= high if closed_high else value < high
    if not (above and below):
        interval = f"{'[' if closed_low else '('}{low}, {high}{']' if closed_high else ')'}"
        raise ValueError(f"{name} must lie in {interval}, got {value}")


def _convert(name: str, raw: str, default: Any) -> Any:
    """Parse `raw` into the type of the field's default."""
    try:
        if isinstance(default, bool):
            lowered = raw.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, list):
            raw = raw.strip()
            if raw.startswith("["):
                raw = raw[1:-1]
            return [item.strip("'\"") for item in split_list(raw)]
        if isinstance(default, dict):
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError
            return value
        return raw
    except (ValueError, json.JSONDecodeError):
        kind = type(default).__name__
        raise ValueError(f"{name}={raw!r}: expected a {kind} value") from None


def parse_overrides(arguments: list[str], base: TrainConfig | None = None) -> TrainConfig:
    """A config from `key=value` strings; unknown keys name the valid ones."""
    config = base or TrainConfig()
    valid = {f.name: f for f in fields(TrainConfig)}
    for argument in arguments:
        key, sep, raw = argument.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep:
            raise ValueError(f"arguments are key=value pairs, got {argument!r} (see --help)")
        if key not in valid:
            raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(valid)}")
        setattr(config, key, _convert(key, raw, getattr(TrainConfig(), key)))
    return config.validate()


def help_text() -> str:
    """Every key with its default and meaning (what --help prints)."""
    defaults = TrainConfig()
    lines = ["usage: python -m trainers.selfplay [key=value ...]", "", "keys (default):"]
    for f in fields(TrainConfig):
        value = getattr(defaults, f.name)
        shown = ",".join(value) if isinstance(value, list) else json.dumps(value) if isinstance(value, dict) else value
        lines.append(f"  {f.name:<24} {f.metadata['help']} (default: {shown})")
    lines += ["", f"keys a resumed run may change: {', '.join(RESUMABLE_KEYS)}"]
    return "\n".join(lines)
