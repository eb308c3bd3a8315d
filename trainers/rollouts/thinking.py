"""How the policy thinks through an answer: a strategy chosen once per run (`thinking_strategy`).

* `PlainThinking`: one generation per answer, capped at ``max_new_tokens`` (or, in choice
  mode, one scored choice).
* `MarkovianThinking` (Delethink, "The Markovian Thinker", 2025): the answer is a trace of
  chunks of at most C tokens; each chunk starts from the query plus ``carry`` carried tokens
  (``envs.markovian``), so thinking costs linear compute and constant memory. All live
  traces advance together, one backend call per round with traces at mixed chunk indices
  (``trainers.generation.traces``).

Every place that asks the policy for answers goes through the run's strategy: game rollouts
and evaluation games (`play_games` opens a `session` and asks it every round), task
rollouts, held-out task evaluation and think-mode policy tables (`answer_all`). So the
policy that is evaluated, rated and kept as ``checkpoints/best`` is the one that was trained.

A strategy's answer is a `Reply`: the text the env parses and the training samples it
makes. A plain reply is one ``TurnSample``; a trace reply is one sample per chunk (prompt
ids = the chunk's prompt, response ids = its generation, old log-probs = its sampling
log-probs), each carrying its trace's name in ``info[TRACE_KEY]`` and the trace's token
count T in ``loss_tokens``. Credit is then per trace (``advantages.trace_advantages``: the
estimator sees one sample per trace, so a trace that used more chunks does not weigh more),
and the learner divides each chunk's summed token loss by T, so over the chunks c of a
trace, with l_t the clipped-surrogate token loss,

    sum_c (1 / T) sum_{t in c} l_t  =  (1 / T) sum_{t in trace} l_t,

the trace's token-mean loss, as if it had been one sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from envs.markovian import MarkovianConfig, MarkovianTrace
from envs.protocol import TurnPrompt
from trainers.run import seeds
from trainers.generation.traces import generate_chunks, run_traces, token_codec
from trainers.rollouts.policy import Decision, LanguagePolicy
from trainers.learning.samples import TRACE_KEY, TurnSample
from trainers.run.seeds import derive_seed

MARKOVIAN_TASK_SAMPLING = "markovian_task_sampling"
"""Seed stream of the traces' sampling in task rollouts."""
MARKOVIAN_ROLLOUT = "markovian_rollout"
"""Seed stream of the learner's chunks in game rollouts."""


# -- replies ------------------------------------------------------------------------------


@dataclass
class PlainReply:
    """One generated (or chosen) answer."""

    decision: Decision
    prompt: Any = None
    cap_hit = None

    @property
    def text(self) -> str:
        return self.decision.text

    @property
    def rounds(self) -> int:
        return 1 if self.decision.parts is None else len(self.decision.parts)

    def samples(self, env_id: str, role: int, game_id: int, **fields) -> list[TurnSample]:
        """One sample, or one per part of a chained choice (`Decision.samples`)."""
        return self.decision.samples(env_id, role, game_id, **fields)


@dataclass
class TraceReply:
    """One Markovian trace, over once ``trace.done``; its answer is the stitched text."""

    trace: MarkovianTrace
    prompt: Any = None

    @property
    def text(self) -> str:
        return self.trace.answer_text()

    @property
    def cap_hit(self) -> bool:
        return self.trace.cap_hit

    @property
    def rounds(self) -> int:
        return len(self.trace.chunks)

    def samples(self, env_id: str, role: int, game_id: int, *, name: str, info=None, answer_info=None, **fields) -> list[TurnSample]:
        """One sample per chunk; `answer_info` goes on the last chunk only (with the trace's text)."""
        return chunk_samples(
            self.trace, name, env_id, role, game_id,
            info=dict(info or {}), last_info={"text": self.trace.text(), **(answer_info or {})}, **fields,
        )


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


# -- strategies ---------------------------------------------------------------------------


class PlainThinking:
    """One policy call answers every pending turn; each answer is one sample."""

    name = "plain"
    task_stream = seeds.TASK_SAMPLING

    def session(self, policy: LanguagePolicy, *, seed: int, temperature: float | None = None) -> "PlainSession":
        return PlainSession(policy, seed, temperature)

    def answer_all(self, policy: LanguagePolicy, prompts: Sequence, *, seed: int, temperature: float | None = None) -> list[PlainReply]:
        """One reply per prompt (a `TurnPrompt` or chat messages), in one policy call."""
        return [PlainReply(d, p) for d, p in zip(policy.act(prompts, seed=seed, temperature=temperature), prompts)]

    def metrics(self, samples: Sequence[TurnSample]) -> dict[str, float]:
        return {}


@dataclass
class PlainSession:
    policy: LanguagePolicy
    seed: int
    temperature: float | None

    def thinking(self, index: int) -> bool:
        """Whether game `index` has an answer in progress (never: a plain answer takes one call)."""
        return False

    def answer(self, turns: list[tuple[int, TurnPrompt]], round_: int) -> list[tuple[int, PlainReply]]:
        decisions = self.policy.act(
            [prompt for _, prompt in turns], seed=derive_seed(self.seed, seeds.ROLLOUT, round_), temperature=self.temperature
        )
        return [(index, PlainReply(decision, prompt)) for (index, prompt), decision in zip(turns, decisions)]


@dataclass
class MarkovianThinking:
    """Every answer is a Markovian trace (the run's ``chunk``, ``carry``, ``head``, ``max_chunks``)."""

    config: MarkovianConfig
    name = "markovian"
    task_stream = MARKOVIAN_TASK_SAMPLING

    def session(self, policy: LanguagePolicy, *, seed: int, temperature: float | None = None) -> "MarkovianSession":
        return MarkovianSession(self, policy, seed, policy.temperature if temperature is None else temperature)

    def new_trace(self, policy: LanguagePolicy, prompt) -> MarkovianTrace:
        return MarkovianTrace.for_prompt(prompt, token_codec(policy.tokenizer), self.config)

    def answer_all(self, policy: LanguagePolicy, prompts: Sequence, *, seed: int, temperature: float | None = None) -> list[TraceReply]:
        """One finished (or capped) trace per prompt; all advance together."""
        replies = [TraceReply(self.new_trace(policy, p), p) for p in prompts]
        run_traces(
            policy.backend, [r.trace for r in replies], seed=seed,
            temperature=policy.temperature if temperature is None else temperature,
            top_p=policy.top_p, batch_size=policy.batch_size,
        )
        return replies

    def metrics(self, samples: Sequence[TurnSample]) -> dict[str, float]:
        return markovian_metrics(samples)


@dataclass
class MarkovianSession:
    """Open traces of a game rollout, keyed by game; one chunk for each of them per round."""

    strategy: MarkovianThinking
    policy: LanguagePolicy
    seed: int
    temperature: float
    open: dict[int, TraceReply] = field(default_factory=dict)

    def thinking(self, index: int) -> bool:
        return index in self.open

    def answer(self, turns: list[tuple[int, TurnPrompt | None]], round_: int) -> list[tuple[int, TraceReply]]:
        """Start a trace for every turn that has none, give every open trace of `turns` its next
        chunk in ONE backend call, and return the traces that are over."""
        for index, prompt in turns:
            if index not in self.open:
                self.open[index] = TraceReply(self.strategy.new_trace(self.policy, prompt), prompt)
        generate_chunks(
            self.policy.backend, [self.open[index].trace for index, _ in turns],
            seed=derive_seed(self.seed, MARKOVIAN_ROLLOUT, round_),
            temperature=self.temperature, top_p=self.policy.top_p, batch_size=self.policy.batch_size,
        )
        return [(index, self.open.pop(index)) for index, _ in turns if self.open[index].trace.done]


PLAIN = PlainThinking()


def markovian_config(config) -> MarkovianConfig:
    """The Markovian settings of a ``TrainConfig`` (keys ``chunk``, ``carry``, ``head``, ``max_chunks``)."""
    return MarkovianConfig(config.chunk, config.carry, config.head, config.max_chunks).validate()


def thinking_strategy(config) -> PlainThinking | MarkovianThinking:
    """The run's strategy, from ``config.thinking``: chosen once, used by every rollout and evaluation."""
    if config.thinking == "markovian":
        return MarkovianThinking(markovian_config(config))
    return PLAIN


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
