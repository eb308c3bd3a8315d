"""Self-play training: `python -m trainers.selfplay env=kuhn_poker [key=value ...]`.

The loop, in plain sequence (CleanRL style):

    for step in steps:
        samples = rollout(policy)              # trainers.rollout: games / task groups
        samples = advantages(samples)          # trainers.advantages: RAE, GRPO, ...
        metrics = learner.update(samples)      # trainers.learner + trainers.loss: PPO
        log(metrics); maybe evaluate; maybe checkpoint

A token's path: the env renders a `TurnPrompt` (envs.protocol) -> `LanguagePolicy.act`
tokenises and answers it (trainers.policy, trainers.generation) -> the env parses the
answer and plays it -> the game's return becomes the `TurnSample.reward`
(trainers.rollout) -> `compute_advantages` -> `Learner.update` recomputes the response
tokens' log-probs and applies the clipped surrogate (trainers.loss).

Run directory (`out`): config.json, metrics.jsonl (one JSON object per step), tb/
(TensorBoard), checkpoints/step_XXXXXXXX/ (atomic), eval/ (evaluation results).
`resume=true` continues from the last checkpoint and reproduces the metrics an
uninterrupted run would have written (same seed, CPU).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import envs
from trainers.advantages import AdvantageState, advantage_metrics, compute_advantages, drop_zero_advantage
from trainers.config import TrainConfig, help_text, parse_overrides
from trainers.rollout import GameSetup, derive_seed, play_games, run_tasks

CHECKPOINTS = "checkpoints"


class Trainer:
    """Everything a run holds: model, learner, policy, envs, baselines, curriculum."""

    def __init__(self, config: TrainConfig):
        import torch

        from envs.opponents import make_opponent
        from trainers.generation import TransformersBackend
        from trainers.learner import Learner, LearnerConfig
        from trainers.models import load_model
        from trainers.policy import LanguagePolicy

        self.config = config
        self.out = Path(config.out)
        for env_id in config.env:
            envs.spec(env_id)  # unknown ids fail before the model loads
        torch.manual_seed(config.seed)
        if config.threads:
            torch.set_num_threads(config.threads)
        model, self.tokenizer = load_model(config.model, dtype=config.dtype, seed=config.seed)
        self.learner = Learner(
            model,
            LearnerConfig(
                lr=config.lr,
                weight_decay=config.weight_decay,
                max_grad_norm=config.max_grad_norm,
                epochs=config.ppo_epochs,
                micro_batch_size=config.micro_batch_size,
                clip=config.clip,
                length_norm=config.length_norm,
                max_length=config.max_new_tokens if config.mode != "choice" else None,
                kl_coef=config.kl_coef,
                entropy_coef=config.entropy_coef,
                lora_rank=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_target_modules=tuple(config.lora_targets),
                seed=config.seed,
            ),
            tokenizer=self.tokenizer,
        )
        backend = TransformersBackend(self.learner.model, self.tokenizer)
        policy_options = dict(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            batch_size=config.generation_batch_size,
        )
        self.policy = LanguagePolicy(backend, self.tokenizer, mode=config.mode, **policy_options)
        # tasks answer in free text even when games use choice mode
        task_mode = "direct" if config.mode == "choice" else config.mode
        self.task_policy = LanguagePolicy(backend, self.tokenizer, mode=task_mode, **policy_options)
        self.game_envs = [e for e in config.env if envs.spec(e).kind == "game"]
        self.task_envs = [e for e in config.env if envs.spec(e).kind == "task"]
        self.curriculum = None
        if config.curriculum == "saturn":
            from curricula.curriculum import saturn_curriculum

            self.curriculum = saturn_curriculum()
        self.advantage_state = AdvantageState.with_alpha(config.rae_alpha)
        self.opponent = None
        if config.opponent.startswith("checkpoint:"):
            # an earlier checkpoint (or any model) frozen on the other seat
            frozen, frozen_tokenizer = load_model(config.opponent.split(":", 1)[1], dtype=config.dtype)
            self.opponent = LanguagePolicy(
                TransformersBackend(frozen.requires_grad_(False), frozen_tokenizer),
                frozen_tokenizer,
                mode=config.mode,
                **policy_options,
            )
        elif config.opponent != "none":
            probe = self.make_game_env(self.game_envs[0])
            self.opponent = make_opponent(config.opponent, probe.game)
        self.step = 0

    # -- environments ---------------------------------------------------------------
    def _env_kwargs(self, env_id: str) -> dict:
        """The config's env_kwargs that this env accepts (multi-env runs share them)."""
        accepted = set(envs.registry.parameters(env_id))
        return {k: v for k, v in self.config.env_kwargs.items() if k in accepted}

    def make_game_env(self, env_id: str):
        return envs.make(
            env_id,
            mode=self.config.mode,
            invalid_action_policy=self.config.invalid_policy,
            turn_limit=self.config.turn_limit,
            **self._env_kwargs(env_id),
        )

    def make_task_env(self, env_id: str):
        kwargs = self._env_kwargs(env_id)
        if self.curriculum is not None:
            kwargs["curriculum"] = self.curriculum
        return envs.make(env_id, **kwargs)

    def _learner_seats(self, game_index: int, num_players: int) -> frozenset[int]:
        if self.opponent is None:
            return frozenset(range(num_players))
        option = self.config.opponent_seat
        seat = game_index % num_players if option == "alternate" else int(option)
        return frozenset({seat})

    # -- one step -----------------------------------------------------------------------
    def rollout(self, step: int):
        config = self.config
        samples, stats = [], {}
        generation_s = env_s = 0.0
        if self.game_envs:
            setups = []
            for index in range(config.games_per_step):
                env_id = self.game_envs[index % len(self.game_envs)]
                env = self.make_game_env(env_id)
                seats = self._learner_seats(index, env.game.num_players())
                setups.append(GameSetup(env_id, env, derive_seed(config.seed, step, index), seats, index))
            game_samples, results, timing = play_games(
                setups, self.policy, seed=derive_seed(config.seed, step), opponent=self.opponent
            )
            samples += game_samples
            generation_s += timing.generation_s
            env_s += timing.env_s
            stats.update(_game_stats(game_samples, results))
        for offset, env_id in enumerate(self.task_envs):
            task_samples, results, timing = run_tasks(
                env_id,
                self.make_task_env(env_id),
                self.task_policy,
                prompts=config.prompts_per_step,
                group_size=config.group_size,
                seed=derive_seed(config.seed, step, 1_000_000 + offset),
            )
            for sample in task_samples:
                sample.game_id += 1_000_000 * offset  # distinct GRPO groups per env
            samples += task_samples
            generation_s += timing.generation_s
            env_s += timing.env_s
            rewards = [r for result in results for r in result.rewards]
            stats[f"reward/{env_id}"] = sum(rewards) / len(rewards)
            stats[f"solved/{env_id}"] = sum(r > 0 for r in rewards) / len(rewards)
        stats["time/generation_s"] = generation_s
        stats["time/env_s"] = env_s
        return samples, stats

    def advantages(self, samples):
        games = [s for s in samples if envs.spec(s.env_id).kind == "game"]
        tasks = [s for s in samples if envs.spec(s.env_id).kind == "task"]
        if games:
            compute_advantages(games, self.config.advantage_method(), self.advantage_state)
        if tasks:
            compute_advantages(tasks, "grpo")
        metrics = advantage_metrics(samples) if samples else {}
        return drop_zero_advantage(samples), metrics

    def train_step(self, step: int) -> dict:
        start = time.perf_counter()
        samples, metrics = self.rollout(step)
        kept, advantage_stats = self.advantages(samples)
        metrics.update(advantage_stats)
        metrics.update(self.advantage_state.as_metrics())
        tick = time.perf_counter()
        if kept:
            metrics.update({f"train/{k}": v for k, v in self.learner.update(kept).items()})
        metrics["time/train_s"] = time.perf_counter() - tick
        metrics["samples"] = len(samples)
        metrics["samples_trained"] = len(kept)
        metrics["time/step_s"] = time.perf_counter() - start
        return metrics

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, step: int) -> dict:
        from trainers.evaluation import evaluate_against, exploitability

        config = self.config
        results = {"step": step}
        for env_id in self.game_envs:
            make_env = functools.partial(self.make_game_env, env_id)
            probe = make_env()
            for opponent in config.eval_opponents:
                try:
                    report = evaluate_against(
                        self.policy,
                        make_env,
                        env_id,
                        opponent,
                        games=config.eval_games,
                        seed=derive_seed(config.seed, 7, step),
                        temperature=config.eval_temperature,
                    )
                except ValueError as error:  # e.g. no rule-based player for this game
                    results[f"{env_id}/{opponent}"] = {"error": str(error)}
                    continue
                results[f"{env_id}/{opponent}"] = report
            if env_id == "kuhn_poker" and getattr(probe.game, "hands", 1) == 1:
                value, table = exploitability(self.policy, probe, seed=derive_seed(config.seed, 8, step))
                results[f"{env_id}/exploitability"] = value
                results[f"{env_id}/policy"] = table
        for env_id in self.task_envs:
            results[env_id] = self._evaluate_task(env_id, step)
        folder = self.out / "eval"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"step_{step:08d}.json").write_text(json.dumps(results, indent=1))
        return results

    def _evaluate_task(self, env_id: str, step: int) -> dict:
        """Held-out pass@1 at the current level; feeds the curriculum when there is one."""
        from curricula.sat import heldout_instances
        from envs.sat import prompt_messages, score_answer

        if env_id != "sat":
            return {}
        env = self.make_task_env(env_id)
        level = env.level
        instances = heldout_instances(level, size=20 if self.curriculum is None else self.curriculum.heldout_size or 20)
        decisions = self.task_policy.act(
            [prompt_messages(i) for i in instances],
            seed=derive_seed(self.config.seed, 9, step),
            temperature=self.config.eval_temperature,
        )
        successes = [float(score_answer(i, d.text)[0] > 0) for i, d in zip(instances, decisions)]
        report = {"level": list(level), "pass_at_1": sum(successes) / len(successes)}
        if self.curriculum is not None:
            transition = self.curriculum.record(level, successes)
            report["transition"] = None if transition is None else str(transition)
        return report

    # -- checkpoints ------------------------------------------------------------------
    def save(self, next_step: int) -> None:
        extra = {
            "step": next_step,
            "advantage": self.advantage_state.state_dict(),
            "curriculum": None if self.curriculum is None else self.curriculum.state_dict(),
            "config": self.config.to_dict(),
            "base_model": self.config.model,
            "lora_rank": self.config.lora_rank,
        }
        self.learner.save_checkpoint(self.out / CHECKPOINTS, next_step, extra, keep_last=max(1, self.config.keep_checkpoints))

    def restore(self) -> int:
        from trainers.learner import latest_checkpoint

        path = latest_checkpoint(self.out / CHECKPOINTS)
        if path is None:
            return 0
        extra = self.learner.load_checkpoint(path)
        self.advantage_state.load_state_dict(extra["advantage"])
        if self.curriculum is not None and extra.get("curriculum"):
            self.curriculum.load_state_dict(extra["curriculum"])
        return int(extra["step"])


def check_envs(config: TrainConfig) -> None:
    """Fail early (before the model loads) on envs or opponents that cannot work together."""
    from envs.opponents import make_opponent

    kinds = {env_id: envs.spec(env_id).kind for env_id in config.env}
    if config.opponent == "none" or config.opponent.startswith("checkpoint:"):
        if config.opponent != "none" and "game" not in kinds.values():
            raise ValueError(f"opponent={config.opponent} needs a game env; {', '.join(config.env)} are tasks")
        return
    game_envs = [env_id for env_id, kind in kinds.items() if kind == "game"]
    if not game_envs:
        raise ValueError(f"opponent={config.opponent} needs a game env; {', '.join(config.env)} are tasks")
    for env_id in game_envs:
        make_opponent(config.opponent, envs.make(env_id).game)  # raises if it cannot play it


def _game_stats(samples, results) -> dict:
    stats = {"games": len(results), "turns": len(samples)}
    if samples:
        stats["invalid_rate"] = sum(s.invalid for s in samples) / len(samples)
    by_role: dict[tuple, list[float]] = {}
    for result in results:
        for seat in result.learner_seats:
            by_role.setdefault((result.env_id, seat), []).append(result.returns[seat])
    for (env_id, seat), values in sorted(by_role.items()):
        stats[f"return/{env_id}/{seat}"] = sum(values) / len(values)
    stats["truncated_rate"] = sum(r.truncated for r in results) / max(1, len(results))
    return stats


def _prepare_run_dir(config: TrainConfig) -> list[dict]:
    """Create `out`; on resume keep the metrics lines written before the checkpoint."""
    out = Path(config.out)
    metrics_path = out / "metrics.jsonl"
    if out.exists() and metrics_path.exists() and not config.resume:
        raise SystemExit(
            f"error: {out} already holds a run; pass resume=true to continue it or choose another out="
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    if not metrics_path.exists():
        return []
    return [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]


def _scalars(metrics: dict):
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield key, float(value)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in argv):
        print(help_text())
        return 0
    try:
        config = parse_overrides(argv)
        check_envs(config)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    previous = _prepare_run_dir(config)
    trainer = Trainer(config)
    start = trainer.restore() if config.resume else 0
    metrics_path = trainer.out / "metrics.jsonl"
    # drop lines from steps the checkpoint does not cover (they are recomputed identically)
    kept = [m for m in previous if m.get("step", -1) < start]
    with open(metrics_path, "w") as handle:
        handle.writelines(json.dumps(m) + "\n" for m in kept)
    writer = _tensorboard(trainer.out, config)
    progress = _progress(config, start)
    evaluations = {}
    if config.eval_every and start == 0:
        evaluations[0] = trainer.evaluate(0)
    for step in range(start, config.steps):
        metrics = {"step": step, **trainer.train_step(step)}
        if config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 < config.steps:
            evaluations[step + 1] = trainer.evaluate(step + 1)
            metrics.update(_headline(evaluations[step + 1]))
        with open(metrics_path, "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if writer is not None:
            for key, value in _scalars(metrics):
                writer.add_scalar(key, value, step)
        if config.save_every and (step + 1) % config.save_every == 0:
            trainer.save(step + 1)
        progress.update(1)
        progress.set_postfix(_postfix(metrics), refresh=False)
    progress.close()
    if start < config.steps or not (trainer.out / CHECKPOINTS).exists():
        trainer.save(config.steps)
    final = trainer.evaluate(config.steps)
    (trainer.out / "eval" / "final.json").write_text(json.dumps(final, indent=1))
    summary = _headline(final)
    print(json.dumps({"run": str(trainer.out), "steps": config.steps, **summary}))
    if writer is not None:
        for key, value in _scalars(summary):
            writer.add_scalar(key, value, config.steps)
        writer.close()
    return 0


def _headline(evaluation: dict) -> dict:
    """The few evaluation numbers worth a metrics column."""
    out = {}
    for key, value in evaluation.items():
        if isinstance(value, dict) and "mean_return" in value:
            out[f"eval/{key}/mean_return"] = value["mean_return"]
            out[f"eval/{key}/win_rate"] = value["win_rate"]
            out[f"eval/{key}/invalid_rate"] = value["invalid_rate"]
        elif key.endswith("exploitability"):
            out[f"eval/{key}"] = value
        elif isinstance(value, dict) and "pass_at_1" in value:
            out[f"eval/{key}/pass_at_1"] = value["pass_at_1"]
    return out


def _postfix(metrics: dict) -> dict:
    rewards = [v for k, v in metrics.items() if k.startswith(("return/", "reward/"))]
    postfix = {"step": metrics["step"]}
    if rewards:
        postfix["reward"] = f"{sum(rewards) / len(rewards):+.3f}"
    if "invalid_rate" in metrics:
        postfix["invalid"] = f"{metrics['invalid_rate']:.2f}"
    postfix["s/step"] = f"{metrics['time/step_s']:.1f}"
    return postfix


def _progress(config: TrainConfig, start: int):
    from tqdm import tqdm

    return tqdm(total=config.steps, initial=start, desc="selfplay", unit="step", disable=not config.progress)


def _tensorboard(out: Path, config: TrainConfig):
    if not config.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tb"))


if __name__ == "__main__":
    sys.exit(main())
