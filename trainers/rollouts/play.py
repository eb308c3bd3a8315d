"""Rollouts: many games (or task prompts) at once, one batched model call per round.

`play_games` is the self-play engine and the evaluation engine at once. Every round:

1. fixed opponents (random, rule-based, equilibrium) move until a model is to move;
2. every game where a frozen model opponent (an earlier checkpoint, a league snapshot) is
   to move gets its answer, one batched call per opponent model, no samples;
3. every game where a learner seat is to move gets its answer from ONE `policy.act` call,
   and each answer becomes a `TurnSample`.

A game ends by its own rules, by the invalid-action policy, or at the env's turn limit
(scored as a draw). Once all games are over each sample's reward is its seat's return in
its game (gamma = 1: every turn of a player in a game gets the same return), or with
``reward=margin`` the change of its seat's score margin from its turn to the end
(``trainers.rollouts.rewards``).

`run_tasks` is the single-agent counterpart: P prompts, G answers each (GRPO groups).

Both answer the learner through the run's thinking strategy (``trainers.rollouts.thinking``): plain
generation, or Markovian traces whose every chunk becomes a sample.
"""

from __future__ import annotations

import copy
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Union

from envs.game_env import GameEnv, agent_name
from envs.opponents import Opponent
from envs.tasks import task_hooks
from trainers.run import seeds
from trainers.rollouts.decision_credit import (
    COUNTERFACTUAL_CREDITS, DECISION_GAP_KEY, DECISION_REGRET_KEY, GAME_CREDITS, decision_gaps, option_values,
)
from trainers.rollouts.parts import PART_GAP_KEY, TASK_CREDITS, answer_in_parts, counterfactual_gaps
from trainers.rollouts.policy import LanguagePolicy
from trainers.rollouts.rewards import MARGIN_KEY, assign_rewards, margin_now
from trainers.learning.samples import TURN_KEY, TurnSample
from trainers.run.seeds import derive_seed
from trainers.rollouts.thinking import PLAIN, MarkovianThinking, PlainThinking

AnyOpponent = Union[Opponent, LanguagePolicy]
ThinkingStrategy = Union[PlainThinking, MarkovianThinking]


@dataclass(frozen=True)
class GameSpec:
    """What a game is, as plain data (picklable, so a remote rollout worker can build it).

    `opponent_path` names a frozen policy folder (a league snapshot) that plays the other
    seats; empty means the run's own opponent (or none in pure self-play).
    """

    env_id: str
    seed: int
    learner_seats: tuple[int, ...]
    game_id: int
    opponent_name: str = ""
    opponent_path: str = ""


@dataclass
class GameSetup:
    """One game to play: which env, which seed, which seats the policy plays, and who plays the rest."""

    env_id: str
    env: GameEnv
    seed: int
    learner_seats: frozenset[int]
    game_id: int = 0
    opponent: AnyOpponent | None = None
    """Plays every other seat; None: the `opponent` given to `play_games`."""
    opponent_name: str = ""
    """How results name the opponent (league snapshots: "snapshot_00000020")."""


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
    opponent_name: str = ""


@dataclass
class RolloutTiming:
    generation_s: float = 0.0
    env_s: float = 0.0
    rounds: int = 0
    extra: dict = field(default_factory=dict)

    @contextmanager
    def measure(self, kind: str):
        """Add the wall time of the block to ``generation_s`` or ``env_s``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            if kind == "generation":
                self.generation_s += elapsed
            else:
                self.env_s += elapsed


def play_games(
    setups: list[GameSetup],
    policy: LanguagePolicy,
    *,
    seed: int,
    opponent: AnyOpponent | None = None,
    temperature: float | None = None,
    thinking: ThinkingStrategy = PLAIN,
    reward: str = "outcome",
    credit: str = "turn",
) -> tuple[list[TurnSample], list[GameResult], RolloutTiming]:
    """Play every game to its end; return the learner turns, the results and timings.

    `opponent` (or a setup's own `opponent`) plays every seat outside `learner_seats`: a
    fixed `Opponent`, or a frozen `LanguagePolicy` whose turns are batched like the
    learner's but produce no samples. `thinking` answers the learner's turns
    (``trainers.rollouts.thinking``): plain, one call per round; Markovian, one chunk of every open
    trace per round, a turn being played once its trace is over. `reward` is what the
    samples are trained on (``trainers.rollouts.rewards``); results report the outcome.
    ``credit="counterfactual"`` (or ``"counterfactual_centered"``; choice mode) writes the
    counterfactual advantage of every choice whose options settle the mover's margin at once
    into ``info[DECISION_GAP_KEY]``, and its regret into ``info[DECISION_REGRET_KEY]``;
    ``credit="solved"`` does the same with the options' values under perfect play
    (``trainers.rollouts.decision_credit``).
    """
    if credit not in GAME_CREDITS:
        raise ValueError(f"unknown game credit {credit!r}; valid: {', '.join(GAME_CREDITS)}")
    if credit in COUNTERFACTUAL_CREDITS and policy.mode != "choice":
        raise ValueError(f"game_credit={credit} credits choices by the policy's own distribution; this policy answers in {policy.mode} mode")
    timing = RolloutTiming()
    rng = random.Random(seed)
    with timing.measure("env"):
        opponents = _start_games(setups, opponent)
    session = thinking.session(policy, seed=seed, temperature=temperature)
    samples_per_game: list[list[TurnSample]] = [[] for _ in setups]
    answers_given = [0] * len(setups)
    live = list(range(len(setups)))
    with policy.fixed_weights():
        while live:
            with timing.measure("env"):
                learner_turns, model_turns = _advance_to_model_turns(setups, opponents, live, rng)
            live = learner_turns + [i for group in model_turns.values() for i in group]
            for group in model_turns.values():
                _answer_opponent_turns(setups, opponents[group[0]], group, seed, temperature, timing)
            if learner_turns:
                _answer_learner_turns(setups, learner_turns, session, timing, samples_per_game, answers_given, reward, credit)
            timing.rounds += 1
    with timing.measure("env"):
        samples, results = _collect(setups, samples_per_game, reward)
    return samples, results, timing


def _start_games(setups: list[GameSetup], default: AnyOpponent | None) -> list[AnyOpponent | None]:
    """Reset every env; return each game's opponent (checked: every non-learner seat needs one)."""
    opponents = []
    for setup in setups:
        setup.env.reset(seed=setup.seed)
        chosen = setup.opponent if setup.opponent is not None else default
        missing = set(range(setup.env.game.num_players())) - setup.learner_seats
        if missing and chosen is None:
            raise ValueError(f"seats {sorted(missing)} need an opponent, but none was given")
        opponents.append(chosen)
    return opponents


def _advance_to_model_turns(setups, opponents, live, rng) -> tuple[list[int], dict[int, list[int]]]:
    """Let fixed opponents move; return the games where the learner is to move and,
    per frozen model opponent (keyed by identity), the games where it is to move."""
    learner_turns: list[int] = []
    model_turns: dict[int, list[int]] = {}
    for index in live:
        env, seats, opponent = setups[index].env, setups[index].learner_seats, opponents[index]
        is_model = isinstance(opponent, LanguagePolicy)
        while not is_model and not env.is_over() and env.current_player() not in seats:
            env.step(opponent.act(env.state, env.current_player(), rng))
        if env.is_over():
            continue
        if env.current_player() in seats:
            learner_turns.append(index)
        else:
            model_turns.setdefault(id(opponent), []).append(index)
    return learner_turns, model_turns


def _answer_opponent_turns(setups, opponent: LanguagePolicy, games: list[int], seed, temperature, timing) -> None:
    """One batched call of a frozen model opponent; its answers are played, not trained on."""
    with timing.measure("env"):
        prompts = [setups[i].env.turn_prompt() for i in games]
    with timing.measure("generation"):
        replies = opponent.act(prompts, seed=derive_seed(seed, seeds.OPPONENT, timing.rounds), temperature=temperature)
    with timing.measure("env"):
        for index, reply in zip(games, replies):
            setups[index].env.step(reply.text)


def _answer_learner_turns(setups, games, session, timing, samples_per_game, answers_given, reward="outcome", credit="turn") -> None:
    """One round of the thinking session for every game where a learner seat is to move;
    play the answers that are ready and record their samples."""
    with timing.measure("env"):
        turns = [(i, None if session.thinking(i) else setups[i].env.turn_prompt()) for i in games]
    with timing.measure("generation"):
        replies = session.answer(turns, timing.rounds)
    with timing.measure("env"):
        for index, reply in replies:
            setup = setups[index]
            env, prompt = setup.env, reply.prompt
            player = env.current_player()
            agent = agent_name(player)
            invalid_before = env.infos[agent]["invalid_actions"]
            state_key = env.state.information_state_string(player)
            info = {"state_key": state_key, "messages": prompt.messages()}
            if reward != "outcome":  # margin, turn_margin
                info[MARGIN_KEY] = margin_now(env, player)
                info[TURN_KEY] = env.turns
            parsed = prompt.parse(reply.text)
            gaps = None
            if credit in COUNTERFACTUAL_CREDITS:
                values = option_values(credit, env.state, player, prompt.action_ids)
                gaps = decision_gaps(reply.decision, prompt.choices, prompt.chained, values)
            env.step(reply.text)
            turn_samples = reply.samples(
                setup.env_id,
                player,
                setup.game_id,
                name=f"{setup.env_id}/{setup.game_id}/{answers_given[index]}",
                invalid=env.infos[agent]["invalid_actions"] > invalid_before,
                # the format phase re-scores this turn's legal answers from info's messages
                info=info,
                answer_info={
                    # the legal action the answer named (None: invalid), whatever its wording
                    "action": None if parsed.action is None else prompt.choices[prompt.action_ids.index(parsed.action)],
                    "action_id": parsed.action,  # the game's action id (exact-advantage diagnostics)
                    "choices": prompt.choices,
                },
            )
            for sample, choice in zip(turn_samples, gaps or ()):
                if choice is not None:
                    sample.info[DECISION_GAP_KEY], sample.info[DECISION_REGRET_KEY] = choice
            samples_per_game[index] += turn_samples
            answers_given[index] += 1


def _collect(setups, samples_per_game, reward="outcome") -> tuple[list[TurnSample], list[GameResult]]:
    """Give every sample its reward; summarise each game by its outcome."""
    samples, results = [], []
    for setup, game_samples in zip(setups, samples_per_game):
        env = setup.env
        returns = assign_rewards(env, game_samples, reward)
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
                opponent_name=setup.opponent_name,
            )
        )
    return samples, results


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
    thinking: ThinkingStrategy = PLAIN,
    credit: str = "answer",
) -> tuple[list[TurnSample], list[TaskResult], RolloutTiming]:
    """`prompts` task instances, `group_size` answers each, all in one policy call (plain),
    one batch of traces advancing together (Markovian), or part by part (a choice-mode
    policy: ``trainers.rollouts.parts``). The instances depend only on `seed`,
    not on the thinking strategy. Every sample's ``game_id`` is its GRPO group (the prompt);
    a sample that can list the task's well-formed answers carries them in ``info["choices"]``
    (``envs.tasks``: the format phase clones one of them). ``credit="counterfactual"`` (choice
    mode) writes each part's counterfactual advantage into ``info[PART_GAP_KEY]``
    (``trainers.rollouts.parts``)."""
    if credit not in TASK_CREDITS:
        raise ValueError(f"unknown task credit {credit!r}; valid: {', '.join(TASK_CREDITS)}")
    if credit == "counterfactual" and policy.mode != "choice":
        raise ValueError(f"task_credit=counterfactual credits the parts of an answer chosen part by part; this policy answers in {policy.mode} mode")
    timing = RolloutTiming()
    hooks = task_hooks(env)
    with timing.measure("env"):
        drawn = []
        for group in range(prompts):
            observation, info = env.reset(seed=derive_seed(seed, seeds.TASK, group))
            drawn.append((copy.deepcopy(env), hooks.messages(env, observation), info))
        requests = [messages for _, messages, _ in drawn for _ in range(group_size)]
    with timing.measure("generation"):
        if policy.mode == "choice":  # part by part (trainers.rollouts.parts)
            parts = [hooks.answer_parts(info) for _, _, info in drawn for _ in range(group_size)]
            replies = answer_in_parts(policy, requests, parts, seed=derive_seed(seed, thinking.task_stream), temperature=temperature)
        else:
            replies = thinking.answer_all(policy, requests, seed=derive_seed(seed, thinking.task_stream), temperature=temperature)
    with timing.measure("env"):
        samples, results = [], []
        for group, (task_env, messages, info) in enumerate(drawn):
            rewards = []
            choices = hooks.answer_space(info)
            scored: dict[str, float] = {}  # the group's answers share a prompt: each text is scored once

            def score(text: str) -> float:
                if text not in scored:
                    scored[text] = float(copy.deepcopy(task_env).step(text)[1])
                return scored[text]

            for member, reply in enumerate(replies[group * group_size:(group + 1) * group_size]):
                answer_env = copy.deepcopy(task_env)
                _, reward, _, _, step_info = answer_env.step(reply.text)
                rewards.append(float(reward))
                scored[reply.text] = float(reward)
                reply_samples = reply.samples(
                    env_id,
                    0,
                    group,
                    name=f"{env_id}/{group}/{member}",
                    reward=float(reward),
                    invalid=step_info.get("answer", "") is None,  # no answer could be read
                    info={"messages": messages},
                    answer_info={"choices": choices} if choices else {},
                )
                if credit == "counterfactual":
                    for sample, gap in zip(reply_samples, counterfactual_gaps(reply, float(reward), score)):
                        sample.info[PART_GAP_KEY] = gap
                samples += reply_samples
            results.append(TaskResult(env_id, group, rewards, dict(info)))
    timing.rounds = max((reply.rounds for reply in replies), default=0)
    return samples, results, timing
