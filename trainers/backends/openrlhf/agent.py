"""The agent for OpenRLHF's `--train.agent_func_path` (openrlhf 0.11.2): our envs on its vLLM engines.

OpenRLHF calls `AgentExecutor().execute(prompt, label, sampling_params, max_length,
hf_tokenizer, llm_engine)` `n_samples_per_prompt` times per dataset row, concurrently on
one vLLM engine actor, and turns each call's return value into ONE training sample whose
scalar reward sits on its last action token. `llm_engine.generate(token_ids,
sampling_params)` is the engine's token-level generation (a vLLM `RequestOutput`).

How a self-play game becomes samples (docs/openrlhf.md has the picture):

* A game row (see `trainers.backends.openrlhf.tasks`) is played as `n / players` games. The `n`
  executions of the row claim (game copy, seat) pairs in arrival order, so each copy has
  one execution per seat and every seat of every game is played by the policy.
* The seats of a copy share one env; each execution waits (an asyncio condition) until
  its seat is to move, generates its turn on the same engine, plays it, and wakes the
  others. Turns interleave exactly as in a local game.
* Each execution returns its seat's trajectory as one multi-turn sample: the seat's first
  prompt (the env's turn prompt under the tokenizer's chat template), its answer, then for
  each later turn the env's new turn prompt as the next user message, its answer, ...
  `action_ranges` mark the answers, so only the seat's own tokens are trained on; the
  other seat's moves reach it only through its next observation, as in a local game.
* The sample's reward is the seat's return in that game (every turn of the seat gets the
  same return, gamma = 1), and `extra_logs` carries `role` (the seat) and `copy`, which
  OpenRLHF copies into `Experience.info`: the RAE estimator
  (`trainers.backends.openrlhf.rae`) keys its baselines by (env, role) from there and the label.

Every turn stops at the chat template's end-of-turn token as well as at the model's eos
(`stop_token_ids`): OpenRLHF's sampling params stop at eos only, and for a model whose
eos is not its end-of-turn token (a base model's `<|endoftext|>` beside `<|im_end|>`) a
turn would run on past its answer.

A seat whose context (`max_length`, OpenRLHF's `--data.max_len`, which the launcher sizes
for the longest game) has no room for another turn's budget ends the game as a context
truncation, not a forfeit: no seat is scored on it (reward 0, `context_truncated` 1 in
`extra_logs`, which the RAE estimator reads as "no decision": advantage 0, baselines
untouched), so the context limit never decides a game. A seat that never
moved (the other seat forfeited first) still owes OpenRLHF a sample: it answers a closing
message ("the game ended before your first move") with one sampled token, and its
`turns` is 0, which the RAE estimator reads as "no decision": advantage 0, baseline
untouched (a local rollout has no sample for such a seat).

A task row (SAT) is one instance answered once per execution (a GRPO group of `n`).

Markovian thinking (Delethink) does not fit this interface: its chunks reset the
context, so they cannot be one token sequence of one sample, and one execute() returns
exactly one sample (the launcher refuses thinking=markovian; docs/openrlhf.md says what
it would take).
"""

from __future__ import annotations

import asyncio
from copy import deepcopy
from dataclasses import dataclass, field

from openrlhf.utils.agent import AgentExecutorBase

import envs
from envs.game_env import agent_name
from trainers.generation import default_stop_token_ids
from trainers.backends.openrlhf.tasks import Row

SEAT_WAIT_S = 1800.0
"""How long a seat waits for the others to move before the game is declared broken."""
_SENTINEL = "\u2063SELFPLAY_ANSWER\u2063"
NO_TURN_MESSAGE = "The game ended before your first move; nothing is left to play."


@dataclass
class Trajectory:
    """One seat's token sequence: prompts and answers, with the answers' spans and log-probs."""

    tokens: list[int] = field(default_factory=list)
    action_ranges: list[tuple[int, int]] = field(default_factory=list)
    logprobs: list[float] | None = None
    turns: int = 0
    truncated: bool = False

    def append_observation(self, ids: list[int]) -> None:
        self.tokens += ids
        if self.logprobs is not None:
            self.logprobs += [0.0] * len(ids)

    def append_action(self, output) -> None:
        ids = list(output.token_ids)
        self.action_ranges.append((len(self.tokens), len(self.tokens) + len(ids)))
        self.tokens += ids
        if self.logprobs is not None:
            self.logprobs += [entry[token].logprob for entry, token in zip(output.logprobs, ids)]
        self.turns += 1
        self.truncated = output.finish_reason == "length"


def turn_params(sampling_params, tokenizer, max_tokens: int):
    """OpenRLHF's sampling params for one turn: `max_tokens` of budget, stopping at the end of turn."""
    params = deepcopy(sampling_params)
    params.max_tokens = max_tokens
    params.stop_token_ids = sorted(set(getattr(params, "stop_token_ids", None) or ()) | set(default_stop_token_ids(None, tokenizer)))
    return params


def first_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The first turn: the chat template with the assistant's generation prompt (our token layout)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def next_prompt_ids(tokenizer, user_text: str, last_action_ids: list[int]) -> list[int]:
    """What follows an answer in the chat format: end of the assistant turn, the new user
    message, and the next generation prompt, whatever the chat template.

    The template is rendered around a placeholder answer and cut after it. When the answer
    already ended with the template's end-of-turn token (the engine stopped on it), that
    token is not repeated.
    """
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "."}, {"role": "assistant", "content": _SENTINEL}, {"role": "user", "content": user_text}],
        add_generation_prompt=True,
        tokenize=False,
    )
    after = rendered.split(_SENTINEL, 1)[1]
    if last_action_ids:
        last = tokenizer.decode(last_action_ids[-1:], skip_special_tokens=False)
        if last and after.startswith(last):
            after = after[len(last):]
    return tokenizer(after, add_special_tokens=False)["input_ids"]


class SharedGame:
    """One game whose seats are played by concurrent executions on the same engine."""

    def __init__(self, row: Row, copy: int):
        self.row = row
        self.copy = copy
        self.env = envs.make(row.env, **row.env_args)
        self.env.reset(seed=row.copy_seed(copy))
        self.changed = asyncio.Condition()
        self.seats_done = 0
        self.context_truncated = False

    def is_over(self) -> bool:
        return self.context_truncated or self.env.is_over()

    def returns(self) -> list[float]:
        """The env's returns; nobody's when the context cut the game."""
        if self.context_truncated:
            return [0.0] * self.row.players
        return [float(r) for r in self.env.episode_returns()]

    def _my_turn_or_over(self, seat: int) -> bool:
        return self.is_over() or self.env.current_player() == seat

    async def play_seat(self, seat: int, *, tokenizer, engine, sampling_params, max_length: int) -> Trajectory:
        with_logprobs = getattr(sampling_params, "logprobs", None) is not None
        trajectory = Trajectory(logprobs=[] if with_logprobs else None)
        last_action: list[int] = []
        while True:
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait_for(lambda: self._my_turn_or_over(seat)), SEAT_WAIT_S)
                except asyncio.TimeoutError:
                    raise RuntimeError(
                        f"seat {seat} of {self.row.env} row {self.row.row} (copy {self.copy}) waited {SEAT_WAIT_S:.0f} s "
                        f"for another seat: --rollout.n_samples_per_prompt must be a multiple of {self.row.players}, "
                        f"the number of players, so that every seat of every game is played"
                    ) from None
            if self.is_over():
                return trajectory
            messages = self.env.turn_prompt().messages()
            if trajectory.tokens:
                prompt_ids = next_prompt_ids(tokenizer, messages[-1]["content"], last_action)
            else:
                prompt_ids = first_prompt_ids(tokenizer, messages)
                if len(prompt_ids) >= max_length:
                    raise ValueError(
                        f"the first prompt of {self.row.env} takes {len(prompt_ids)} tokens; --data.max_len "
                        f"({max_length}) leaves no room to answer"
                    )
            if len(trajectory.tokens) + len(prompt_ids) + self.row.max_new_tokens > max_length:
                async with self.changed:  # no room for a whole turn: the context, not the game, ends it
                    self.context_truncated = True
                    self.changed.notify_all()
                return trajectory
            trajectory.append_observation(prompt_ids)
            output = (await engine.generate(trajectory.tokens, turn_params(sampling_params, tokenizer, self.row.max_new_tokens))).outputs[0]
            trajectory.append_action(output)
            last_action = list(output.token_ids)
            text = tokenizer.decode(last_action, skip_special_tokens=True)
            async with self.changed:
                self.env.step(text)
                self.changed.notify_all()


class _RowState:
    """The executions of one dataset row seen by this engine: claims so far, games in play."""

    def __init__(self, row: Row):
        self.row = row
        self.claims = 0
        self.games: dict[int, SharedGame] = {}


class AgentExecutor(AgentExecutorBase):
    """Games by self-play (one sample per seat per game) and SAT tasks; see the module docstring."""

    def __init__(self):
        self.rows: dict[str, _RowState] = {}

    async def execute(self, prompt, label, sampling_params, max_length: int, hf_tokenizer, llm_engine, images=None):
        row = Row.from_label(label)
        if row.kind == "task":
            trajectory, reward, logs = await self._answer_task(row, hf_tokenizer, llm_engine, sampling_params, max_length)
        else:
            trajectory, reward, logs = await self._play_game(row, label, hf_tokenizer, llm_engine, sampling_params, max_length)
        return {
            "prompt": prompt,
            "label": label,
            "images": images,
            "mm_train_inputs": None,
            "reward": reward,
            "scores": reward,
            "observation_tokens": trajectory.tokens,
            "action_ranges": trajectory.action_ranges,
            "rollout_log_probs": trajectory.logprobs,
            "truncated": trajectory.truncated,
            # The same keys for every sample: OpenRLHF batches them into Experience.info.
            "extra_logs": {"role": logs["role"], "copy": logs["copy"], "turns": trajectory.turns, "invalid": logs["invalid"],
                           "game": logs["game"], "context_truncated": logs["context_truncated"]},
        }

    async def _play_game(self, row: Row, label: str, tokenizer, engine, sampling_params, max_length: int):
        state = self.rows.setdefault(label, _RowState(row))
        copy, seat = divmod(state.claims, row.players)
        state.claims += 1
        game = state.games.get(copy)
        if game is None:
            game = state.games[copy] = SharedGame(row, copy)
        try:
            trajectory = await game.play_seat(seat, tokenizer=tokenizer, engine=engine, sampling_params=sampling_params, max_length=max_length)
        finally:
            game.seats_done += 1
            if game.seats_done == row.players:
                del state.games[copy]
        if trajectory.turns == 0:
            await _closing_turn(trajectory, tokenizer, engine, sampling_params)
        invalid = game.env.infos[agent_name(seat)]["invalid_actions"]
        logs = {"role": seat, "copy": copy, "invalid": invalid, "game": 1, "context_truncated": int(game.context_truncated)}
        return trajectory, game.returns()[seat], logs

    async def _answer_task(self, row: Row, tokenizer, engine, sampling_params, max_length: int):
        instance, score = _task(row)
        from envs.sat import prompt_messages

        trajectory = Trajectory(logprobs=[] if getattr(sampling_params, "logprobs", None) is not None else None)
        prompt_ids = first_prompt_ids(tokenizer, prompt_messages(instance, **row.env_args))
        budget = min(row.max_new_tokens, max_length - len(prompt_ids))
        if budget <= 0:
            raise ValueError(f"the {row.env} prompt of row {row.row} takes {len(prompt_ids)} tokens; --data.max_len ({max_length}) leaves no room to answer")
        trajectory.append_observation(prompt_ids)
        output = (await engine.generate(prompt_ids, turn_params(sampling_params, tokenizer, budget))).outputs[0]
        trajectory.append_action(output)
        reward, info = score(instance, tokenizer.decode(list(output.token_ids), skip_special_tokens=True))
        return trajectory, float(reward), {"role": 0, "copy": 0, "invalid": int(info["answer"] is None), "game": 0, "context_truncated": 0}


async def _closing_turn(trajectory: Trajectory, tokenizer, engine, sampling_params) -> None:
    """A one-token answer to `NO_TURN_MESSAGE` for a seat that never moved (its `turns` stays 0)."""
    trajectory.append_observation(first_prompt_ids(tokenizer, [{"role": "user", "content": NO_TURN_MESSAGE}]))
    output = (await engine.generate(trajectory.tokens, turn_params(sampling_params, tokenizer, 1))).outputs[0]
    trajectory.append_action(output)
    trajectory.turns = 0


def _task(row: Row):
    """The task instance a row names and its scorer (SAT is the one task env so far)."""
    if row.env != "sat":
        raise ValueError(f"task env {row.env!r} has no OpenRLHF adapter; available: sat")
    from curricula.sat import SatInstance, text_to_clauses
    from envs.sat import score_answer

    n, k, l = row.level
    instance = SatInstance(n, k, l, text_to_clauses(row.formula), solution=None, num_solutions=0, num_solutions_capped=False)
    return instance, score_answer
