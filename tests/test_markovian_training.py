"""Training in Markovian thinking: chunk samples, credit per trace, loss normalisation, rollouts, CLI."""

import json
from pathlib import Path

import gymnasium
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import envs
from envs.markovian import Chunk, MarkovianConfig, MarkovianTrace, char_codec
from envs.spaces import text_space
from trainers.learning.advantages import AdvantageState
from trainers.generation import TransformersBackend
from trainers.learning.advantages import trace_advantages
from trainers.learning.loss import pad_logprobs, ppo_clipped_loss
from trainers.models import load_model
from trainers.rollouts.policy import LanguagePolicy
from trainers.rollouts.play import GameSetup, play_games, run_tasks
from trainers.learning.samples import TRACE_KEY
from trainers.rollouts.thinking import MarkovianThinking, chunk_samples, markovian_metrics

CODEC = char_codec()
SMALL = MarkovianConfig(chunk=16, carry=8, head=2, max_chunks=3)


def hand_trace(pieces, query="Q>"):
    """A trace built from (text, finish_reason) chunks with made-up log-probs."""
    trace = MarkovianTrace.for_prompt(query, CODEC, SMALL)
    for text, reason in pieces:
        ids = CODEC.encode(text)
        trace.add(Chunk(ids, reason, [-0.1 * (i + 1) for i in range(len(ids))]))
    return trace


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random", seed=0)


def make_policy(tiny, **options):
    model, tokenizer = tiny
    return LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode="think", batch_size=16, **options)


# -- samples and credit -------------------------------------------------------------------


def test_every_chunk_is_a_sample_of_its_trace():
    trace = hand_trace([("a" * 16, "length"), ("b" * 8, "length"), ("cc", "stop")])
    samples = chunk_samples(trace, "t0", "sat", 0, 4, reward=1.0, info={"messages": "m"}, last_info={"text": "x"})
    assert [len(s.response_ids) for s in samples] == [16, 8, 2]
    assert [s.prompt_ids for s in samples] == [list(c.prompt_ids) for c in trace.chunks]
    assert [s.old_logprobs for s in samples] == [list(c.logprobs) for c in trace.chunks]
    assert all(s.loss_tokens == 26 and s.reward == 1.0 and s.game_id == 4 for s in samples)
    assert [s.info["chunk_index"] for s in samples] == [0, 1, 2]
    assert [("text" in s.info) for s in samples] == [False, False, True]
    assert all(s.info[TRACE_KEY] == "t0" and s.info["messages"] == "m" for s in samples)


def test_grpo_sees_one_sample_per_trace_and_every_chunk_carries_it():
    # one group of three traces with 3, 1 and 2 chunks and rewards 1, 0, -1
    plans = [
        [("a" * 16, "length"), ("b" * 8, "length"), ("c", "stop")],
        [("d", "stop")],
        [("e" * 16, "length"), ("f", "stop")],
    ]
    samples = []
    for index, (plan, reward) in enumerate(zip(plans, [1.0, 0.0, -1.0])):
        samples += chunk_samples(hand_trace(plan), f"t{index}", "sat", 0, 0, reward=reward)
    trace_advantages(samples, "grpo")
    # per trace: (R - mean) / std with mean 0 and population std sqrt(2/3)
    expected = {"t0": 1 / (2 / 3) ** 0.5, "t1": 0.0, "t2": -1 / (2 / 3) ** 0.5}
    for sample in samples:
        assert sample.advantage == pytest.approx(expected[sample.info[TRACE_KEY]], rel=1e-5)
    # chunk-level GRPO would have weighed trace 0 three times: a different answer
    assert sum(s.advantage for s in samples) != pytest.approx(0.0)


def test_rae_over_traces_updates_each_baseline_once_per_turn():
    state = AdvantageState.with_alpha(0.5)
    samples = []
    for game, reward in enumerate([1.0, -1.0]):
        trace = hand_trace([("a" * 16, "length"), ("b", "stop")])
        samples += chunk_samples(trace, f"g{game}", "kuhn_poker", 0, game, reward=reward)
    trace_advantages(samples, "rae", state)
    assert [s.advantage for s in samples] == [1.0, 1.0, -1.0 - 0.5, -1.5]
    assert state.role_baselines.counts == {("kuhn_poker", 0): 2}


def test_state_weighting_counts_turns_not_chunks():
    from trainers.learning.advantages import equalize_state_weights

    samples = []
    for game, (chunks, key) in enumerate([(3, "s1"), (1, "s1"), (1, "s2")]):
        plan = [("a" * 16, "length"), ("c" * 8, "length")][: chunks - 1] + [("b", "stop")]
        samples += chunk_samples(hand_trace(plan), f"g{game}", "kuhn_poker", 0, game, reward=1.0, info={"state_key": key})
    trace_advantages(samples, "none", adjust=equalize_state_weights)
    # 3 turns over 2 states: s1's two turns weigh 3 / (2 * 2) each, s2's one turn 3 / 2
    assert [s.advantage for s in samples] == [0.75, 0.75, 0.75, 0.75, 1.5]


@pytest.mark.parametrize("length_norm", ["token_mean", "constant"])
def test_the_loss_of_a_traces_chunks_is_the_trace_normalised_loss(length_norm):
    generator = torch.Generator().manual_seed(0)
    trace = hand_trace([("a" * 16, "length"), ("b" * 8, "length"), ("ccc", "stop")])
    samples = chunk_samples(trace, "t", "sat", 0, 0, reward=1.0)
    assert all(s.loss_tokens == 27 for s in samples)
    old, mask = pad_logprobs([torch.tensor(s.old_logprobs) for s in samples])
    new = old + 0.3 * torch.randn(old.shape, generator=generator)  # ratios inside and outside the clip
    loss, _ = ppo_clipped_loss(
        new, old, torch.full((3,), 0.7), mask, length_norm=length_norm, max_length=32,
        loss_tokens=torch.tensor([float(s.loss_tokens) for s in samples]),
    )
    # the trace as one sequence: sum over all its tokens of the clipped surrogate, divided by T = 27
    ratio = torch.exp(new - old)
    token_loss = -torch.minimum(ratio * 0.7, torch.clamp(ratio, 0.8, 1.2) * 0.7)
    expected = torch.where(mask, token_loss, 0.0).sum() / 27 / len(samples)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_metrics_count_traces_not_chunks():
    samples = chunk_samples(hand_trace([("a" * 16, "length"), ("b" * 8, "length"), ("c" * 8, "length")]), "t0", "sat", 0, 0)
    samples += chunk_samples(hand_trace([("d", "stop")]), "t1", "sat", 0, 0)
    metrics = markovian_metrics(samples)
    assert metrics["markovian/sat/traces"] == 2
    assert metrics["markovian/sat/chunks_per_trace"] == 2.0
    assert metrics["markovian/sat/thinking_tokens_per_trace"] == (32 + 1) / 2
    assert metrics["markovian/sat/cap_hit_rate"] == 0.5
    assert metrics["markovian/sat/largest_context"] == len(CODEC.encode_prompt("Q>")) + 16


# -- rollouts -----------------------------------------------------------------------------


def test_task_rollout_draws_the_plain_instances_and_answers_with_traces(tiny):
    policy = make_policy(tiny, max_new_tokens=4)
    samples, results, timing = run_tasks(
        "sat", envs.make("sat"), policy, prompts=2, group_size=3, seed=7, thinking=MarkovianThinking(SMALL)
    )
    plain, plain_results, _ = run_tasks("sat", envs.make("sat"), policy, prompts=2, group_size=3, seed=7)
    assert [r.info["formula"] for r in results] == [r.info["formula"] for r in plain_results]
    assert [len(r.rewards) for r in results] == [3, 3]
    assert 1 <= timing.rounds <= SMALL.max_chunks
    traces = {}
    for sample in samples:
        traces.setdefault(sample.info[TRACE_KEY], []).append(sample)
    assert len(traces) == 6
    for name, chunks in traces.items():
        group, member = map(int, name.split("/")[1:])
        assert all(s.game_id == group and s.reward == results[group].rewards[member] for s in chunks)
        assert sum(len(s.response_ids) for s in chunks) == chunks[0].loss_tokens
        query = plain[3 * group].prompt_ids
        assert chunks[0].prompt_ids == query  # chunk 1's prompt is the plain query, token for token
        for s in chunks[1:]:
            assert s.prompt_ids[: len(query)] == query and len(s.prompt_ids) <= len(query) + SMALL.carry
        assert all(len(s.old_logprobs) == len(s.response_ids) for s in chunks)


def test_game_rollout_thinks_every_learner_turn_in_chunks(tiny):
    policy = make_policy(tiny, max_new_tokens=4)
    setups = [
        GameSetup("kuhn_poker", envs.make("kuhn_poker", mode="think"), seed, frozenset({0, 1}), seed)
        for seed in range(3)
    ]
    samples, results, timing = play_games(setups, policy, seed=1, thinking=MarkovianThinking(SMALL))
    assert len(results) == 3 and all(sum(r.returns) == 0 for r in results)
    turns = {s.info[TRACE_KEY] for s in samples}
    assert len(turns) == sum(r.turns + sum(r.invalid) for r in results)  # one trace per answer given
    for sample in samples:
        assert sample.reward == results[sample.game_id].returns[sample.role]
        assert sample.info["state_key"]
    trace_advantages(samples, "rae", AdvantageState.with_alpha(0.95))
    by_turn = {}
    for sample in samples:
        by_turn.setdefault(sample.info[TRACE_KEY], set()).add(sample.advantage)
    assert all(len(values) == 1 for values in by_turn.values())


# -- the CLI ------------------------------------------------------------------------------


class ToyTask(gymnasium.Env):
    """A task a random model scores on: +1 if its answer holds a digit, else 0."""

    metadata = {"render_modes": []}

    def __init__(self, seed=None):
        self.observation_space = text_space(256)
        self.action_space = text_space(4096)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.question = f"Say a number near {int(self.np_random.integers(0, 100))}."
        return self.question, {}

    def messages(self):
        return [{"role": "user", "content": self.question}]

    def step(self, action):
        reward = 1.0 if any(c.isdigit() for c in action) else 0.0
        return self.question, reward, True, False, {"answer": action}


BASE = [
    "model=tiny-random", "tensorboard=false", "progress=false", "threads=1", "format_phase=off",
    "thinking=markovian", "chunk=16", "carry=8", "head=2", "max_chunks=3", "save_every=2", "lr=1e-3",
]


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def deterministic(metrics):
    """Without timings, and without evaluations (the short run evaluates at its own last step)."""
    return [
        {k: v for k, v in m.items() if not (k.startswith(("time/", "eval/")) or k.endswith("_s"))} for m in metrics
    ]


def test_sat_runs_in_markovian_thinking(tmp_path):
    from trainers.selfplay import main

    out = tmp_path / "sat"
    assert main([*BASE, "env=sat", "steps=1", "prompts_per_step=2", "group_size=2", f"out={out}"]) == 0
    (metrics,) = read_metrics(out)
    assert metrics["markovian/sat/traces"] == 4
    # every chunk is a sample: 4 traces of 2 chunks on average
    assert metrics["samples"] == 8 == metrics["markovian/sat/traces"] * metrics["markovian/sat/chunks_per_trace"]
    # seeded: one of the four traces hits the cap (3 chunks, 16 + 2 * 8 = 32 tokens), three finish
    assert metrics["markovian/sat/cap_hit_rate"] == 0.25 and metrics["markovian/sat/finished_rate"] == 0.75
    assert metrics["markovian/sat/thinking_tokens_per_trace"] == 17.5
    final = json.loads((out / "eval" / "final.json").read_text())["sat"]
    assert final["answers"] == 20 * 4 and "cap_hit_rate" in final  # evaluated with traces too
    assert final["no_answer_rate"] >= final["cap_hit_rate"]  # a capped trace has no answer


@pytest.mark.parametrize(
    "setting",
    [["env=markovian_toy", "prompts_per_step=2", "group_size=3"],
     ["env=kuhn_poker", "mode=think", "games_per_step=2", "advantage=rae", "eval_games=2", "eval_opponents=random"]],
    ids=["task", "game"],
)
def test_a_killed_and_resumed_markovian_run_equals_the_uninterrupted_run(tmp_path, setting):
    from trainers.selfplay import main

    envs.register("markovian_toy", entry_point=ToyTask, overwrite=True)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*BASE, *setting, "steps=4", f"out={a}"]) == 0
    assert main([*BASE, *setting, "steps=2", f"out={b}"]) == 0
    with open(b / "metrics.jsonl", "a") as handle:  # killed during step 2: its line was written, no checkpoint
        handle.write(json.dumps({"step": 2, "bogus": True}) + "\n")
    assert main([*BASE, *setting, "steps=4", "resume=true", f"out={b}"]) == 0
    metrics_a, metrics_b = read_metrics(a), read_metrics(b)
    assert [m["step"] for m in metrics_b] == [0, 1, 2, 3]
    assert deterministic(metrics_b) == deterministic(metrics_a)
    assert any(m.get("samples_trained", 0) > 0 and "train/loss" in m for m in metrics_a)
    assert all(any(k.startswith("markovian/") for k in m) for m in metrics_a)
    final_eval_a, final_eval_b = (json.loads((run / "eval" / "final.json").read_text()) for run in (a, b))
    # ratings differ by design: the short run also rated its own step-2 policy
    final_eval_a.pop("ratings", None), final_eval_b.pop("ratings", None)
    assert final_eval_b == final_eval_a
    from safetensors.torch import load_file

    final_a = load_file(next((a / "checkpoints" / "step_00000004").rglob("*.safetensors")))
    final_b = load_file(next((b / "checkpoints" / "step_00000004").rglob("*.safetensors")))
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
