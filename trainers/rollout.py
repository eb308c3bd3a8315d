"""Rollouts: many games (or task prompts) at once, one batched model call per round.

`play_games` is the self-play engine and the evaluation engine at once. Every round it
lets fixed opponents move (they are cheap), collects the prompt of every game where a
learner seat is to move, answers all of them with ONE `LanguagePolicy.act` call, and
steps each env with its answer. A game ends by its own rules, by the invalid-action
policy, or at the env's turn limit (scored as a draw). Each learner turn becomes a
`TurnSample` whose reward is its seat's return in that game (gamma = 1, so every turn of
a player in a game gets the same return).

`run_tasks` is the single-agent counterpart: P prompts, G answers each (GRPO groups).
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field

from envs.game_env import GameEnv, agent_name
from envs.opponents import Opponent
from trainers.policy import LanguagePolicy
from trainers.samples import TurnSample


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and Python versions."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3 % (1 << 64)
    return value >> 1


@dataclass
class GameSetup:
    """One game to play: which env, which seed, which seats the policy plays."""

    env_id: str
    env: GameEnv
    seed: int
    learner_seats: frozenset[int]
    game_id: int = 0


@dataclass
class GameResult:
    env_id: str
    game_id: int
    learner_seats: frozenset[int]
    returns: list[float]
    invalid: list[int]
    """Invalid answers per seat (unparseable ones included)."""
    unparseable: list[int]
    turns: int
    truncated: bool


@dataclass
class RolloutTiming:
    generation_s: float = 0.0
    env_s: float = 0.0
    rounds: int = 0
    extra: dict = field(default_factory=dict)


def play_games(
    setups: list[GameSetup],
    policy: LanguagePolicy,
    *,
    seed: int,
    opponent: "Opponent | LanguagePolicy | None" = None,
    temperature: float | None = None,
) -> tuple[list[TurnSample], list[GameResult], RolloutTiming]:
    """Play every game to its end; return the learner turns, the results and timings.

    `opponent` plays every seat outside `learner_seats`: a fixed `Opponent` (random,
    rule-based, equilibrium), or a frozen `LanguagePolicy` (e.g. an earlier checkpoint),
    whose turns are batched like the learner's but produce no samples.
    """
    timing = RolloutTiming()
    start = time.perf_counter()
    rng = random.Random(seed)
    for setup in setups:
        setup.env.reset(seed=setup.seed)
        missing = set(range(setup.env.game.num_players())) - setup.learner_seats
        if missing and opponent is None:
            raise ValueError(f"seats {sorted(missing)} need an opponent, but none was given")
    samples_per_game: list[list[TurnSample]] = [[] for _ in setups]
    live = list(range(len(setups)))
    timing.env_s += time.perf_counter() - start
    model_opponent = isinstance(opponent, LanguagePolicy)
    while live:
        tick = time.perf_counter()
        pending, opponent_pending = [], []
        for index in live:
            env, seats = setups[index].env, setups[index].learner_seats
            while not model_opponent and not env.is_over() and env.current_player() not in seats:
                env.step(opponent.act(env.state, env.current_player(), rng))
            if not env.is_over():
                (pending if env.current_player() in seats else opponent_pending).append(index)
        live = pending + opponent_pending
        if opponent_pending:  # a frozen model on the other seats: one batched call, no samples
            prompts = [setups[i].env.turn_prompt() for i in opponent_pending]
            timing.env_s += time.perf_counter() - tick
            tick = time.perf_counter()
            replies = opponent.act(prompts, seed=derive_seed(seed, timing.rounds, 1), temperature=temperature)
            timing.generation_s += time.perf_counter() - tick
            tick = time.perf_counter()
            for index, reply in zip(opponent_pending, replies):
                setups[index].env.step(reply.text)
        if not pending:
            timing.env_s += time.perf_counter() - tick
            timing.rounds += 1
            continue
        prompts = [setups[i].env.turn_prompt() for i in pending]
        timing.env_s += time.perf_counter() - tick
        tick = time.perf_counter()
        decisions = policy.act(prompts, seed=derive_seed(seed, timing.rounds), temperature=temperature)
        timing.generation_s += time.perf_counter() - tick
        tick = time.perf_counter()
        for index, decision in zip(pending, decisions):
            setup = setups[index]
            env = setup.env
            player = env.current_player()
            agent = agent_name(player)
            invalid_before = env.infos[agent]["invalid_actions"]
            state_key = env.state.information_state_string(player)
            env.step(decision.text)
            samples_per_game[index].append(
                decision.to_sample(
                    setup.env_id,
                    player,
                    setup.game_id,
                    invalid=env.infos[agent]["invalid_actions"] > invalid_before,
                    info={"state_key": state_key},
                )
            )
        timing.rounds += 1
        timing.env_s += time.perf_counter() - tick
    samples, results = [], []
    for setup, game_samples in zip(setups, samples_per_game):
        env = setup.env
        returns = env.episode_returns()
        for sample in game_samples:
            sample.reward = returns[sample.role]
        samples.extend(game_samples)
        infos = [env.infos.get(agent_name(p), {}) for p in range(env.game.num_players())]
        results.append(
            GameResult(
                env_id=setup.env_id,
                game_id=setup.game_id,
                learner_seats=setup.learner_seats,
                returns=returns,
                invalid=[info.get("invalid_actions", 0) for info in infos],
                unparseable=[info.get("unparseable_actions", 0) for info in infos],
                turns=env.turns,
                truncated=any(env.truncations.values()),
            )
        )
    return samples, results, timing


@dataclass
class TaskResult:
    env_id: str
    group_id: int
    rewards: list[float]
    info: dict


def run_tasks(
    env_id: str,
    env,
    policy: LanguagePolicy,
    *,
    prompts: int,
    group_size: int,
    seed: int,
    temperature: float | None = None,
) -> tuple[list[TurnSample], list[TaskResult], RolloutTiming]:
    """`prompts` task instances, `group_size` answers each, all in one policy call."""
    timing = RolloutTiming()
    tick = time.perf_counter()
    drawn = []
    for group in range(prompts):
        observation, info = env.reset(seed=derive_seed(seed, group))
        messages = env.messages() if hasattr(env, "messages") else [{"role": "user", "content": observation}]
        drawn.append((copy.deepcopy(env), messages, info))
    requests = [messages for _, messages, _ in drawn for _ in range(group_size)]
    timing.env_s += time.perf_counter() - tick
    tick = time.perf_counter()
    decisions = policy.act(requests, seed=derive_seed(seed, prompts, group_size), temperature=temperature)
    timing.generation_s += time.perf_counter() - tick
    tick = time.perf_counter()
    samples, results = [], []
    for group, (task_env, _, info) in enumerate(drawn):
        rewards = []
        for decision in decisions[group * group_size : (group + 1) * group_size]:
            answer_env = copy.deepcopy(task_env)
            _, reward, _, _, step_info = answer_env.step(decision.text)
            rewards.append(float(reward))
            samples.append(decision.to_sample(env_id, 0, group, reward=float(reward)))
        results.append(TaskResult(env_id, group, rewards, dict(info)))
    timing.rounds = 1
    timing.env_s += time.perf_counter() - tick
    return samples, results, timing
