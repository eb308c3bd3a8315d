"""Markovian thinking (Delethink): reason in chunks of at most C tokens with a bounded carryover.

A model that thinks for T tokens in one context pays attention over a context that grows
to T: compute is quadratic in T and the KV cache grows with it. Delethink (the paper "The Markovian
Thinker", 2025) cuts the reasoning into chunks. Chunk 1 is generated after the query and
may be C tokens long; when a chunk ends without an end-of-sequence, the context is thrown away
and the next chunk's prompt is rebuilt from

    query  +  head (the first `head` tokens of chunk 1, kept for the whole trace)
           +  tail (the last `carry - head` tokens generated so far)

and the model generates at most C - carry more tokens from there, with a fresh KV cache.
Every chunk therefore sees at most ``len(query) + C`` tokens, so a trace of any length costs
linear compute and constant memory. The trace ends at end-of-sequence (finish reason
"stop") or after `max_chunks` chunks (I): the thinking budget is ``C + (I - 1)(C - carry)``.

Scoring: the chunks' generated tokens are concatenated (the stitched trace; the carried
tokens are prompt, not output, so nothing is repeated) and decoded once, so an answer split
over a chunk boundary still parses; the task's own reward applies. A trace cut at the cap
never finished its answer and gets the task's no-answer outcome: the wrapped task is
answered with the empty text (SAT: -1).

Everything is in tokens of the policy's tokenizer, through a small codec protocol
(`TokenCodec`: encode a prompt, encode text, decode ids, vocabulary size), so this module
depends on no model library; ``trainers.generation.markovian.token_codec(tokenizer)`` builds
one from a Hugging Face tokenizer and `char_codec()` is a library-free stand-in for checks.

Pieces:

* `MarkovianConfig`: C, carry, head, I, with validation;
* `MarkovianTrace`: the token bookkeeping of one trace (next prompt, budget, stitching,
  statistics); a game turn in think mode is a trace over the turn's prompt whose
  `answer_text()` the game env parses like any answer;
* `score_trace`: the task's reward for a trace that is over;
* `MarkovianTaskEnv`: a Gymnasium env over a single-turn text task (SAT) where one step is
  one chunk; `make_markovian(env_id, codec=..., ...)` builds it from the registry;
* `check_markovian(env_id)`: Gymnasium's checker plus fuzzing of chunk sequences.

Defaults (C=512, carry=256, head=64, I=5) scale the paper's 8192 / 4096 / 100 / 5 to a CPU:
carry = C/2 as in the paper; head is an eighth of the carryover (the paper's 100 of 4096 is
too few tokens at this scale to hold a restated problem or plan); C=512 keeps every chunk's
context at ``len(query) + 512`` tokens (about 800 with a SAT prompt, where a decode step of
SmolLM2-135M costs about what it costs at the start of a plain trace), and the budget is
512 + 4 * 256 = 1536 thinking tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import gymnasium
from gymnasium import spaces

FINISH_REASONS = ("stop", "length")
"""Why a chunk ended: an end-of-sequence token ("stop") or its token budget ("length")."""
NO_ANSWER_TEXT = ""
"""What the wrapped task is answered with when a trace hits the cap: it never finished."""
CHAR_VOCAB_SIZE = 0x110000

DEFAULT_CHUNK = 512
DEFAULT_CARRY = 256
DEFAULT_HEAD = 64
DEFAULT_MAX_CHUNKS = 5


# -- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class MarkovianConfig:
    """Chunk size C, carryover m (= head + tail), head, iteration cap I."""

    chunk: int = DEFAULT_CHUNK
    carry: int = DEFAULT_CARRY
    head: int = DEFAULT_HEAD
    max_chunks: int = DEFAULT_MAX_CHUNKS

    def validate(self) -> "MarkovianConfig":
        """Raise ValueError naming the parameter unless 0 <= head <= carry < chunk and max_chunks >= 1."""
        for name in ("chunk", "carry", "head", "max_chunks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.chunk < 1:
            raise ValueError(f"chunk (C) must be >= 1, got {self.chunk}")
        if not 0 <= self.carry < self.chunk:
            raise ValueError(
                f"carry (m) must lie in [0, chunk) so that every later chunk generates at least one "
                f"token; got carry={self.carry}, chunk={self.chunk}"
            )
        if not 0 <= self.head <= self.carry:
            raise ValueError(f"head must lie in [0, carry]; got head={self.head}, carry={self.carry}")
        if self.max_chunks < 1:
            raise ValueError(f"max_chunks (I) must be >= 1, got {self.max_chunks}")
        return self

    @property
    def tail(self) -> int:
        """How many of the last generated tokens are carried: carry - head."""
        return self.carry - self.head

    def budget(self, chunk_index: int) -> int:
        """Tokens chunk `chunk_index` (0-based) may generate: C for the first, C - carry after."""
        return self.chunk if chunk_index == 0 else self.chunk - self.carry

    @property
    def thinking_budget(self) -> int:
        """The longest trace: C + (I - 1)(C - carry) tokens."""
        return self.chunk + (self.max_chunks - 1) * (self.chunk - self.carry)

    def context_bound(self, query_length: int) -> int:
        """The most tokens any chunk holds (prompt plus its generation): len(query) + C."""
        return query_length + self.chunk

    @classmethod
    def for_length(cls, length: int, *, chunk: int = DEFAULT_CHUNK, carry: int = DEFAULT_CARRY, head: int = DEFAULT_HEAD):
        """The config with the fewest chunks whose thinking budget reaches `length` tokens."""
        cls(chunk, carry, head, 1).validate()
        extra = max(0, length - chunk)
        step = chunk - carry
        return cls(chunk, carry, head, 1 + -(-extra // step)).validate()


# -- tokens -------------------------------------------------------------------------------


class TokenCodec(Protocol):
    """What Markovian thinking needs from the policy's tokenizer."""

    vocab_size: int

    def encode_prompt(self, prompt: Any) -> list[int]:
        """Token ids of a query (chat messages or raw text), exactly as the policy sees it."""

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens added)."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids, special tokens (the stop token) left out."""


@dataclass(frozen=True)
class Codec:
    """A `TokenCodec` from plain callables."""

    encode_prompt: Callable[[Any], list[int]]
    encode: Callable[[str], list[int]]
    decode: Callable[[Sequence[int]], str]
    vocab_size: int


def _char_prompt(prompt: Any) -> list[int]:
    if isinstance(prompt, str):
        text = prompt
    else:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant: "
    return [ord(c) for c in text]


def char_codec() -> Codec:
    """One token per Unicode character: a tokenizer-free codec for checks and examples.

    Chat messages render as ``"role: content\\n"`` lines followed by ``"assistant: "``.
    Real runs pass the policy's tokenizer (``trainers.generation.markovian.token_codec``).
    """
    return Codec(
        encode_prompt=_char_prompt,
        encode=lambda text: [ord(c) for c in text],
        decode=lambda ids: "".join(chr(int(i)) for i in ids),
        vocab_size=CHAR_VOCAB_SIZE,
    )


@dataclass(frozen=True)
class Chunk:
    """One chunk as the generator returned it: token ids (a stop token included when
    ``finish_reason == "stop"``), why it ended, and the sampled tokens' log-probs if known."""

    token_ids: tuple[int, ...]
    finish_reason: str
    logprobs: tuple[float, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "token_ids", tuple(int(i) for i in self.token_ids))
        reason = self.finish_reason
        if not isinstance(reason, str):
            try:
                reason = FINISH_REASONS[int(reason)]
            except (TypeError, ValueError, IndexError):
                raise ValueError(f"finish_reason must be one of {FINISH_REASONS} or its index, got {reason!r}") from None
        if reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {reason!r}")
        object.__setattr__(self, "finish_reason", reason)
        if self.logprobs is not None:
            object.__setattr__(self, "logprobs", tuple(float(v) for v in self.logprobs))
            if len(self.logprobs) != len(self.token_ids):
                raise ValueError(f"{len(self.logprobs)} log-probs for {len(self.token_ids)} tokens")


def as_chunk(action: Any, codec: TokenCodec, budget: int) -> Chunk:
    """Read a step's action as a `Chunk`.

    Accepted: a `Chunk`; a mapping with ``token_ids`` and ``finish_reason`` (what the env's
    action space samples; ``finish_reason`` 0 = "stop", 1 = "length"); any record with
    ``response_ids`` and ``finish_reason`` (``trainers.generation.Generation``); or raw text,
    read as a chunk the model ended itself (encoded with the codec; text longer than the
    budget is cut to it and ends by "length").
    """
    if isinstance(action, Chunk):
        return action
    if isinstance(action, str):
        ids = codec.encode(action)
        return Chunk(ids[:budget], "stop" if len(ids) <= budget else "length")
    if isinstance(action, Mapping):
        return Chunk(action["token_ids"], action["finish_reason"], action.get("logprobs"))
    if hasattr(action, "response_ids") and hasattr(action, "finish_reason"):
        return Chunk(action.response_ids, action.finish_reason, getattr(action, "logprobs", None))
    raise TypeError(f"a Markovian step takes a chunk (Chunk, mapping, generation record or text), got {type(action).__name__}")


# -- one trace ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceChunk:
    """One chunk of a trace as it happened: the prompt it was generated from and its output."""

    index: int
    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    finish_reason: str
    logprobs: tuple[float, ...] | None = None

    @property
    def context(self) -> int:
        """Tokens this chunk held: its prompt plus what it generated."""
        return len(self.prompt_ids) + len(self.token_ids)


@dataclass
class MarkovianTrace:
    """The token bookkeeping of one Markovian trace over one query.

    ``prompt_ids()`` is the next chunk's prompt, ``budget()`` its token budget; ``add(chunk)``
    records what was generated. ``generated`` is the stitched trace (every chunk's output in
    order), ``text()`` its decoded text and ``answer_text()`` what the task is answered with
    (the text if the trace finished, else `NO_ANSWER_TEXT`).
    """

    query_ids: tuple[int, ...]
    config: MarkovianConfig
    codec: TokenCodec
    chunks: list[TraceChunk] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.query_ids = tuple(int(i) for i in self.query_ids)
        self.config = self.config.validate()

    @classmethod
    def for_prompt(cls, prompt: Any, codec: TokenCodec, config: MarkovianConfig | None = None) -> "MarkovianTrace":
        """A trace over a query: chat messages, raw text, or anything with ``messages()`` (a game's TurnPrompt)."""
        if hasattr(prompt, "messages"):
            prompt = prompt.messages()
        return cls(tuple(codec.encode_prompt(prompt)), config or MarkovianConfig(), codec)

    # state
    @property
    def finished(self) -> bool:
        """The last chunk ended with an end-of-sequence."""
        return bool(self.chunks) and self.chunks[-1].finish_reason == "stop"

    @property
    def cap_hit(self) -> bool:
        """I chunks were used and the last one was cut by its budget."""
        return not self.finished and len(self.chunks) >= self.config.max_chunks

    @property
    def done(self) -> bool:
        return self.finished or self.cap_hit

    # the next chunk
    def carry_ids(self) -> list[int]:
        """Head (first `head` tokens of chunk 1) + tail (last `carry - head` tokens generated).

        The tail never reaches back into the head, so no token is carried twice.
        """
        if not self.chunks:
            return []
        head = list(self.chunks[0].token_ids[: self.config.head])
        tail_start = max(len(head), len(self.generated) - self.config.tail)
        return head + self.generated[tail_start:]

    def prompt_ids(self) -> list[int]:
        """The next chunk's prompt: query + carried tokens."""
        return list(self.query_ids) + self.carry_ids()

    def budget(self) -> int:
        """Tokens the next chunk may generate."""
        return self.config.budget(len(self.chunks))

    def add(self, chunk: Chunk | Any) -> TraceChunk:
        """Record the next chunk's output; ValueError if the trace is over or the chunk overruns its budget."""
        if self.done:
            raise ValueError("the trace is over (it finished or hit the cap); start a new one")
        chunk = as_chunk(chunk, self.codec, self.budget())
        if len(chunk.token_ids) > self.budget():
            raise ValueError(
                f"chunk {len(self.chunks)} has {len(chunk.token_ids)} tokens but its budget is {self.budget()}"
            )
        record = TraceChunk(len(self.chunks), tuple(self.prompt_ids()), chunk.token_ids, chunk.finish_reason, chunk.logprobs)
        self.chunks.append(record)
        self.generated.extend(chunk.token_ids)
        return record

    # results
    def text(self) -> str:
        """The stitched trace decoded once (an answer split over a boundary reads whole)."""
        return self.codec.decode(self.generated)

    def answer_text(self) -> str:
        """What the task is answered with: the stitched text, or `NO_ANSWER_TEXT` if unfinished."""
        return self.text() if self.finished else NO_ANSWER_TEXT

    @property
    def thinking_tokens(self) -> int:
        return len(self.generated)

    @property
    def largest_context(self) -> int:
        return max((c.context for c in self.chunks), default=len(self.query_ids))

    def stats(self) -> dict[str, Any]:
        """thinking_tokens, chunks, largest_context, cap_hit, finished."""
        return {
            "thinking_tokens": self.thinking_tokens,
            "chunks": len(self.chunks),
            "largest_context": self.largest_context,
            "cap_hit": self.cap_hit,
            "finished": self.finished,
        }


# -- the task env -------------------------------------------------------------------------


def query_of(task_env, observation: str) -> list[dict[str, str]]:
    """The chat messages a single-turn task asks: its ``messages()``, else its observation as one user turn."""
    if hasattr(task_env, "messages"):
        return task_env.messages()
    return [{"role": "user", "content": observation}]


def score_trace(task_env, trace: MarkovianTrace) -> tuple[float, dict[str, Any]]:
    """Answer a reset single-turn task with a trace that is over: ``(reward, info)``.

    The task is stepped with ``trace.answer_text()`` (the stitched text, or `NO_ANSWER_TEXT`
    after the cap), so its own reward applies; info is the task's plus the trace statistics
    and ``trace_text``.
    """
    if not trace.done:
        raise ValueError("score_trace needs a trace that finished or hit the cap")
    _, reward, _, _, task_info = task_env.step(trace.answer_text())
    return float(reward), {**task_info, **trace.stats(), "trace_text": trace.text()}


class MarkovianTaskEnv(gymnasium.Env):
    """A single-turn text task (one answer, one reward) reasoned through in Markovian chunks.

    Observation: ``{"prompt_ids": the next chunk's prompt (query + carried tokens),
    "max_new_tokens": its budget, "chunk_index": how many chunks were generated}``. Action:
    the chunk the model generated from it (see `as_chunk`). Every step but the last returns
    reward 0; the last (end-of-sequence, or the I-th chunk) scores the stitched trace with the
    task's own reward, or answers the task with `NO_ANSWER_TEXT` when the cap was hit.
    ``info`` always carries the trace statistics (``thinking_tokens``, ``chunks``,
    ``largest_context``, ``cap_hit``, ``finished``); the last step adds the task's own info
    and ``trace_text``.
    """

    metadata = {"render_modes": []}

    def __init__(self, task_env: gymnasium.Env, codec: TokenCodec, config: MarkovianConfig | None = None):
        self.task_env = task_env
        self.codec = codec
        self.config = (config or MarkovianConfig()).validate()
        vocab = spaces.Discrete(int(codec.vocab_size))
        self.observation_space = spaces.Dict(
            {
                "prompt_ids": spaces.Sequence(vocab),
                "max_new_tokens": spaces.Discrete(self.config.chunk + 1),
                "chunk_index": spaces.Discrete(self.config.max_chunks + 1),
            }
        )
        self.action_space = spaces.Dict(
            {"token_ids": spaces.Sequence(vocab), "finish_reason": spaces.Discrete(len(FINISH_REASONS))}
        )
        self.trace: MarkovianTrace | None = None
        self._query: list[dict[str, str]] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        observation, info = self.task_env.reset(seed=seed, options=options)
        self._query = query_of(self.task_env, observation)
        self.trace = MarkovianTrace(tuple(self.codec.encode_prompt(self._query)), self.config, self.codec)
        return self._observation(), {**info, **self.trace.stats()}

    def step(self, action):
        trace = self.trace
        if trace is None or trace.done:
            raise RuntimeError("MarkovianTaskEnv.step() called before reset() or after the trace ended")
        trace.add(as_chunk(action, self.codec, trace.budget()))
        if not trace.done:
            return self._observation(), 0.0, False, False, trace.stats()
        reward, info = score_trace(self.task_env, trace)
        return self._observation(), reward, True, False, info

    def messages(self) -> list[dict[str, str]]:
        """The query as chat messages."""
        if self.trace is None:
            raise RuntimeError("MarkovianTaskEnv.messages() called before reset()")
        return copy.deepcopy(self._query)

    def _observation(self) -> dict:
        trace = self.trace
        return {
            "prompt_ids": tuple(trace.prompt_ids()),
            "max_new_tokens": 0 if trace.done else trace.budget(),
            "chunk_index": len(trace.chunks),
        }


def make_markovian(
    env_id: str,
    *,
    codec: TokenCodec,
    chunk: int = DEFAULT_CHUNK,
    carry: int = DEFAULT_CARRY,
    head: int = DEFAULT_HEAD,
    max_chunks: int = DEFAULT_MAX_CHUNKS,
    **env_kwargs,
) -> MarkovianTaskEnv:
    """The registered task `env_id` (built with `env_kwargs`) in Markovian thinking.

    `codec` is the policy's tokenizer as a `TokenCodec` (carryover is counted in its tokens);
    ``trainers.generation.markovian.token_codec(tokenizer)`` makes one, `char_codec()` is a
    stand-in for checks. Game envs take Markovian thinking per turn instead: a
    `MarkovianTrace.for_prompt(env.turn_prompt(), codec, config)` whose ``answer_text()`` is
    the turn's answer (``trainers.markovian.play_markovian_games`` does this).
    """
    from envs.registry import make, spec

    if codec is None:
        raise ValueError(
            "Markovian thinking counts carryover in the policy's tokens: pass codec= "
            "(trainers.generation.markovian.token_codec(tokenizer), or envs.markovian.char_codec() for a check)"
        )
    if spec(env_id).kind != "task":
        raise ValueError(
            f"{env_id!r} is a game env; Markovian thinking applies to each of its think-mode turns: "
            f"MarkovianTrace.for_prompt(env.turn_prompt(), codec, config), then env.step(trace.answer_text())"
        )
    config = MarkovianConfig(chunk, carry, head, max_chunks).validate()
    return MarkovianTaskEnv(make(env_id, **env_kwargs), codec, config)


# -- checker ------------------------------------------------------------------------------

_FUZZ_TEXT = ["\\boxed{", "}", "0", "1", "01011", "\\boxed{10110}", " ", "\n", "{", "\\"]


def check_markovian(env_id: str, *, codec: TokenCodec | None = None, fuzz_examples: int = 60, **make_kwargs):
    """Gymnasium's ``check_env`` on the Markovian form of `env_id`, then fuzzing.

    Fuzzing (hypothesis, derandomised) plays random chunk sequences (random token ids mixed
    with encoded answer fragments, random lengths up to each budget, random finish reasons)
    and asserts: each prompt is the query plus at most `carry` tokens; no chunk holds more
    than ``len(query) + C`` tokens; the trace ends at the first "stop" or after I chunks;
    ``thinking_tokens`` is the sum of chunk lengths; the reward is the plain task's reward
    for the stitched text (finished) or for `NO_ANSWER_TEXT` (cap hit).
    """
    import warnings

    from gymnasium.utils.env_checker import check_env as gym_check_env
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from envs.checker import CheckReport
    from envs.registry import make

    codec = codec or char_codec()
    env = make_markovian(env_id, codec=codec, **make_kwargs)
    config = env.config
    task_kwargs = {k: v for k, v in make_kwargs.items() if k not in ("chunk", "carry", "head", "max_chunks")}
    report = CheckReport(env_id, "task (markovian)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(make_markovian(env_id, codec=codec, **make_kwargs), skip_render_check=True)
    report.passed.append("gymnasium.check_env")
    pieces = [codec.encode(p) for p in _FUZZ_TEXT]
    chunk_strategy = st.tuples(
        st.lists(st.one_of(st.sampled_from(pieces), st.lists(st.integers(0, 127), max_size=4)), max_size=12),
        st.sampled_from(FINISH_REASONS),
        st.booleans(),  # fill the budget exactly
    )

    @settings(max_examples=fuzz_examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2**16), chunks=st.lists(chunk_strategy, min_size=1, max_size=config.max_chunks + 2))
    def chunk_sequences_are_handled(seed, chunks):
        observation, _ = env.reset(seed=seed)
        query_length = len(env.trace.query_ids)
        total, steps, terminated = 0, 0, False
        reward, info = 0.0, {}
        for parts, reason, fill in chunks:
            budget = observation["max_new_tokens"]
            assert len(observation["prompt_ids"]) <= query_length + config.carry
            assert len(observation["prompt_ids"]) + budget <= config.context_bound(query_length)
            ids = [i for part in parts for i in part]
            if fill:
                ids = (ids + [32] * budget)[:budget]
            ids = ids[:budget]
            observation, reward, terminated, truncated, info = env.step({"token_ids": tuple(ids), "finish_reason": reason})
            total += len(ids)
            steps += 1
            assert not truncated
            assert info["thinking_tokens"] == total
            assert info["largest_context"] <= config.context_bound(query_length)
            if reason == "stop" or steps == config.max_chunks:
                assert terminated, "the trace must end at a stop or at the cap"
                break
            assert not terminated and reward == 0.0
        if not terminated:
            return
        assert info["cap_hit"] == (reason == "length")
        plain = make(env_id, **task_kwargs)
        plain.reset(seed=seed)
        expected = info["trace_text"] if reason == "stop" else NO_ANSWER_TEXT
        assert reward == float(plain.step(expected)[1])
        report.fuzz_examples += 1
        if reward > 0:
            report.fuzz_valid += 1
        else:
            report.fuzz_invalid += 1

    chunk_sequences_are_handled()
    report.passed.append("chunk fuzzing")
    return report
