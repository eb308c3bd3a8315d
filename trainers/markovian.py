"""Training in Markovian thinking (Delethink): rollouts of chunked traces, credit per trace.

Rollouts mirror ``trainers.rollout``: `run_markovian_tasks` draws the same task instances as
``run_tasks`` (same seed streams) and answers each with `group_size` Markovian traces;
`play_markovian_games` plays games whose learner turns (think mode) are traces. All live
traces advance together, one backend call per round with traces at mixed chunk indices
(``trainers.generation.markovian``).

Credit, as in the Delethink paper ("The Markovian Thinker", 2025):

* advantages are computed once per trace (`trace_advantages`): the estimator sees one
  representative sample per trace (GRPO over the G traces of a prompt for tasks; the game's
  estimator, e.g. RAE, over turns for games), so a trace that used more chunks does not
  weigh more in a group's mean and std;
* every chunk becomes its own ``TurnSample`` (prompt ids = the chunk's prompt, query plus
  carried tokens; response ids = the chunk's generation; old log-probs = its sampling
  log-probs) carrying its trace's advantage;
* each chunk's loss is normalised by its whole trace's token count T: the sample carries
  ``loss_tokens = T``. Over the chunks c of a trace, with l_t the clipped-surrogate token loss,

      sum_c (1 / T) sum_{t in c} l_t  =  (1 / T) sum_{t in trace} l_t,

  which is the trace's token-mean loss, as if it had been one sequence.

A learner that does not read ``loss_tokens`` gets the same loss from `fold_loss_tokens`: the
clipped surrogate is positively homogeneous in the advantage (``min(r * cA, clip(r) * cA) =
c * min(r * A, clip(r) * A)`` for c > 0), so dividing a sample's summed loss by T instead of
by D (what the learner divides by: the sample's own length n under ``token_mean``, the
constant W under ``constant``) is exactly scaling its advantage by ``c = D / T``.

Metrics (`markovian_metrics`, per env): chunks per trace, thinking tokens per trace, cap-hit
rate, finished rate and the largest context any chunk held.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

from envs.game_env import agent_name
from envs.markovian import MarkovianConfig, MarkovianTrace, query_of, score_trace
from trainers import seeds
from trainers.advantages import AdvantageState, compute_advantages
from trainers.generation.markovian import generate_chunks, run_traces, token_codec
from trainers.policy import LanguagePolicy
from trainers.rollout import (
    GameResult,
    GameSetup,
    RolloutTiming,
    TaskResult,
    _advance_to_model_turns,
    _answer_opponent_turns,
    _collect,
    _start_games,
    answer_space,
)
from trainers.samples import TurnSample
from trainers.seeds import derive_seed

MARKOVIAN_TASK_SAMPLING = "markovian_task_sampling"
"""Seed stream of the traces' sampling in task rollouts."""
MARKOVIAN_ROLLOUT = "markovian_rollout"
"""Seed stream of the learner's chunks in game rollouts."""

TRACE_KEY = "trace"
"""``sample.info[TRACE_KEY]`` names the trace a chunk sample belongs to."""


def markovian_config(config) -> MarkovianConfig:
    """The Markovian settings of a ``TrainConfig`` (keys ``chunk``, ``carry``, ``head``, ``max_chunks``)."""
    defaults = MarkovianConfig()
    return MarkovianConfig(
        getattr(config, "chunk", defaults.chunk),
        getattr(config, "carry", defaults.carry),
        getattr(config, "head", defaults.head),
        getattr(config, "max_chunks", defaults.max_chunks),
    ).validate()


# -- samples ------------------------------------------------------------------------------


def chunk_samples(trace: MarkovianTrace, trace_name: str, env_id: str, role: int, game_id: int, **fields) -> list[TurnSample]:
    """One ``TurnSample`` per chunk of `trace`, each with ``loss_tokens`` = the trace's length.

    ``info`` of every chunk: the trace name, the chunk index and the trace statistics;
    ``last_info`` (a field) goes only on the last chunk (the answer, e.g. the format phase's
    legal answers), so each trace is counted once by anything that reads it.
    """
    info = fields.pop("info", {})
    last_info = fields.pop("last_info", {})
    stats = trace.stats()
    samples = []
    for chunk in trace.chunks:
        if chunk.logprobs is None:
            raise ValueError("a chunk without sampling log-probs cannot be trained on")
        is_last = chunk.index == len(trace.chunks) - 1
        samples.append(
            TurnSample(
                prompt_ids=list(chunk.prompt_ids),
                response_ids=list(chunk.token_ids),
                old_logprobs=list(chunk.logprobs),
                env_id=env_id,
                role=role,
                game_id=game_id,
                loss_tokens=trace.thinking_tokens,
                info={
                    TRACE_KEY: trace_name,
                    "chunk_index": chunk.index,
                    **{f"trace_{k}": v for k, v in stats.items()},
                    **info,
                    **(last_info if is_last else {}),
                },
                **fields,
            )
        )
    return samples


# -- task rollouts ------------------------------------------------------------------------


def run_markovian_tasks(
    env_id: str,
    env,
    policy: LanguagePolicy,
    *,
    prompts: int,
    group_size: int,
    seed: int,
    config: MarkovianConfig,
    temperature: float | None = None,
) -> tuple[list[TurnSample], list[TaskResult], RolloutTiming]:
    """`prompts` task instances, `group_size` Markovian traces each; all traces advance together.

    The instances are those ``trainers.rollout.run_tasks`` draws with the same `seed`. Every
    chunk is a sample whose ``game_id`` is its GRPO group (the prompt) and whose reward is its
    trace's; ``TaskResult.rewards`` has one reward per trace.
    """
    timing = RolloutTiming()
    codec = token_codec(policy.tokenizer)
    temperature = policy.temperature if temperature is None else temperature
    with timing.measure("env"):
        drawn = []
        for group in range(prompts):
            observation, info = env.reset(seed=derive_seed(seed, seeds.TASK, group))
            drawn.append((copy.deepcopy(env), query_of(env, observation), info))
        traces = [
            MarkovianTrace.for_prompt(messages, codec, config) for _, messages, _ in drawn for _ in range(group_size)
        ]
    with timing.measure("generation"):
        timing.rounds = run_traces(
            policy.backend, traces, seed=derive_seed(seed, MARKOVIAN_TASK_SAMPLING),
            temperature=temperature, top_p=policy.top_p, batch_size=policy.batch_size,
        )
    with timing.measure("env"):
        samples, results = [], []
        for group, (task_env, messages, info) in enumerate(drawn):
            rewards = []
            for member in range(group_size):
                trace = traces[group * group_size + member]
                reward, step_info = score_trace(copy.deepcopy(task_env), trace)
                rewards.append(reward)
                samples += chunk_samples(
                    trace, f"{env_id}/{group}/{member}", env_id, 0, group,
                    reward=reward,
                    invalid=step_info.get("answer", "") is None,
                    info={"messages": messages},
                    last_info={"text": trace.text(), **answer_space(info)},
                )
            results.append(TaskResult(env_id, group, rewards, dict(info)))
    return samples, results, timing


def markovian_answers(
    policy: LanguagePolicy,
    prompts: Sequence[Any],
    *,
    config: MarkovianConfig,
    seed: int,
    temperature: float | None = None,
) -> list[MarkovianTrace]:
    """One finished (or capped) trace per prompt, for evaluation: score ``trace.answer_text()``."""
    traces = [MarkovianTrace.for_prompt(p, token_codec(policy.tokenizer), config) for p in prompts]
    run_traces(
        policy.backend, traces, seed=seed,
        temperature=policy.temperature if temperature is None else temperature,
        top_p=policy.top_p, batch_size=policy.batch_size,
    )
    return traces


# -- game rollouts ------------------------------------------------------------------------


def play_markovian_games(
    setups: list[GameSetup],
    policy: LanguagePolicy,
    *,
    seed: int,
    config: MarkovianConfig,
    opponent=None,
    temperature: float | None = None,
) -> tuple[list[TurnSample], list[GameResult], RolloutTiming]:
    """``trainers.rollout.play_games`` with every learner turn thought through as a Markovian trace.

    Each round: fixed opponents move; frozen model opponents answer (plain, batched); every
    game whose learner is to move and has no trace yet starts one over the turn's prompt;
    then ONE backend call gives every open trace its next chunk (traces of different games
    are at different chunk indices); a trace that is over is played as the turn's answer
    (``trace.answer_text()``, parsed by the env under its invalid-action policy). Every chunk
    is a sample; rewards are filled in at the end as in ``play_games``.
    """
    timing = RolloutTiming()
    codec = token_codec(policy.tokenizer)
    temperature = policy.temperature if temperature is None else temperature
    rng = random.Random(seed)
    with timing.measure("env"):
        opponents = _start_games(setups, opponent)
    samples_per_game: list[list[TurnSample]] = [[] for _ in setups]
    open_traces: dict[int, tuple[MarkovianTrace, Any, int, str]] = {}
    turns = [0] * len(setups)
    live = list(range(len(setups)))
    while live:
        with timing.measure("env"):
            learner_turns, model_turns = _advance_to_model_turns(setups, opponents, live, rng)
        live = learner_turns + [i for group in model_turns.values() for i in group]
        for group in model_turns.values():
            _answer_opponent_turns(setups, opponents[group[0]], group, seed, temperature, timing)
        if learner_turns:
            with timing.measure("env"):
                for index in learner_turns:
                    if index not in open_traces:
                        env = setups[index].env
                        prompt = env.turn_prompt()
                        player = env.current_player()
                        trace = MarkovianTrace.for_prompt(prompt, codec, config)
                        open_traces[index] = (trace, prompt, player, env.state.information_state_string(player))
            with timing.measure("generation"):
                generate_chunks(
                    policy.backend, [open_traces[i][0] for i in learner_turns],
                    seed=derive_seed(seed, MARKOVIAN_ROLLOUT, timing.rounds),
                    temperature=temperature, top_p=policy.top_p, batch_size=policy.batch_size,
                )
            with timing.measure("env"):
                for index in learner_turns:
                    trace, prompt, player, state_key = open_traces[index]
                    if not trace.done:
                        continue
                    del open_traces[index]
                    setup = setups[index]
                    agent = agent_name(player)
                    invalid_before = setup.env.infos[agent]["invalid_actions"]
                    setup.env.step(trace.answer_text())
                    samples_per_game[index] += chunk_samples(
                        trace, f"{setup.env_id}/{setup.game_id}/{turns[index]}", setup.env_id, player, setup.game_id,
                        invalid=setup.env.infos[agent]["invalid_actions"] > invalid_before,
                        info={"state_key": state_key, "messages": prompt.messages()},
                        last_info={"text": trace.text(), "choices": prompt.choices},
                    )
                    turns[index] += 1
        timing.rounds += 1
    with timing.measure("env"):
        samples, results = _collect(setups, samples_per_game)
    return samples, results, timing


# -- credit -------------------------------------------------------------------------------


def trace_advantages(
    samples: list[TurnSample],
    method: str,
    state: AdvantageState | None = None,
    *,
    adjust: Callable[[list[TurnSample]], Any] | None = None,
) -> list[TurnSample]:
    """``compute_advantages`` once per trace; every chunk of a trace gets its trace's advantage.

    The estimator sees one sample per trace (its first chunk); a sample without
    ``info[TRACE_KEY]`` is a trace of its own, so plain samples get exactly what
    ``compute_advantages`` gives them. `adjust` (e.g. ``advantages.equalize_state_weights``)
    rescales the per-trace advantages before they are handed to the chunks, so it too counts
    traces, not chunks. Sets ``advantage`` in place and returns `samples`.
    """
    traces: dict[Any, list[TurnSample]] = {}
    for position, sample in enumerate(samples):
        traces.setdefault(sample.info.get(TRACE_KEY, ("sample", position)), []).append(sample)
    representatives = [chunks[0] for chunks in traces.values()]
    compute_advantages(representatives, method, state)
    if adjust is not None:
        adjust(representatives)
    for chunks in traces.values():
        for sample in chunks[1:]:
            sample.advantage = chunks[0].advantage
    return samples


def fold_loss_tokens(samples: Sequence[TurnSample], *, length_norm: str, width: int | None) -> list[TurnSample]:
    """Copies of `samples` whose ``loss_tokens`` is folded into the advantage (for a learner that ignores it).

    ``advantage *= D / loss_tokens`` with D = the sample's response length (``token_mean``)
    or `width`, the learner's constant (``constant``: ``TrainConfig.loss_length_constant()``);
    ``loss_tokens`` is then cleared. Samples without ``loss_tokens`` are returned unchanged.
    """
    if length_norm not in ("constant", "token_mean"):
        raise ValueError(f"unknown length_norm {length_norm!r}; choose constant or token_mean")
    folded = []
    for sample in samples:
        if sample.loss_tokens is None:
            folded.append(sample)
            continue
        if length_norm == "token_mean":
            divisor = max(1, len(sample.response_ids))
        elif width is None:
            raise ValueError("length_norm=constant needs the learner's width to fold loss_tokens")
        else:
            divisor = width
        scale = divisor / max(1, sample.loss_tokens)
        folded.append(dataclasses.replace(sample, advantage=sample.advantage * scale, loss_tokens=None))
    return folded


# -- metrics ------------------------------------------------------------------------------


def markovian_metrics(samples: Sequence[TurnSample]) -> dict[str, float]:
    """Per env: ``markovian/<env>/chunks_per_trace``, ``thinking_tokens_per_trace``, ``cap_hit_rate``,
    ``finished_rate``, ``largest_context`` (the maximum) and ``traces``; from the chunk samples."""
    per_env: dict[str, dict[Any, dict]] = {}
    for sample in samples:
        if TRACE_KEY in sample.info:
            per_env.setdefault(sample.env_id, {})[sample.info[TRACE_KEY]] = sample.info
    metrics: dict[str, float] = {}
    for env_id, traces in sorted(per_env.items()):
        infos = list(traces.values())
        count = len(infos)
        prefix = f"markovian/{env_id}"
        metrics[f"{prefix}/traces"] = float(count)
        metrics[f"{prefix}/chunks_per_trace"] = sum(i["trace_chunks"] for i in infos) / count
        metrics[f"{prefix}/thinking_tokens_per_trace"] = sum(i["trace_thinking_tokens"] for i in infos) / count
        metrics[f"{prefix}/cap_hit_rate"] = sum(bool(i["trace_cap_hit"]) for i in infos) / count
        metrics[f"{prefix}/finished_rate"] = sum(bool(i["trace_finished"]) for i in infos) / count
        metrics[f"{prefix}/largest_context"] = float(max(i["trace_largest_context"] for i in infos))
    return metrics
