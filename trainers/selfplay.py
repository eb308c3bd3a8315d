"""Self-play training: `python -m trainers.selfplay env=kuhn_poker [key=value ...]`.

The loop, in plain sequence (CleanRL style):

    evaluate(step 0)
    for step in steps:
        samples = rollout(policy)              # trainers.rollouts.play: games / task groups
        if the answer format is not learnt yet:
            learner.imitate(format_samples)    # trainers.learning.format_phase
        else:
            samples = advantages(samples)      # trainers.learning.advantages: RAE, GRPO, ...
            learner.update(samples)            # trainers.learning.learner + trainers.learning.loss: PPO
        maybe refresh the magnet; maybe snapshot into the league
        log; maybe evaluate; maybe checkpoint
    evaluate(end); before/after table; summary.png

A token's path: the env renders a `TurnPrompt` (envs.protocol) -> `LanguagePolicy.act`
tokenises and answers it (trainers.rollouts.policy, trainers.generation) -> the env parses the
answer and plays it -> the game's return becomes the `TurnSample.reward`
(trainers.rollouts.play) -> `compute_advantages` -> `Learner.update` recomputes the response
tokens' log-probs and applies the clipped surrogate (trainers.learning.loss).

The run directory is described in trainers.run.run_dir. `resume=true` continues from the
last intact checkpoint and reproduces the metrics an uninterrupted run would have
written (same seed, CPU).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import sys
import time

import envs
from envs.tasks import level_of, task_hooks
from trainers.run import seeds
from trainers.learning.advantages import (
    AdvantageState, advantage_metrics, drop_zero_advantage, equalize_state_weights, option_centered_gaps, part_gap_advantages,
    trace_advantages,
)
from trainers.learning.diagnostics import diagnosed_trees, estimator_agreement, set_true_advantages
from trainers.run.config import TrainConfig, help_text, parse_overrides
from trainers.evaluation.evaluate import match_score, selection_score
from trainers.rollouts.league import referenced_snapshot_folders
from trainers.run.preflight import preflight
from trainers.evaluation.ratings import Ratings, policy_name
from trainers.run.report import headline, postfix, progress_bar, scalars, tensorboard_writer
from trainers.rollouts.decision_credit import COUNTERFACTUAL_CREDITS, DECISION_GAP_KEY, decision_credit_metrics
from trainers.rollouts.parts import PART_GAP_KEY, answer_in_parts
from trainers.rollouts.play import GameResult, GameSetup, GameSpec, RolloutTiming, play_games, run_tasks
from trainers.rollouts.step_size import FIRST_WAVE_TURNS, first_wave_turns, games_kept, learner_turn_range, sample_shares, wave_size
from trainers.run.run_dir import RunDirectory
from trainers.run.setup import RunSetup, eval_opponents
from trainers.run.seeds import derive_seed

INLINE_POLICY_STATES = 256
"""Largest policy table kept in an evaluation file (Kuhn Poker's 12 states are); larger ones
go beside it, in eval/policies/."""


class Trainer:
    """Everything a run holds: model, learner, policies, envs, baselines, curriculum, league, ratings."""

    def __init__(self, config: TrainConfig):
        import torch

        from trainers.generation import TransformersBackend
        from trainers.learning.learner import Learner
        from trainers.models import load_model
        from trainers.rollouts.policy import LanguagePolicy

        self.config = config = config.validate()  # resolves the step size when neither key is set
        self.run_dir = RunDirectory(config.out)
        torch.manual_seed(config.seed)
        if config.threads:
            torch.set_num_threads(config.threads)
        model, self.tokenizer = load_model(config.model, dtype=config.dtype, seed=config.seed)
        model = model.to(config.device)
        self.learner = Learner(model, config, tokenizer=self.tokenizer)
        self.setup = setup = RunSetup(config)  # envs, policies, opponents, thinking: as every backend builds them
        self.vllm = None  # generation=vllm: the engine that needs the learner's weights after every update
        if config.generation == "vllm":
            from trainers.generation.vllm_backend import start_for_run

            backend = self.vllm = start_for_run(self.learner.model, self.tokenizer, config)
        else:
            backend = TransformersBackend(self.learner.model, self.tokenizer)
        self.policy = setup.make_policy(backend, self.tokenizer)
        self.task_policy = setup.make_policy(backend, self.tokenizer, mode=setup.task_mode)
        # out-of-domain games (eval_envs) answer in their own mode: TextArena's moves cannot be listed
        self.ood_policy = setup.make_policy(backend, self.tokenizer, mode=config.eval_envs_mode)
        self.thinking = setup.thinking
        self.game_envs, self.task_envs = setup.game_envs, setup.task_envs
        self.num_players = {e: self.make_game_env(e).game.num_players() for e in self.game_envs}
        self.curriculum = setup.curriculum
        self.advantage_state = AdvantageState.with_alpha(config.rae_alpha)
        # games whose turns get their true advantage each step (trainers.learning.diagnostics)
        self.diagnosed = diagnosed_trees(config, {e: self.make_game_env(e) for e in self.game_envs})
        self.ratings = Ratings()
        self.best: dict | None = None
        self.format_steps_done = 0
        self.league = None
        if config.opponent == "league":
            from trainers.rollouts.league import League

            self.league = League(
                self.run_dir.league,
                size=config.league_size,
                sampling=config.league_sampling,
                latest_prob=config.league_latest_prob,
                load_policy=setup.frozen_policy,
            )
        self.opponent = setup.fixed_opponent()
        self.rollout_engine = None
        if config.backend == "ray" and self.game_envs:  # preflight refuses ray without games
            from trainers.backends.ray import RayRolloutEngine

            self.rollout_engine = RayRolloutEngine(config)  # plays the games instead of self.play
        self.first_wave_turns = {e: self._first_wave_turns(e) for e in self.game_envs}

    def sync_generation_weights(self) -> float:
        """Load the learner's weights into an out-of-process engine (generation=vllm); returns seconds.

        The transformers backend holds the learner's model itself and needs nothing.
        """
        if self.vllm is None:
            return 0.0
        start = time.perf_counter()
        self.vllm.load_weights(self.learner.model)
        return time.perf_counter() - start

    # -- environments ---------------------------------------------------------------
    def make_game_env(self, env_id: str):
        return self.setup.make_game_env(env_id)

    def make_task_env(self, env_id: str):
        return self.setup.make_task_env(env_id)

    def _first_wave_turns(self, env_id: str) -> int:
        """The first wave's guess of an env's learner turns a game (`step_size.first_wave_turns`)."""
        env = self.make_game_env(env_id)
        game = env.game
        if not hasattr(game, "max_game_length"):  # a TextArena game states no bounds
            return FIRST_WAVE_TURNS
        most = min(game.max_game_length(), env.turn_limit or math.inf)
        # an answer in free text can forfeit a game at any turn; a choice is always legal
        fewest = min(game.min_game_length(), most) if self.config.mode == "choice" else 1
        players = self.num_players[env_id]
        seats = len(self._learner_seats(0, players, against_model=self.league is not None))
        return first_wave_turns(*learner_turn_range(fewest, most, num_players=players, learner_seats=seats))

    def _learner_seats(self, game_number: int, num_players: int, against_model: bool) -> frozenset[int]:
        """The seats the learner plays: all of them in pure self-play; else all but the
        opponent's seat, which is `opponent_seat` (0, 1, or alternating between an env's games)."""
        if self.opponent is None and not against_model:
            return frozenset(range(num_players))
        option = self.config.opponent_seat
        # alternate: the learner takes seat (game number mod players), the opponent the next one
        opponent_seat = (game_number + 1) % num_players if option == "alternate" else int(option)
        return frozenset(range(num_players)) - {opponent_seat}

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
            task_samples, results, timing = run_tasks(
                env_id,
                self.make_task_env(env_id),
                self.task_policy,
                prompts=config.prompts_per_step,
                group_size=config.group_size,
                seed=derive_seed(config.seed, seeds.TASK, step, offset),
                thinking=self.thinking,
                credit=config.task_credit,
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
        stats.update(self.thinking.metrics(samples))
        stats["time/generation_s"] = generation_s
        stats["time/env_s"] = env_s
        return samples, stats

    def game_specs(self, step: int, games: dict[str, range] | None = None, wave: int = 0) -> list[GameSpec]:
        """Games of one step as plain data: env, seed, learner seats and opponent of each.

        `games` numbers each env's games in this step (default: the `games_per_step` games,
        envs in turn). Game n of env k (of E) has index k + E * n, which sets its seed and
        id; the learner's seat alternates with n, so every env sees every seat alike. The
        league draws the opponents of each `wave` of games from its own seed.
        """
        config, game_envs = self.config, self.game_envs
        if games is None:
            games = {env_id: range(len(range(k, config.games_per_step, len(game_envs)))) for k, env_id in enumerate(game_envs)}
        indexed = sorted((k + len(game_envs) * n, env_id, n) for k, env_id in enumerate(game_envs) for n in games.get(env_id, ()))
        league_seed = derive_seed(config.seed, seeds.LEAGUE, step, *([wave] if wave else []))
        drawn = self.league.draw(len(indexed), league_seed) if self.league else [None] * len(indexed)
        specs = []
        for (index, env_id, number), snapshot in zip(indexed, drawn):
            seats = self._learner_seats(number, self.num_players[env_id], snapshot is not None)
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
        return play_games(setups, self.policy, seed=seed, opponent=self.opponent, thinking=self.thinking, reward=self.config.reward,
                          credit=self.config.game_credit)

    def _play_step_games(self, step: int):
        if self.config.games_per_step:
            samples, results, timing = self._play_wave(step, self.game_specs(step), 0)
        else:
            samples, results, timing = self._play_to_samples(step)
        if self.league:
            for result in results:
                if result.opponent_name:
                    seat = next(iter(result.learner_seats))
                    self.league.record(result.opponent_name, match_score(result.returns[seat]))
        return samples, results, timing

    def _play_wave(self, step: int, specs: list[GameSpec], wave: int):
        """Play `specs` on the run's rollout engine (this process, or the Ray workers)."""
        seed = derive_seed(self.config.seed, seeds.ROLLOUT, step, *([wave] if wave else []))
        if self.rollout_engine is not None:
            if wave == 0:
                self.rollout_engine.broadcast(self.learner.model, version=step)  # weights change only between steps
            return self.rollout_engine.play(specs, seed)
        return self.play(specs, seed)

    def _play_to_samples(self, step: int):
        """Waves of whole games until every game env's learner turns reach its share of
        `samples_per_step`; keep each env's shortest run of games that does (trainers.rollouts.step_size)."""
        shares = sample_shares(self.config.samples_per_step, self.game_envs)
        played: dict[str, list[tuple[GameResult, list]]] = {env_id: [] for env_id in self.game_envs}
        timing = RolloutTiming()
        wave = 0
        while True:
            turns = {env_id: [len(_answers(s)) for _, s in games] for env_id, games in played.items()}
            sizes = {env_id: wave_size(shares[env_id], turns[env_id], self.first_wave_turns[env_id]) for env_id in self.game_envs}
            if not any(sizes.values()):
                break
            games = {env_id: range(len(played[env_id]), len(played[env_id]) + n) for env_id, n in sizes.items()}
            samples, results, wave_timing = self._play_wave(step, self.game_specs(step, games, wave), wave)
            by_game: dict[int, list] = {}
            for sample in samples:
                by_game.setdefault(sample.game_id, []).append(sample)
            for result in results:
                played[result.env_id].append((result, by_game.get(result.game_id, [])))
            _add_timing(timing, wave_timing)
            wave += 1
        kept = sorted(
            (game for env_id, games in played.items()
             for game in games[:games_kept(shares[env_id], [len(_answers(s)) for _, s in games])]),
            key=lambda game: game[0].game_id,
        )
        timing.extra.update({"waves": wave, "games_played": sum(map(len, played.values()))})
        return [s for _, samples in kept for s in samples], [result for result, _ in kept], timing

    def format_phase_envs(self, samples) -> list[str]:
        """The envs whose update this step is behaviour cloning of the answer format (trainers.learning.format_phase).

        Only envs answered in free text have a format to learn (tasks always; games unless
        mode=choice). With ``format_phase=auto`` an env is cloned while its own invalid rate
        is above ``format_threshold``; the other envs of the step are trained by RL as usual.
        """
        config = self.config
        if config.format_phase == "off" or self.format_steps_done >= config.format_steps:
            return []
        text_envs = [e for e in config.env if (e in self.task_envs and self.task_policy.mode != "choice")
                     or (e in self.game_envs and config.mode != "choice")]
        if config.format_phase == "on":
            return text_envs
        answers = _answers(samples)
        cloned = []
        for env_id in text_envs:
            mine = [s for s in answers if s.env_id == env_id]
            if mine and sum(s.invalid for s in mine) / len(mine) > config.format_threshold:
                cloned.append(env_id)
        return cloned

    def diagnose(self, samples) -> dict:
        """Set every diagnosed game turn's true advantage and compare each estimator with it.

        The policy table is taken before the update, from the weights that played the
        step's games, at the rollout temperature (what choice mode sampled from).
        """
        from trainers.evaluation.evaluate import policy_table

        metrics = {}
        for env_id, tree in self.diagnosed.items():
            mine = [s for s in samples if s.env_id == env_id]
            if not mine:
                continue
            table = policy_table(self.policy, self.make_game_env(env_id), temperature=self.policy.temperature)
            set_true_advantages(mine, tree, table)
            metrics.update(estimator_agreement(mine, self.advantage_state, prefix=f"advantage_diagnostics/{env_id}"))
        return metrics

    def advantages(self, samples):
        """Advantages once per answer: a Markovian trace's chunks share their trace's (trainers.rollouts.thinking)."""
        games = [s for s in samples if s.env_id in self.game_envs]
        tasks = [s for s in samples if s.env_id not in self.game_envs]
        gapped = [s for s in games if DECISION_GAP_KEY in s.info]  # game_credit=counterfactual*'s choices
        if games:
            adjust = equalize_state_weights if self.config.state_weighting == "uniform" else None
            trace_advantages(games, self.config.advantage_method(), self.advantage_state, adjust=adjust)
        if gapped:
            # after the turns' advantages (the baselines still learn every turn's reward)
            if self.config.game_credit == "counterfactual_centered":
                option_centered_gaps(gapped, DECISION_GAP_KEY)
            else:
                part_gap_advantages(gapped, DECISION_GAP_KEY)
        if tasks and self.config.task_credit == "counterfactual":
            part_gap_advantages(tasks, PART_GAP_KEY)
        elif tasks:
            trace_advantages(tasks, "grpo")
        metrics = advantage_metrics(_answers(samples)) if samples else {}
        if games and self.config.game_credit in COUNTERFACTUAL_CREDITS:
            metrics.update(decision_credit_metrics(gapped))
        return drop_zero_advantage(samples), metrics

    def train_step(self, step: int) -> dict:
        from trainers.learning.format_phase import format_samples

        config = self.config
        start = time.perf_counter()
        self.learner.set_lr(config.lr_at(step))
        samples, metrics = self.rollout(step)
        metrics["lr"] = self.learner.optimizer.param_groups[0]["lr"]  # what the optimizer will use
        tick = time.perf_counter()
        cloning = self.format_phase_envs(samples)
        learning = [s for s in samples if s.env_id not in cloning]
        kept = []
        metrics["phase"] = "format" if cloning and not learning else "rl"
        if learning:
            if self.diagnosed:
                metrics.update(self.diagnose(learning))
            kept, advantage_stats = self.advantages(learning)
            metrics.update(advantage_stats)
            metrics.update(self.advantage_state.as_metrics())
            if kept:
                metrics.update({f"train/{k}": v for k, v in self.learner.update(kept).items()})
        if cloning:
            # after the RL update: its samples' old log-probs are those of the rollout policy
            clones = []
            for offset, env_id in enumerate(cloning):
                policy = self.policy if env_id in self.game_envs else self.task_policy
                seed = derive_seed(config.seed, seeds.FORMAT, step, *([offset] if offset else []))
                clones += format_samples(policy, [s for s in samples if s.env_id == env_id], seed=seed)
            for _ in range(config.format_epochs):
                imitation = self.learner.imitate(clones)
            metrics.update({f"format/{k}": v for k, v in imitation.items()} if learning else {f"train/{k}": v for k, v in imitation.items()})
            metrics["format/envs"] = ",".join(cloning)
            self.format_steps_done += 1
        if self.learner.average is not None and (cloning or kept):
            self.learner.update_average()
        if self.vllm is not None and (cloning or kept):
            metrics["time/weight_sync_s"] = self.sync_generation_weights()
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
        games, task pass@1, ratings; writes eval/step_XXXXXXXX.json and keeps the best policy.

        With ``policy_average=ema`` the averaged weights are what is evaluated and kept; the
        current weights' exploitability is added as ``<env>/iterate_exploitability``.

        A policy table of more than `INLINE_POLICY_STATES` states (TicTacToe's 4,520 positions,
        about 1 MB) goes to eval/policies/step_XXXXXXXX.json, keyed by env, so the evaluation
        files stay small enough to read at every step.
        """
        iterate = self._iterate_exploitability(step) if self.learner.average is not None else {}
        with self.serving_average():
            results = {**self._evaluate_policy(step), **iterate}
            self.run_dir.write_json(f"eval/step_{step:08d}.json", results)
            self._keep_best(step, results)
        return results

    @contextlib.contextmanager
    def serving_average(self):
        """The policy average in the model (and in an out-of-process engine) for the block's duration."""
        if self.learner.average is None:
            yield
            return
        try:
            with self.learner.serving_average():
                self.sync_generation_weights()
                yield
        finally:
            self.sync_generation_weights()

    def _iterate_exploitability(self, step: int) -> dict:
        """The current (not averaged) weights' exploitability in every small game, for comparison."""
        from trainers.evaluation.evaluate import exploitability_report

        results = {}
        for env_id in self.game_envs:
            exact = exploitability_report(
                self.policy, self.make_game_env(env_id), seed=derive_seed(self.config.seed, seeds.EXPLOITABILITY, step),
                temperature=self.config.eval_temperature, thinking=self.thinking,
                max_decision_positions=self.config.eval_positions,
            )
            if exact is not None:
                results[f"{env_id}/iterate_exploitability"] = exact["exploitability"]
        return results

    def _evaluate_policy(self, step: int) -> dict:
        from trainers.evaluation.evaluate import evaluate_against, exploitability_report

        config = self.config
        results: dict = {"step": step}
        player = policy_name(step)
        tables = {}
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
                    thinking=self.thinking,
                )
                results[f"{env_id}/{name}"] = report
                games = report["games"]
                self.ratings.record(
                    player, name, *(round(report[f"{k}_rate"] * games) for k in ("win", "draw", "loss"))
                )
            exact = exploitability_report(
                self.policy, probe, seed=derive_seed(config.seed, seeds.EXPLOITABILITY, step),
                temperature=config.eval_temperature, thinking=self.thinking,
                max_decision_positions=config.eval_positions,
            )
            if exact is not None and len(exact["policy"]) > INLINE_POLICY_STATES:
                tables[env_id] = exact.pop("policy")
            for key, value in (exact or {}).items():
                results[f"{env_id}/{key}"] = value
            if probe.game.name == "simple_negotiation" and self.policy.mode == "choice":
                from trainers.evaluation.acceptance import acceptance_report

                report = acceptance_report(
                    self.policy, probe, seed=derive_seed(config.seed, seeds.EVALUATION, step), temperature=config.eval_temperature
                )
                if report is not None:
                    results[f"{env_id}/acceptance"] = report
        for env_id in self.task_envs:
            results[env_id] = self._evaluate_task(env_id, step)
        if config.eval_envs:
            results["ood"] = self._evaluate_ood(step)
        if config.eval_transfer and step in (0, config.steps):
            results["transfer"] = self._evaluate_transfer()
        if self.game_envs:
            results["ratings"] = self.ratings.fit()
            self.run_dir.write_json("eval/ratings.json", results["ratings"])
        if tables:
            self.run_dir.write_json(f"eval/policies/step_{step:08d}.json", tables)
        return results

    def evaluation_at(self, step: int) -> dict:
        """The evaluation written at `step`, or a new one if there is none."""
        import json

        path = self.run_dir.eval / f"step_{step:08d}.json"
        if path.exists():
            return json.loads(path.read_text())
        return self.evaluate(step)

    def _evaluate_ood(self, step: int) -> dict:
        """SPIRAL's out-of-domain evaluation (``trainers.evaluation.out_of_domain``): `eval_envs` against a
        random opponent in both seats, in `eval_envs_mode`, at the evaluation temperature."""
        from trainers.evaluation.out_of_domain import OOD_EVALUATION, OOD_OPPONENTS, evaluate_ood, expand_env_ids

        config = self.config
        return evaluate_ood(
            self.ood_policy,
            expand_env_ids(config.eval_envs),
            games=config.eval_envs_games,
            seed=derive_seed(config.seed, OOD_EVALUATION, step),
            opponents=OOD_OPPONENTS,
            temperature=config.eval_temperature,
        )

    def _evaluate_transfer(self) -> dict:
        """Reasoning transfer at the first and the last step: the same seeded arithmetic problems,
        answered greedily in free text (``trainers.evaluation.out_of_domain.transfer_accuracy``)."""
        from trainers.evaluation.out_of_domain import TRANSFER_FAMILY, transfer_accuracy

        prompt = "think" if self.task_policy.mode == "think" else "direct"
        seed = derive_seed(self.config.seed, "transfer")  # not the step: both ends meet the same problems
        # transfer problems are answered in free text, whatever mode the run's tasks answer in
        policy = self.task_policy if self.task_policy.mode != "choice" else self.setup.make_policy(self.task_policy.backend, self.tokenizer, mode="direct")
        return {TRANSFER_FAMILY: transfer_accuracy(policy, count=self.config.eval_transfer, seed=seed, prompt=prompt)}

    def _evaluate_task(self, env_id: str, step: int) -> dict:
        """Held-out pass@1 at the current level (``envs.tasks``); feeds the curriculum when there is one."""
        env = self.make_task_env(env_id)
        hooks = task_hooks(env)
        level = level_of(env)
        instances = hooks.heldout(env, self.setup.heldout_size(env_id))
        repeats = self.config.eval_samples
        prompts = [hooks.item_messages(i) for i in instances for _ in range(repeats)]
        seed = derive_seed(self.config.seed, seeds.TASK_EVALUATION, step)
        if self.task_policy.mode == "choice":  # part by part, as in training (trainers.rollouts.parts)
            parts = [hooks.item_answer_parts(i) for i in instances for _ in range(repeats)]
            replies = answer_in_parts(self.task_policy, prompts, parts, seed=seed, temperature=self.config.eval_temperature)
        else:
            replies = self.thinking.answer_all(self.task_policy, prompts, seed=seed, temperature=self.config.eval_temperature)
        scored = [hooks.score(instances[n // repeats], reply.text) for n, reply in enumerate(replies)]
        # per instance: the fraction of its answers that are correct (its pass@1 estimate)
        successes = [sum(reward > 0 for reward, _ in scored[i * repeats:(i + 1) * repeats]) / repeats for i in range(len(instances))]
        report = {
            "pass_at_1": sum(successes) / len(successes),
            "answers": len(scored),
            "no_answer_rate": sum(info.get("answer", "") is None for _, info in scored) / len(scored),
        }
        if level is not None:
            report = {"level": list(level), **report}
        guess = hooks.guess_rate(instances)
        if guess is not None:
            report["random_guess_rate"] = guess
        cap_hits = [reply.cap_hit for reply in replies if reply.cap_hit is not None]
        if cap_hits:
            report["cap_hit_rate"] = sum(cap_hits) / len(cap_hits)
        if self.curriculum is not None and self.curriculum is getattr(env, "curriculum", None):
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
        from trainers.run.checkpoints import latest_intact

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


_WAVE_TOTALS = ("wall_s", "replayed_games", "worker_restarts")
"""Rollout-engine figures summed over a step's waves; the others describe the step."""


def _add_timing(total: RolloutTiming, wave: RolloutTiming) -> None:
    total.generation_s += wave.generation_s
    total.env_s += wave.env_s
    total.rounds += wave.rounds
    for key, value in wave.extra.items():
        total.extra[key] = total.extra.get(key, 0) + value if key in _WAVE_TOTALS else value


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
    from trainers.learning.learner import NonFiniteLossError
    from trainers.run.report import print_before_after, write_summary_plot

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in argv):
        print(help_text())
        return 0
    try:
        config = parse_overrides(argv)
        if config.backend == "openrlhf":
            from trainers.backends.openrlhf.launcher import launch

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
    except OSError as error:  # a full disk or an I/O error while writing the run's files
        from trainers.run.checkpoints import latest_intact

        progress.close()
        trainer.close()
        last = latest_intact(run_dir.checkpoints)
        where = f"its last complete checkpoint is {last}" if last else "it has no complete checkpoint yet"
        print(f"error: {error}\nThe run stopped; {where}: free space and rerun the same command "
              f"with resume=true to continue from there.", file=sys.stderr)
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
