"""Self-play training: `python -m trainers.selfplay env=kuhn_poker [key=value ...]`.

The loop, in plain sequence (CleanRL style):

    evaluate(step 0)
    for step in steps:
        samples = rollout(policy)              # trainers.rollout: games / task groups
        if the answer format is not learnt yet:
            learner.imitate(format_samples)    # trainers.format_phase
        else:
            samples = advantages(samples)      # trainers.advantages: RAE, GRPO, ...
            learner.update(samples)            # trainers.learner + trainers.loss: PPO
        maybe refresh the magnet; maybe snapshot into the league
        log; maybe evaluate; maybe checkpoint
    evaluate(end); before/after table; summary.png

A token's path: the env renders a `TurnPrompt` (envs.protocol) -> `LanguagePolicy.act`
tokenises and answers it (trainers.policy, trainers.generation) -> the env parses the
answer and plays it -> the game's return becomes the `TurnSample.reward`
(trainers.rollout) -> `compute_advantages` -> `Learner.update` recomputes the response
tokens' log-probs and applies the clipped surrogate (trainers.loss).

The run directory is described in trainers.run_dir. `resume=true` continues from the
last intact checkpoint and reproduces the metrics an uninterrupted run would have
written (same seed, CPU).
"""

from __future__ import annotations

import functools
import json
import sys
import time

import envs
from trainers import seeds
from trainers.advantages import AdvantageState, advantage_metrics, compute_advantages, drop_zero_advantage, equalize_state_weights
from trainers.config import TrainConfig, help_text, parse_overrides
from trainers.evaluation import match_score, selection_score
from trainers.league import referenced_snapshot_folders
from trainers.preflight import eval_opponents, make_curriculum, preflight, sat_exclusions
from trainers.ratings import Ratings, policy_name
from trainers.report import headline, postfix, progress_bar, scalars, tensorboard_writer
from trainers.rollout import GameSetup, GameSpec, play_games, run_tasks
from trainers.run_dir import RunDirectory
from trainers.seeds import derive_seed


class Trainer:
    """Everything a run holds: model, learner, policies, envs, baselines, curriculum, league, ratings."""

    def __init__(self, config: TrainConfig):
        import torch

        from trainers.generation import TransformersBackend
        from trainers.learner import Learner
        from trainers.models import load_model
        from trainers.policy import LanguagePolicy

        self.config = config
        self.run_dir = RunDirectory(config.out)
        torch.manual_seed(config.seed)
        if config.threads:
            torch.set_num_threads(config.threads)
        model, self.tokenizer = load_model(config.model, dtype=config.dtype, seed=config.seed)
        model = model.to(config.device)
        self.learner = Learner(model, config, tokenizer=self.tokenizer)
        self.policy_options = dict(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            batch_size=config.generation_batch_size,
        )
        self.vllm = None  # generation=vllm: the engine that needs the learner's weights after every update
        if config.generation == "vllm":
            from trainers.generation.vllm_backend import start_for_run

            backend = self.vllm = start_for_run(self.learner.model, self.tokenizer, config)
        else:
            backend = TransformersBackend(self.learner.model, self.tokenizer)
        self.policy = LanguagePolicy(backend, self.tokenizer, mode=config.mode, **self.policy_options)
        # tasks answer in free text even when games use choice mode
        task_mode = "direct" if config.mode == "choice" else config.mode
        self.task_policy = LanguagePolicy(backend, self.tokenizer, mode=task_mode, **self.policy_options)
        self.game_envs = [e for e in config.env if envs.spec(e).kind == "game"]
        self.task_envs = [e for e in config.env if envs.spec(e).kind == "task"]
        self.num_players = {e: self.make_game_env(e).game.num_players() for e in self.game_envs}
        self.curriculum = make_curriculum(config)
        self.sat_exclusions = sat_exclusions(config, self.curriculum) if "sat" in self.task_envs else []
        self.advantage_state = AdvantageState.with_alpha(config.rae_alpha)
        self.ratings = Ratings()
        self.best: dict | None = None
        self.format_steps_done = 0
        self.league = None
        self.opponent = None
        if config.opponent == "league":
            from trainers.league import League

            self.league = League(
                self.run_dir.league,
                size=config.league_size,
                sampling=config.league_sampling,
                latest_prob=config.league_latest_prob,
                load_policy=self._frozen_policy,
            )
        elif config.opponent.startswith("checkpoint:"):
            self.opponent = self._frozen_policy(config.opponent.split(":", 1)[1])
        elif config.opponent != "none":
            from envs.opponents import make_opponent

            self.opponent = make_opponent(config.opponent, self.make_game_env(self.game_envs[0]).game)
        self.rollout_engine = None
        if config.backend == "ray" and self.game_envs:
            from trainers.distributed import RayRolloutEngine

            self.rollout_engine = RayRolloutEngine(config)  # plays the games instead of self.play

    def sync_generation_weights(self) -> float:
        """Load the learner's weights into an out-of-process engine (generation=vllm); returns seconds.

        The transformers backend holds the learner's model itself and needs nothing.
        """
        if self.vllm is None:
            return 0.0
        start = time.perf_counter()
        self.vllm.load_weights(self.learner.model)
        return time.perf_counter() - start

    def _frozen_policy(self, path):
        """A playing policy on a frozen copy of the model saved at `path` (no gradients)."""
        from trainers.generation import TransformersBackend
        from trainers.models import load_model
        from trainers.policy import LanguagePolicy

        frozen, tokenizer = load_model(str(path), dtype=self.config.dtype, base_model=self.config.model)
        backend = TransformersBackend(frozen.requires_grad_(False).to(self.config.device), tokenizer)
        return LanguagePolicy(backend, tokenizer, mode=self.config.mode, **self.policy_options)

    # -- environments ---------------------------------------------------------------
    def _env_kwargs(self, env_id: str) -> dict:
        """The config's env_kwargs that this env accepts (multi-env runs share them)."""
        accepted = set(envs.registry.parameters(env_id))
        return {k: v for k, v in self.config.env_kwargs.items() if k in accepted}

    def make_game_env(self, env_id: str):
        return envs.make(
            env_id,
            mode=self.config.mode,
            invalid_action_policy=self.config.invalid_action_policy,
            turn_limit=self.config.turn_limit,
            **self._env_kwargs(env_id),
        )

    def make_task_env(self, env_id: str):
        kwargs = self._env_kwargs(env_id)
        if self.curriculum is not None:
            kwargs["curriculum"] = self.curriculum
        if env_id == "sat" and self.sat_exclusions:
            kwargs["exclude"] = self.sat_exclusions
        return envs.make(env_id, **kwargs)

    def _learner_seats(self, game_index: int, num_players: int, against_model: bool) -> frozenset[int]:
        if self.opponent is None and not against_model:
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
            game_samples, results, timing = self._play_step_games(step)
            samples += game_samples
            generation_s += timing.generation_s
            env_s += timing.env_s
            stats.update(_game_stats(_answers(game_samples), results))
            stats.update({f"rollout/{k}": v for k, v in timing.extra.items()})
        for offset, env_id in enumerate(self.task_envs):
            run = run_tasks
            if config.thinking == "markovian":
                from trainers.markovian import markovian_config, run_markovian_tasks

                run = functools.partial(run_markovian_tasks, config=markovian_config(config))
            task_samples, results, timing = run(
                env_id,
                self.make_task_env(env_id),
                self.task_policy,
                prompts=config.prompts_per_step,
                group_size=config.group_size,
                seed=derive_seed(config.seed, seeds.TASK, step, offset),
            )
            for sample in task_samples:
                sample.game_id += 1_000_000 * offset  # distinct GRPO groups per env
            samples += task_samples
            generation_s += timing.generation_s
            env_s += timing.env_s
            rewards = [r for result in results for r in result.rewards]
            stats[f"reward/{env_id}"] = sum(rewards) / len(rewards)
            stats[f"solved/{env_id}"] = sum(r > 0 for r in rewards) / len(rewards)
            answers = _answers(task_samples)
            stats[f"invalid_rate/{env_id}"] = sum(s.invalid for s in answers) / len(answers)
        if config.thinking == "markovian":
            from trainers.markovian import markovian_metrics

            stats.update(markovian_metrics(samples))
        stats["time/generation_s"] = generation_s
        stats["time/env_s"] = env_s
        return samples, stats

    def game_specs(self, step: int) -> list[GameSpec]:
        """The games of one step: env, seed, learner seats and opponent of each (plain data)."""
        config = self.config
        drawn = self.league.draw(config.games_per_step, derive_seed(config.seed, seeds.LEAGUE, step)) if self.league else None
        specs = []
        for index in range(config.games_per_step):
            env_id = self.game_envs[index % len(self.game_envs)]
            snapshot = drawn[index] if drawn else None
            seats = self._learner_seats(index, self.num_players[env_id], snapshot is not None)
            specs.append(
                GameSpec(
                    env_id,
                    derive_seed(config.seed, seeds.GAME, step, index),
                    tuple(sorted(seats)),
                    index,
                    opponent_name=snapshot.name if snapshot else "",
                    opponent_path=str(snapshot.path) if snapshot else "",
                )
            )
        return specs

    def play(self, specs: list[GameSpec], seed: int):
        """Play `specs` in this process (the local rollout engine)."""
        setups = []
        for spec in specs:
            setup = GameSetup(spec.env_id, self.make_game_env(spec.env_id), spec.seed, frozenset(spec.learner_seats), spec.game_id)
            if spec.opponent_path:
                setup.opponent, setup.opponent_name = self.league.policy_at(spec.opponent_path), spec.opponent_name
            setups.append(setup)
        if self.config.thinking == "markovian":
            from trainers.markovian import markovian_config, play_markovian_games

            return play_markovian_games(
                setups, self.policy, seed=seed, config=markovian_config(self.config), opponent=self.opponent
            )
        return play_games(setups, self.policy, seed=seed, opponent=self.opponent)

    def _play_step_games(self, step: int):
        specs, seed = self.game_specs(step), derive_seed(self.config.seed, seeds.ROLLOUT, step)
        if self.rollout_engine is not None:
            self.rollout_engine.broadcast(self.learner.model, version=step)  # weights change only between steps
            samples, results, timing = self.rollout_engine.play(specs, seed)
        else:
            samples, results, timing = self.play(specs, seed)
        if self.league:
            for result in results:
                if result.opponent_name:
                    seat = next(iter(result.learner_seats))
                    self.league.record(result.opponent_name, match_score(result.returns[seat]))
        return samples, results, timing

    def format_phase_active(self, metrics: dict) -> bool:
        """Whether this step's update is behaviour cloning of the answer format (trainers.format_phase)."""
        config = self.config
        if config.format_phase == "off" or self.format_steps_done >= config.format_steps:
            return False
        if config.format_phase == "on":
            return True
        rates = [v for k, v in metrics.items() if k == "invalid_rate" or k.startswith("invalid_rate/")]
        return bool(rates) and max(rates) > config.format_threshold

    def advantages(self, samples):
        games = [s for s in samples if envs.spec(s.env_id).kind == "game"]
        tasks = [s for s in samples if envs.spec(s.env_id).kind == "task"]
        uniform = self.config.state_weighting == "uniform"
        if self.config.thinking == "markovian":
            # Delethink credit: one advantage per trace (turn), carried by each of its chunks
            from trainers.markovian import fold_loss_tokens, trace_advantages

            if games:
                trace_advantages(games, self.config.advantage_method(), self.advantage_state,
                                 adjust=equalize_state_weights if uniform else None)
            if tasks:
                trace_advantages(tasks, "grpo")
            metrics = advantage_metrics(_answers(samples)) if samples else {}
            kept = drop_zero_advantage(samples)
            if kept:
                # each chunk's loss normalised by its trace's token count (trainers.markovian)
                width = self.config.loss_length_constant() or max(1 if s.is_choice else len(s.response_ids) for s in kept)
                kept = fold_loss_tokens(kept, length_norm=self.config.length_norm, width=width)
            return kept, metrics
        if games:
            compute_advantages(games, self.config.advantage_method(), self.advantage_state)
            if uniform:
                equalize_state_weights(games)
        if tasks:
            compute_advantages(tasks, "grpo")
        metrics = advantage_metrics(samples) if samples else {}
        return drop_zero_advantage(samples), metrics

    def train_step(self, step: int) -> dict:
        from trainers.format_phase import format_samples

        start = time.perf_counter()
        self.learner.set_lr(self.config.lr_at(step))
        samples, metrics = self.rollout(step)
        metrics["lr"] = self.config.lr_at(step)
        tick = time.perf_counter()
        if self.format_phase_active(metrics):
            policy = self.policy if self.game_envs else self.task_policy
            clones = format_samples(policy, samples, seed=derive_seed(self.config.seed, seeds.FORMAT, step))
            metrics["phase"] = "format"
            for _ in range(self.config.format_epochs):
                cloning = self.learner.imitate(clones)
            metrics.update({f"train/{k}": v for k, v in cloning.items()})
            self.format_steps_done += 1
            kept = []
        else:
            kept, advantage_stats = self.advantages(samples)
            metrics["phase"] = "rl"
            metrics.update(advantage_stats)
            metrics.update(self.advantage_state.as_metrics())
            if kept:
                metrics.update({f"train/{k}": v for k, v in self.learner.update(kept).items()})
        if self.vllm is not None and (metrics["phase"] == "format" or kept):
            metrics["time/weight_sync_s"] = self.sync_generation_weights()
        config = self.config
        if config.magnet_every and (step + 1) % config.magnet_every == 0:
            self.learner.refresh_reference()
        if self.league and (step + 1) % config.league_every == 0:
            self.league.add(step + 1, self.learner.save_policy)
            metrics["league/size"] = len(self.league.snapshots)
        metrics["time/train_s"] = time.perf_counter() - tick
        metrics["samples"] = len(samples)
        metrics["samples_trained"] = len(kept)
        metrics["time/step_s"] = time.perf_counter() - start
        return metrics

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, step: int) -> dict:
        """Matches against fixed opponents (and league snapshots), exact exploitability of small
        games, task pass@1, ratings; writes eval/step_XXXXXXXX.json and keeps the best policy."""
        from trainers.evaluation import evaluate_against, model_exploitability

        config = self.config
        results: dict = {"step": step}
        player = policy_name(step)
        for env_id in self.game_envs:
            make_env = functools.partial(self.make_game_env, env_id)
            probe = make_env()
            opponents = [(name, name) for name in eval_opponents(config, probe.game)]
            if self.league:
                opponents += [(s.name, self.league.policy(s)) for s in self.league.snapshots if s.name != player]
            for name, opponent in opponents:
                report = evaluate_against(
                    self.policy,
                    make_env,
                    env_id,
                    opponent,
                    games=config.eval_games,
                    seed=derive_seed(config.seed, seeds.EVALUATION, step),
                    temperature=config.eval_temperature,
                    opponent_name=name,
                )
                results[f"{env_id}/{name}"] = report
                games = report["games"]
                self.ratings.record(
                    player, name, *(round(report[f"{k}_rate"] * games) for k in ("win", "draw", "loss"))
                )
            exact = model_exploitability(self.policy, probe, seed=derive_seed(config.seed, seeds.EXPLOITABILITY, step))
            if exact is not None:
                results[f"{env_id}/exploitability"], results[f"{env_id}/policy"] = exact
        for env_id in self.task_envs:
            results[env_id] = self._evaluate_task(env_id, step)
        if self.game_envs:
            results["ratings"] = self.ratings.fit()
            self.run_dir.write_json("eval/ratings.json", results["ratings"])
        self.run_dir.write_json(f"eval/step_{step:08d}.json", results)
        self._keep_best(step, results)
        return results

    def evaluation_at(self, step: int) -> dict:
        """The evaluation written at `step`, or a new one if there is none."""
        import json

        path = self.run_dir.eval / f"step_{step:08d}.json"
        if path.exists():
            return json.loads(path.read_text())
        return self.evaluate(step)

    def _evaluate_task(self, env_id: str, step: int) -> dict:
        """Held-out pass@1 at the current level; feeds the curriculum when there is one."""
        from curricula.sat import heldout_instances
        from envs.sat import prompt_messages, score_answer

        if env_id != "sat":
            return {}
        level = self.make_task_env(env_id).level
        size = self.curriculum.heldout_size if self.curriculum is not None else 20
        instances = heldout_instances(level, size=size)
        repeats = self.config.eval_samples
        prompts = [prompt_messages(i) for i in instances for _ in range(repeats)]
        seed = derive_seed(self.config.seed, seeds.TASK_EVALUATION, step)
        cap_hits = None
        if self.config.thinking == "markovian":
            from trainers.markovian import markovian_answers, markovian_config

            traces = markovian_answers(
                self.task_policy, prompts, config=markovian_config(self.config), seed=seed,
                temperature=self.config.eval_temperature,
            )
            texts = [t.answer_text() for t in traces]
            cap_hits = sum(t.cap_hit for t in traces) / len(traces)
        else:
            decisions = self.task_policy.act(prompts, seed=seed, temperature=self.config.eval_temperature)
            texts = [d.text for d in decisions]
        scored = [score_answer(instances[n // repeats], text) for n, text in enumerate(texts)]
        # per instance: the fraction of its answers that are correct (its pass@1 estimate)
        successes = [sum(reward > 0 for reward, _ in scored[i * repeats:(i + 1) * repeats]) / repeats for i in range(len(instances))]
        report = {
            "level": list(level),
            "pass_at_1": sum(successes) / len(successes),
            "answers": len(scored),
            "no_answer_rate": sum(info["answer"] is None for _, info in scored) / len(scored),
            "random_guess_rate": sum(min(i.num_solutions, 2**i.k) / 2**i.k for i in instances) / len(instances),
        }
        if cap_hits is not None:
            report["cap_hit_rate"] = cap_hits
        if self.curriculum is not None:
            transition = self.curriculum.record(level, successes)
            report["transition"] = None if transition is None else str(transition)
        return report

    def _keep_best(self, step: int, results: dict) -> None:
        """checkpoints/best: the lowest mean exploitability (small games), else the highest rating or pass@1."""
        score = selection_score(results, policy_name(step))
        if score is None:
            return
        metric, value = score
        better = self.best is None or (value < self.best["value"] if metric == "exploitability" else value > self.best["value"])
        if better:
            self.best = {"step": step, "metric": metric, "value": value}
            self.learner.save_policy(self.run_dir.checkpoints / "best", {"step": step, metric: value, "base_model": self.config.model})

    def close(self) -> None:
        """Stop the rollout workers and the vLLM engine, if any."""
        if self.rollout_engine is not None:
            self.rollout_engine.close()
        if self.vllm is not None:
            self.vllm.close()

    # -- checkpoints ------------------------------------------------------------------
    def save(self, next_step: int) -> None:
        extra = {
            "step": next_step,
            "advantage": self.advantage_state.state_dict(),
            "curriculum": None if self.curriculum is None else self.curriculum.state_dict(),
            "config": self.config.to_dict(),
            "base_model": self.config.model,
            "lora_rank": self.config.lora_rank,
            "ratings": self.ratings.state_dict(),
            "best": self.best,
            "format_steps_done": self.format_steps_done,
            "league": None if self.league is None else self.league.state_dict(),
        }
        directory = self.run_dir.checkpoints
        self.learner.save_checkpoint(directory, next_step, extra, keep_last=max(1, self.config.keep_checkpoints))
        if self.league is not None:
            self.league.remove_unreferenced(referenced_snapshot_folders(directory))

    def restore(self) -> int:
        from trainers.checkpoints import latest_intact

        path = latest_intact(self.run_dir.checkpoints)
        if path is None:
            raise ValueError(f"{self.config.out} has no intact checkpoint to resume from")
        extra = self.learner.load_checkpoint(path)
        step = int(extra["step"])  # every step sets its lr from the schedule: a changed lr acts
        self.advantage_state.load_state_dict(extra["advantage"])
        if self.curriculum is not None and extra.get("curriculum"):
            self.curriculum.load_state_dict(extra["curriculum"])
        self.ratings.load_state_dict(extra["ratings"])
        self.best = extra["best"]
        self.format_steps_done = extra["format_steps_done"]
        if self.league is not None:
            self.league.load_state_dict(extra["league"], step=step)
        self.sync_generation_weights()
        return step


def _answers(samples):
    """One sample per answer: a Markovian trace's chunk samples count once (its first chunk)."""
    return [s for s in samples if s.info.get("chunk_index", 0) == 0]


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


def main(argv: list[str] | None = None) -> int:
    from trainers.learner import NonFiniteLossError
    from trainers.report import print_before_after, write_summary_plot

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in argv):
        print(help_text())
        return 0
    try:
        config = parse_overrides(argv)
        if config.backend == "openrlhf":
            from trainers.openrlhf.launcher import launch

            return launch(config)
        preflight(config)
        trainer = Trainer(config)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_dir = trainer.run_dir
    run_dir.create(config)
    start = trainer.restore() if config.resume else 0
    run_dir.keep_metrics_before(start)
    writer = tensorboard_writer(run_dir.path, config)
    progress = progress_bar(config, start)
    last_evaluation: dict = {}
    final = None
    if start == 0:
        last_evaluation = headline(trainer.evaluate(0))
    try:
        for step in range(start, config.steps):
            metrics = {"step": step, **trainer.train_step(step)}
            last = step + 1 == config.steps
            # the final evaluation comes before the final checkpoint, so the checkpoint
            # holds every rating and the best policy of the run
            if last or (config.eval_every and (step + 1) % config.eval_every == 0):
                evaluation = trainer.evaluate(step + 1)
                final = evaluation if last else None
                last_evaluation = headline(evaluation)
                metrics.update(last_evaluation)
            run_dir.append_metrics(metrics)
            if writer is not None:
                for key, value in scalars(metrics):
                    writer.add_scalar(key, value, step)
            if last or (config.save_every and (step + 1) % config.save_every == 0):
                trainer.save(step + 1)
            progress.update(1)
            progress.set_postfix(postfix(metrics, last_evaluation), refresh=False)
    except NonFiniteLossError as error:
        progress.close()
        trainer.close()
        print(f"error: {error}; the last checkpoint is the one to resume from", file=sys.stderr)
        return 1
    progress.close()
    if final is None:  # resumed after the last step: the run was complete
        final = trainer.evaluation_at(config.steps)
    run_dir.write_json("eval/final.json", final)
    summary = headline(final)
    print_before_after(run_dir.eval)
    write_summary_plot(run_dir.eval, run_dir.path / "summary.png")
    print(json.dumps({"run": str(run_dir.path), "steps": config.steps, **summary}))
    trainer.close()
    if writer is not None:
        for key, value in scalars(summary):
            writer.add_scalar(key, value, config.steps)
        writer.close()
    return 0




if __name__ == "__main__":
    sys.exit(main())
