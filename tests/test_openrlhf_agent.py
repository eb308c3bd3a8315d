"""The OpenRLHF agent file (trainers.backends.openrlhf.agent) on the real `openrlhf.utils.agent` base class,
driven through complete games by a real local engine (tiny-random behind the engine
interface of OpenRLHF 0.11.2's vLLM actor: `await llm_engine.generate(token_ids, params)`).

OpenRLHF's `generate_responses` runs `n_samples_per_prompt` executions of a row
concurrently on one engine; `play` does the same for several rows at once.
"""

from __future__ import annotations

import asyncio
import copy

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
agent_base = pytest.importorskip("openrlhf.utils.agent")

import torch
from openrlhf.trainer.ppo_utils import Experience

import envs
from envs.sat import prompt_messages, score_answer
from trainers.learning.advantages import RoleBaselines
from trainers.models import load_model
from trainers.backends.openrlhf.agent import NO_TURN_MESSAGE, AgentExecutor, first_prompt_ids, next_prompt_ids
from trainers.backends.openrlhf.rae import rae_advantages_and_returns
from trainers.backends.openrlhf.tasks import Row
from trainers.run.seeds import derive_seed
from cluster_standins.local_engine import LocalEngine, SamplingParams, to_experience  # tests/ is on sys.path

# Invalid answers cost 0.5 and a random legal move is played for the offender, so even a
# random model's games run to their natural end, several turns per seat.
FALLBACK = {"ends_game": False, "offender_reward": -0.5}
MAX_LEN = 8192


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_model("tiny-random", seed=0)


def game_row(row: int, env_id: str, *, policy="forfeit", max_new_tokens=12, **env_kwargs) -> Row:
    env_args = {"mode": "direct", "invalid_action_policy": policy, "turn_limit": 50, **env_kwargs}
    return Row("game", env_id, row, max_new_tokens, seed=derive_seed(7, "game", 0, row), players=2, env_args=env_args)


def play(tiny, rows, n, *, max_length=MAX_LEN, logprobs=1, seed=0):
    model, tokenizer = tiny
    engine = LocalEngine(model, tokenizer, seed=seed)
    executor = AgentExecutor()
    params = SamplingParams(temperature=1.0, logprobs=logprobs)

    async def generate_responses():
        calls = [executor.execute(r.describe(), r.to_label(), params, max_length, tokenizer, engine) for r in rows for _ in range(n)]
        return await asyncio.gather(*calls)

    return asyncio.run(generate_responses()), engine


def answers(response, tokenizer) -> list[str]:
    return [tokenizer.decode(response["observation_tokens"][a:b], skip_special_tokens=True) for a, b in response["action_ranges"]]


def test_every_seat_of_every_game_is_one_sample_and_replays_to_its_return(tiny):
    _, tokenizer = tiny
    rows = [game_row(i, "tic_tac_toe", policy=FALLBACK) for i in range(3)]
    rows += [game_row(3 + i, "kuhn_poker", policy=FALLBACK, hands=2) for i in range(2)]
    responses, engine = play(tiny, rows, n=4)  # n = 4: two games per row

    games: dict[tuple, dict] = {}
    for response in responses:
        logs = response["extra_logs"]
        assert set(logs) == {"role", "copy", "turns", "invalid", "game", "context_truncated"}  # same keys: OpenRLHF batches them
        row = Row.from_label(response["label"])
        seats = games.setdefault((row.row, logs["copy"]), {})
        assert logs["role"] not in seats
        seats[logs["role"]] = response
    assert sorted(games) == [(r.row, c) for r in rows for c in (0, 1)]
    assert all(sorted(seats) == [0, 1] for seats in games.values())

    turns = 0
    for (row_id, copy), seats in games.items():
        row = rows[row_id]
        env = envs.make(row.env, **row.env_args)
        env.reset(seed=row.copy_seed(copy))
        pending = {seat: answers(seats[seat], tokenizer) for seat in seats}
        starts = {seat: [a for a, _ in seats[seat]["action_ranges"]] for seat in seats}
        seen = {seat: 0 for seat in seats}
        while not env.is_over():
            seat = env.current_player()
            tokens = seats[seat]["observation_tokens"]
            messages = env.turn_prompt().messages()
            start = starts[seat][seen[seat]]
            if seen[seat] == 0:  # the sample opens with the seat's first prompt
                assert tokens[:start] == first_prompt_ids(tokenizer, messages)
            else:  # later turns: the env's new prompt follows the seat's previous answer
                end_previous = seats[seat]["action_ranges"][seen[seat] - 1][1]
                previous = tokens[starts[seat][seen[seat] - 1]:end_previous]
                assert tokens[end_previous:start] == next_prompt_ids(tokenizer, messages[-1]["content"], previous)
            env.step(pending[seat].pop(0))
            seen[seat] += 1
        assert pending == {0: [], 1: []}  # every recorded answer was played, in this order
        for seat, response in seats.items():
            assert response["reward"] == env.episode_returns()[seat]
            assert response["extra_logs"]["turns"] == len(response["action_ranges"]) == seen[seat]
            assert response["extra_logs"]["invalid"] == env.infos[f"player_{seat}"]["invalid_actions"]
            assert len(response["rollout_log_probs"]) == len(response["observation_tokens"])
        turns = max(turns, *seen.values())
    assert turns >= 4  # complete multi-turn games, not single moves
    assert engine.calls == sum(len(r["action_ranges"]) for r in responses)


def test_rollout_log_probs_are_what_training_recomputes(tiny):
    model, tokenizer = tiny
    responses, _ = play(tiny, [game_row(0, "tic_tac_toe", policy=FALLBACK)], n=2)
    for response in responses:
        tokens = torch.tensor([response["observation_tokens"]])
        with torch.no_grad():
            scores = torch.log_softmax(model(input_ids=tokens).logits.float(), dim=-1)[0]
        rollout = response["rollout_log_probs"]
        in_action = [False] * len(tokens[0])
        for a, b in response["action_ranges"]:
            in_action[a:b] = [True] * (b - a)
            for position in range(a, b):  # the token at `position` was predicted at `position - 1`
                expected = float(scores[position - 1, tokens[0, position]])
                assert rollout[position] == pytest.approx(expected, abs=1e-4)
        assert all(value == 0.0 for value, marked in zip(rollout, in_action) if not marked)


def test_forfeits_are_zero_sum_and_a_seat_that_never_moved_carries_no_decision(tiny):
    _, tokenizer = tiny
    responses, _ = play(tiny, [game_row(i, "kuhn_poker") for i in range(4)], n=2, logprobs=None)
    by_game: dict[int, list] = {}
    for response in responses:
        by_game.setdefault(Row.from_label(response["label"]).row, []).append(response)
        assert response["rollout_log_probs"] is None  # OpenRLHF asked for none
    never_moved = 0
    for pair in by_game.values():
        assert sum(r["reward"] for r in pair) == 0  # forfeit keeps Kuhn Poker zero-sum
        for response in pair:
            if response["extra_logs"]["turns"] == 0:
                never_moved += 1
                (a, b), = response["action_ranges"]
                assert b - a == 1  # one sampled token answers the closing message
                assert response["observation_tokens"][:a] == first_prompt_ids(tokenizer, [{"role": "user", "content": NO_TURN_MESSAGE}])
    assert never_moved > 0  # a random model forfeits its first move: the path is exercised


def test_a_seat_out_of_context_ends_the_game_as_a_truncation_that_nobody_is_scored_on(tiny):
    _, tokenizer = tiny
    row = game_row(0, "tic_tac_toe", policy=FALLBACK)
    env = envs.make(row.env, **row.env_args)
    env.reset(seed=row.seed)
    first = len(first_prompt_ids(tokenizer, env.turn_prompt().messages()))
    max_length = first + row.max_new_tokens + 50  # room for one answer, not for a second prompt
    responses, _ = play(tiny, [row], n=2, max_length=max_length)
    for response in responses:
        assert len(response["observation_tokens"]) <= max_length
        assert response["extra_logs"]["turns"] == 1
        assert response["extra_logs"]["context_truncated"] == 1
        assert response["reward"] == 0.0  # not a forfeit: the context, not a move, ended the game
    assert sorted(r["extra_logs"]["role"] for r in responses) == [0, 1]
    baselines = RoleBaselines(0.95)
    batch = Experience.concat_experiences([to_experience(r, MAX_LEN) for r in responses], pad_token_id=0)
    rae_advantages_and_returns([batch], baselines)
    assert baselines.counts == {} and torch.all(batch.advantages == 0)


class RecordingEngine(LocalEngine):
    """LocalEngine that keeps the sampling params of every request."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = []

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        self.requests.append(sampling_params)
        return await super().generate(prompt_token_ids, sampling_params, multi_modal_data)


def test_every_turn_stops_at_the_chat_end_of_turn_even_when_eos_is_another_token(tiny):
    model, tokenizer = tiny
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.eos_token = "<|endoftext|>" if "<|endoftext|>" in tokenizer.get_vocab() else tokenizer.convert_ids_to_tokens(0)
    assert tokenizer.eos_token_id != end_of_turn  # a base model's layout: eos is not the end of a chat turn
    engine = RecordingEngine(model, tokenizer, seed=0)
    row = game_row(0, "kuhn_poker", policy=FALLBACK)
    sat = Row("task", "sat", 1, 16, level=(3, 4, 3), formula="A!B & !AC & BD")

    async def run():
        executor = AgentExecutor()
        params = SamplingParams(temperature=1.0, max_tokens=999)
        return await asyncio.gather(*[executor.execute(r.describe(), r.to_label(), params, MAX_LEN, tokenizer, engine) for r in (row, row, sat)])

    asyncio.run(run())
    assert len(engine.requests) >= 3
    for params in engine.requests:
        assert end_of_turn in params.stop_token_ids and params.max_tokens in (1, 12, 16)  # the turn's budget, not OpenRLHF's


def test_sat_rows_are_answered_n_times_and_scored_by_the_task_scorer(tiny):
    _, tokenizer = tiny
    from curricula.sat import SatInstance, text_to_clauses

    row = Row("task", "sat", 0, 16, level=(3, 4, 3), formula="A!B & !AC & BD")
    responses, _ = play(tiny, [row], n=4)
    instance = SatInstance(3, 4, 3, text_to_clauses(row.formula), None, 0, False)
    assert len(responses) == 4
    for response in responses:
        (text,) = answers(response, tokenizer)
        reward, info = score_answer(instance, text)
        assert response["reward"] == reward
        assert response["extra_logs"] == {"role": 0, "copy": 0, "turns": 1, "invalid": int(info["answer"] is None), "game": 0, "context_truncated": 0}
        assert response["observation_tokens"][:response["action_ranges"][0][0]] == first_prompt_ids(tokenizer, prompt_messages(instance))
    named = Row("task", "sat", 1, 16, env_args={"answer_format": "named", "variable_notes": True}, level=(3, 4, 3), formula=row.formula)
    (response,), _ = play(tiny, [named], n=1)
    asked = prompt_messages(instance, answer_format="named", variable_notes=True)
    assert response["observation_tokens"][:response["action_ranges"][0][0]] == first_prompt_ids(tokenizer, asked)


def test_the_samples_batch_into_openrlhf_experiences_and_get_role_conditioned_advantages(tiny):
    rows = [game_row(i, "tic_tac_toe", policy=FALLBACK) for i in range(2)] + [Row("task", "sat", 2, 8, level=(3, 4, 3), formula="A!B & !AC & BD")]
    responses, _ = play(tiny, rows, n=2)
    singles = [to_experience(r, MAX_LEN) for r in responses]
    batches = [Experience.concat_experiences(singles[i:i + 3], pad_token_id=0) for i in range(0, len(singles), 3)]
    baselines = RoleBaselines(0.95)
    rae_advantages_and_returns(batches, baselines)
    assert sorted(baselines.counts.values()) == [2, 2]  # one update per (game, seat) of the 2 games
    for batch in batches:
        mask = batch.action_mask
        assert batch.advantages.shape == mask.shape
        scalar = batch.info["rae_advantage"]
        for i in range(len(batch.labels)):
            assert torch.all(batch.advantages[i][mask[i]] == scalar[i])  # gamma 1, no KL: A on every answer token
            assert torch.all(batch.advantages[i][~mask[i]] == 0)
