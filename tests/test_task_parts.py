"""Choice mode for tasks: SAT answered part by part (trainers.rollouts.parts, task_mode).

Checked: the spelled answers, each part's probability against the model's own next-token
distribution, the samples a run trains on (one trace per answer, its advantage shared),
how `task_mode=auto` resolves, and refusals by name.
"""

from __future__ import annotations

import math

import gymnasium
import pytest

import envs
from envs.sat import SatEnv
from envs.spaces import text_space
from envs.tasks import AnswerParts, task_hooks
from trainers.run.config import TrainConfig, parse_overrides

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_answer_parts_spell_sat_answers():
    parts = task_hooks(SatEnv()).answer_parts({"level": (3, 5, 5)})
    assert parts.spell([0, 1, 1, 0, 1]) == "\\boxed{01101}"
    with pytest.raises(ValueError, match="5 parts need 5 picks"):
        parts.spell([0, 1])
    labelled = AnswerParts("[", (("x", "y"), ("1", "2", "3")), "]", ("a:", " b:"))
    assert labelled.next_options([]) == ("[a:", ("x", "y"))
    assert labelled.next_options([1]) == ("[a:y b:", ("1", "2", "3"))
    assert labelled.next_options([1, 2]) is None and labelled.spell([1, 2]) == "[a:y b:3]"
    with pytest.raises(ValueError, match="2 parts need 2 labels or none"):
        AnswerParts("[", (("x", "y"), ("1", "2")), "]", ("a:",))


@pytest.fixture(scope="module")
def choice_policy():
    from trainers.generation import TransformersBackend
    from trainers.models import load_model
    from trainers.rollouts.policy import LanguagePolicy

    model, tokenizer = load_model("tiny-random", seed=0)
    return LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode="choice")


def _sat_requests(count: int):
    env = SatEnv(seed=3)
    requests, parts, instances = [], [], []
    hooks = task_hooks(env)
    for index in range(count):
        _, info = env.reset(seed=index)
        requests.append(env.messages())
        parts.append(hooks.answer_parts(info))
        instances.append(env.instance)
    return requests, parts, instances


def test_each_part_is_the_models_next_token_choice(choice_policy):
    from trainers.generation import encode_prompts
    from trainers.rollouts.parts import answer_in_parts

    requests, parts, _ = _sat_requests(2)
    replies = answer_in_parts(choice_policy, requests, parts, seed=5)
    again = answer_in_parts(choice_policy, requests, parts, seed=5)
    assert [r.text for r in replies] == [r.text for r in again]  # seeded
    tokenizer, model = choice_policy.tokenizer, choice_policy.backend.model
    zero, one = (tokenizer.encode(d, add_special_tokens=False)[0] for d in "01")
    for reply, messages in zip(replies, requests):
        assert reply.rounds == 5
        bits = reply.text.removeprefix("\\boxed{").removesuffix("}")
        assert len(bits) == 5 and set(bits) <= {"0", "1"}
        prompt = list(encode_prompts(tokenizer, [messages])[0])
        for index, decision in enumerate(reply.decisions):
            context = prompt + tokenizer.encode("\\boxed{" + bits[:index], add_special_tokens=False)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([context])).logits[0, -1].float()
            pair = torch.log_softmax(logits[[zero, one]], dim=0)
            chosen = int(bits[index])
            assert decision.choice_index == chosen
            assert decision.old_logprobs[0] == pytest.approx(pair[chosen].item(), abs=1e-4)


def test_a_run_trains_one_trace_per_answer(choice_policy):
    from trainers.learning.advantages import trace_advantages
    from trainers.learning.samples import TRACE_KEY
    from trainers.rollouts.play import run_tasks

    samples, results, _ = run_tasks("sat", SatEnv(seed=0), choice_policy, prompts=2, group_size=4, seed=1)
    assert len(samples) == 2 * 4 * 5
    traces: dict = {}
    for sample in samples:
        assert sample.is_choice and len(sample.choice_ids) == 2 and sample.loss_tokens == 5
        traces.setdefault(sample.info[TRACE_KEY], []).append(sample)
    assert len(traces) == 8
    for parts in traces.values():
        assert [s.info["chunk_index"] for s in parts] == list(range(5))
        assert len({s.reward for s in parts}) == 1
        assert "answer_text" in parts[0].info
    assert [r for result in results for r in result.rewards] == [parts[0].reward for parts in traces.values()]
    trace_advantages(samples, "grpo")
    for parts in traces.values():
        assert len({s.advantage for s in parts}) == 1


def test_task_mode_auto_resolves_by_mode_and_thinking():
    from trainers.run.setup import RunSetup

    assert RunSetup(TrainConfig(env=["sat"]).validate()).task_mode == "choice"
    assert RunSetup(TrainConfig(env=["sat"], mode="direct").validate()).task_mode == "direct"
    assert RunSetup(TrainConfig(env=["sat"], thinking="markovian", chunk=64, carry=16, head=8).validate()).task_mode == "direct"
    assert RunSetup(TrainConfig(env=["sat"], task_mode="direct").validate()).task_mode == "direct"


class WordTask(gymnasium.Env):
    """A task that cannot spell its answers in parts: +1 for any answer."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = text_space(64)
        self.action_space = text_space(64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "Say a word.", {}

    def step(self, action):
        return "", 1.0, True, False, {"answer": action}


def test_task_mode_refusals_name_the_key(tmp_path):
    from trainers.run.preflight import preflight
    from trainers.run.setup import RunSetup

    envs.register("word_task", entry_point=WordTask, overwrite=True)
    base = ["model=tiny-random", f"out={tmp_path / 'run'}"]
    assert RunSetup(parse_overrides([*base, "env=word_task"])).task_mode == "direct"  # auto: no parts, free text
    with pytest.raises(ValueError, match="word_task cannot spell its answers in parts"):
        preflight(parse_overrides([*base, "env=word_task", "task_mode=choice"]))
    with pytest.raises(ValueError, match="has no task env"):
        preflight(parse_overrides([*base, "env=kuhn_poker", "task_mode=direct"]))
    with pytest.raises(ValueError, match="format_phase=on teaches the free-text answer format"):
        preflight(parse_overrides([*base, "env=sat", "format_phase=on"]))
    with pytest.raises(ValueError, match="task_mode"):
        parse_overrides(["task_mode=parts"])


def test_openrlhf_refuses_task_mode():
    from trainers.backends.openrlhf.launcher import refuse_unmapped_keys

    with pytest.raises(ValueError, match="task_mode='choice'"):
        refuse_unmapped_keys(TrainConfig(backend="openrlhf", env=["sat"], task_mode="choice"))


def test_sat_run_in_choice_mode_evaluates_and_never_misformats(tmp_path):
    import json

    from trainers.selfplay import main

    out = tmp_path / "sat"
    assert main(["model=tiny-random", "env=sat", "steps=2", "prompts_per_step=2", "group_size=4", "eval_samples=2",
                 "threads=1", "progress=false", "tensorboard=false", "save_every=0", f"out={out}"]) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(m["invalid_rate/sat"] == 0.0 and m["phase"] == "rl" for m in metrics)
    final = json.loads((out / "eval" / "final.json").read_text())["sat"]
    assert final["no_answer_rate"] == 0.0 and final["answers"] == 20 * 2
    assert math.isfinite(final["pass_at_1"])


def test_counterfactual_credit_is_the_reward_minus_the_expected_reward_of_swapping_one_part():
    """Worked by hand on A OR B (both plain) with two parts: from A=1 B=1 (solved), swapping A
    still solves (B holds it), so A gets 0; from A=0 B=1, only B mattered."""
    from curricula.sat import SatInstance, text_to_clauses
    from envs.sat import score_answer
    from trainers.rollouts.parts import PartsReply, counterfactual_gaps
    from trainers.rollouts.policy import Decision

    instance = SatInstance(2, 2, 1, text_to_clauses("AB"), None, 0, False)
    parts = task_hooks(SatEnv()).item_answer_parts(instance)
    calls = []

    def score(text):
        calls.append(text)
        return score_answer(instance, text)[0]

    def reply(picks, probs):
        made = [Decision("", [], [], [0.0], choice_index=p, choice_probs=list(q)) for p, q in zip(picks, probs)]
        return PartsReply(parts, [], Decision(parts.spell(picks), [], [], [0.0], parts=made))

    assert counterfactual_gaps(reply([1, 1], [(0.3, 0.7), (0.4, 0.6)]), 1.0, score) == pytest.approx([0.0, 0.0])
    assert calls == ["\\boxed{01}", "\\boxed{10}"]  # each part's other option, the chosen one is not asked again
    assert counterfactual_gaps(reply([0, 1], [(0.8, 0.2), (0.4, 0.6)]), 1.0, score) == pytest.approx([0.0, 0.4 * 1.0])
    assert counterfactual_gaps(reply([0, 0], [(0.8, 0.2), (0.9, 0.1)]), 0.0, score) == pytest.approx([-0.2, -0.1])
    assert counterfactual_gaps(reply([0, 0], [(1.0, 0.0), (1.0, 0.0)]), 0.0, score) == [0.0, 0.0]  # greedy: no other option played


def test_a_counterfactual_run_gives_each_part_its_own_advantage(choice_policy, tmp_path):
    import json

    from envs.sat import score_answer
    from trainers.rollouts.parts import PART_GAP_KEY
    from trainers.rollouts.play import run_tasks
    from trainers.run import seeds
    from trainers.run.seeds import derive_seed
    from trainers.selfplay import main

    samples, results, _ = run_tasks("sat", SatEnv(seed=0), choice_policy, prompts=2, group_size=4, seed=1, credit="counterfactual")
    assert samples and all(PART_GAP_KEY in s.info for s in samples)
    env = SatEnv(seed=0)
    env.reset(seed=derive_seed(1, seeds.TASK, 0))  # the first group's formula
    first = samples[:5]  # the first answer, part by part: its gaps from the env's own scorer
    picks = [s.choice_index for s in first]
    for part, sample in enumerate(first):
        flipped = "".join(str(b if i != part else 1 - b) for i, b in enumerate(picks))
        swapped = score_answer(env.instance, f"\\boxed{{{flipped}}}")[0]
        chosen = math.exp(sample.old_logprobs[0])  # rollout temperature 1: the sampling probability
        assert sample.info[PART_GAP_KEY] == pytest.approx((1 - chosen) * (sample.reward - swapped), abs=1e-9)
    assert len({round(s.info[PART_GAP_KEY], 9) for s in samples}) > 1  # parts of one answer differ, unlike GRPO's shared value
    with pytest.raises(ValueError, match="unknown task credit"):
        run_tasks("sat", env, choice_policy, prompts=1, group_size=1, seed=1, credit="parts")

    out = tmp_path / "sat"
    assert main(["model=tiny-random", "env=sat", "steps=1", "prompts_per_step=2", "group_size=4", "eval_samples=1",
                 "task_credit=counterfactual", "threads=1", "progress=false", "tensorboard=false", "save_every=0", f"out={out}"]) == 0
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["phase"] == "rl"


def test_task_credit_refusals_name_the_key(tmp_path):
    from trainers.backends.openrlhf.launcher import refuse_unmapped_keys
    from trainers.run.preflight import preflight

    base = ["model=tiny-random", f"out={tmp_path / 'run'}", "task_credit=counterfactual"]
    with pytest.raises(ValueError, match="task_credit=counterfactual credits the parts .* kuhn_poker has no task env"):
        preflight(parse_overrides([*base, "env=kuhn_poker"]))
    with pytest.raises(ValueError, match="task_credit=counterfactual credits the parts .* tasks answer in direct mode"):
        preflight(parse_overrides([*base, "env=sat", "task_mode=direct"]))
    with pytest.raises(ValueError, match="task_credit"):
        parse_overrides(["task_credit=parts"])
    with pytest.raises(ValueError, match="task_credit='counterfactual'"):
        refuse_unmapped_keys(TrainConfig(backend="openrlhf", env=["sat"], task_credit="counterfactual"))
