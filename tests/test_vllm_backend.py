"""The vLLM generation backend against transformers, on SmolLM2-135M in float32.

The engine checks need the vLLM environment (``.venv-vllm``, made by
``bash scripts/test-vllm.sh``, which also runs this file) and are skipped without it. The
first two tests need no vLLM: a missing environment and an environment without vLLM fail
with errors that name the setup command, and leave no process behind.

Agreement is measured, not assumed: the maximum differences are printed (run with ``-s``)
and asserted within 1e-3 nats; greedy outputs must be token-identical. The last test runs
``python -m trainers.selfplay ... generation=vllm`` and checks that it plays the same games
as ``generation=transformers``.
"""

import gc
import json
import os
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import envs
from trainers.run.config import TrainConfig
from trainers.evaluation.evaluate import decision_states
from trainers.generation import TransformersBackend, sequence_logprobs
from trainers.generation.vllm_backend import (
    SETUP_COMMAND,
    VLLMBackend,
    VLLMUnavailableError,
    export_weights,
    save_model_folder,
    vllm_available,
)
from trainers.learning.learner import Learner
from trainers.models import load_model
from trainers.rollouts.policy import LanguagePolicy
from trainers.learning.samples import TurnSample

TOLERANCE = 1e-3  # nats; measured differences are about 3e-5 (float32 kernels differ)

needs_vllm = pytest.mark.skipif(
    not vllm_available(), reason=f"the vLLM environment is not installed ({SETUP_COMMAND})"
)

CHAT_PROMPTS = [
    [{"role": "user", "content": "What is 2+2? Answer briefly."}],
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "system", "content": "You are a poker player."}, {"role": "user", "content": "Bet or check?"}],
    "Once upon a time",
]


def report(name, value):
    print(f"\n[vllm-agreement] {name}: {value}")


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return True


# -- without vLLM -----------------------------------------------------------------------


def test_missing_environment_names_the_setup_command(tmp_path):
    with pytest.raises(VLLMUnavailableError, match="scripts/test-vllm.sh"):
        VLLMBackend(tmp_path, tokenizer=None, python=tmp_path / "no-venv" / "bin" / "python")


def test_environment_without_vllm_fails_clearly_and_leaves_no_worker(tmp_path):
    model, tokenizer = load_model("tiny-random")
    folder = save_model_folder(model, tmp_path / "tiny")
    before = {p for p in os.listdir("/proc") if p.isdigit()}
    started = time.perf_counter()
    # This interpreter runs the worker but has no vllm: the start request fails.
    with pytest.raises(VLLMUnavailableError, match="cannot import vllm"):
        VLLMBackend(folder, tokenizer, python=sys.executable, log_path=tmp_path / "worker.log")
    assert time.perf_counter() - started < 60
    assert "ModuleNotFoundError" in (tmp_path / "worker.log").read_text()
    leftover = {p for p in os.listdir("/proc") if p.isdigit()} - before
    assert not [p for p in leftover if process_exists(int(p)) and "vllm_worker" in _cmdline(p)]


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_export_weights_merges_lora_and_keeps_tied_weights_once():
    model, _ = load_model("tiny-random")
    config = TrainConfig(lora_rank=4, lora_alpha=8, seed=3).validate()
    learner = Learner(model, config)
    with torch.no_grad():
        for name, parameter in learner.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)  # peft starts B at zero: make the delta visible
    exported = export_weights(learner.model)
    assert not any("lora" in name or "base_layer" in name for name in exported)
    assert "lm_head.weight" not in exported and "model.embed_tokens.weight" in exported  # tied
    merged = load_model("tiny-random")[0]
    merged.load_state_dict(exported, strict=False)
    merged.tie_weights()
    ids = torch.tensor([[3, 40, 50, 60, 70]])
    with torch.no_grad():
        expected = learner.model(input_ids=ids).logits
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-5)
        assert not torch.allclose(load_model("tiny-random")[0](input_ids=ids).logits, expected, atol=1e-3)


# -- with vLLM --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def engine(smollm2):
    model, tokenizer = smollm2
    backend = VLLMBackend.from_model(model, tokenizer)
    report("engine", backend.info)
    backend.holds = "pristine"
    yield backend
    backend.close()


@pytest.fixture
def pristine_engine(engine, smollm2):
    """The engine holding SmolLM2's own weights (tests that load others say so)."""
    if engine.holds != "pristine":
        engine.load_weights(smollm2[0])
        engine.holds = "pristine"
    return engine


@pytest.fixture(scope="module")
def kuhn_prompts():
    env = envs.make("kuhn_poker", mode="choice")
    return [env.prompt_for(state) for _, state in decision_states(env.game)]


def greedy(backend, prompts, max_new_tokens=24):
    return backend.generate(prompts, max_new_tokens=max_new_tokens, temperature=0, seed=0)


def assert_same_greedy(vllm_out, hf_out, label):
    assert [g.prompt_ids for g in vllm_out] == [g.prompt_ids for g in hf_out]
    assert [g.response_ids for g in vllm_out] == [g.response_ids for g in hf_out]
    assert [g.text for g in vllm_out] == [g.text for g in hf_out]
    assert [g.finish_reason for g in vllm_out] == [g.finish_reason for g in hf_out]
    gap = max(abs(a - b) for v, h in zip(vllm_out, hf_out) for a, b in zip(v.logprobs, h.logprobs))
    report(f"{label}: greedy tokens identical on {len(vllm_out)} prompts; max |logprob diff|", f"{gap:.2e}")
    assert gap < TOLERANCE
    return gap


def assert_same_scores(vllm_scores, hf_scores, label):
    gap = max(abs(a - b) for v, h in zip(vllm_scores, hf_scores) for a, b in zip(v, h))
    count = sum(len(v) for v in vllm_scores)
    report(f"{label}: max |choice score diff| over {count} candidates", f"{gap:.2e}")
    assert gap < TOLERANCE
    return gap


def choice_sets(prompts):
    return [[c + "<|im_end|>" if i == 0 else c for i, c in enumerate(p.choices)] for p in prompts]


@needs_vllm
def test_greedy_generation_matches_transformers(pristine_engine, smollm2, kuhn_prompts):
    model, tokenizer = smollm2
    direct = [p.messages() for p in kuhn_prompts[:4]]
    prompts = CHAT_PROMPTS + direct
    assert_same_greedy(greedy(pristine_engine, prompts), greedy(TransformersBackend(model, tokenizer), prompts), "before update")


@needs_vllm
def test_choice_scores_match_transformers(pristine_engine, smollm2, kuhn_prompts):
    model, tokenizer = smollm2
    messages = [p.messages() for p in kuhn_prompts]
    choices = choice_sets(kuhn_prompts)  # one multi-token candidate with the end-of-turn token per prompt
    assert_same_scores(
        pristine_engine.score_choices(messages, choices),
        TransformersBackend(model, tokenizer).score_choices(messages, choices),
        "before update",
    )


@needs_vllm
def test_sampled_logprobs_are_the_raw_model_logprobs_and_seeds_repeat(pristine_engine, smollm2):
    model, _ = smollm2
    kwargs = dict(max_new_tokens=16, temperature=0.7, top_p=0.9)
    first = pristine_engine.generate(CHAT_PROMPTS, seed=11, **kwargs)
    again = pristine_engine.generate(CHAT_PROMPTS, seed=11, **kwargs)
    other = pristine_engine.generate(CHAT_PROMPTS, seed=12, **kwargs)
    assert [g.response_ids for g in first] == [g.response_ids for g in again]
    assert [g.logprobs for g in first] == [g.logprobs for g in again]
    assert [g.response_ids for g in first] != [g.response_ids for g in other]
    # Temperature 0.7 and top-p 0.9 pick the tokens; the log-probs are the raw model's.
    with torch.inference_mode():
        recomputed = sequence_logprobs(model, [g.prompt_ids for g in first], [g.response_ids for g in first])
    gap = max(float((r - torch.tensor(g.logprobs)).abs().max()) for r, g in zip(recomputed, first))
    report("sampled tokens (T=0.7, top-p=0.9): max |vLLM logprob - learner's recomputed logprob|", f"{gap:.2e}")
    assert gap < TOLERANCE


@needs_vllm
def test_a_stopped_response_ends_with_its_stop_token(pristine_engine):
    generations = greedy(pristine_engine, CHAT_PROMPTS[:1], max_new_tokens=32)
    stopped = generations[0]
    assert stopped.finish_reason == "stop"
    assert stopped.response_ids[-1] in pristine_engine.stop_token_ids
    assert "<|im_end|>" not in stopped.text and stopped.text
    cut = greedy(pristine_engine, CHAT_PROMPTS[1:2], max_new_tokens=3)[0]
    assert cut.finish_reason == "length" and len(cut.response_ids) == 3
    # One budget per prompt, in one call.
    both = greedy(pristine_engine, CHAT_PROMPTS[:2], max_new_tokens=[32, 3])
    assert [g.response_ids for g in both] == [stopped.response_ids, cut.response_ids]


def update_batch(policy, prompts, seed):
    """Choice-mode samples of Kuhn Poker's states with advantage +1 for [bet]/[call] and -1 otherwise."""
    samples = []
    for decision, prompt in zip(policy.act(prompts, seed=seed), prompts):
        sample = decision.to_sample("kuhn_poker", 0, 0)
        sample.advantage = 1.0 if decision.text in ("[bet]", "[call]") else -1.0
        samples.append(sample)
    return samples


@needs_vllm
def test_after_an_update_and_a_sync_the_engine_uses_the_new_weights(engine, smollm2, kuhn_prompts):
    _, tokenizer = smollm2
    model = load_model("smollm2-135m")[0]  # its own copy: the learner changes it
    engine.load_weights(model)
    engine.holds = "learner"
    hf = TransformersBackend(model, tokenizer)
    messages = [p.messages() for p in kuhn_prompts]
    choices = choice_sets(kuhn_prompts)
    prompts = CHAT_PROMPTS + messages[:4]
    old_greedy, old_scores = greedy(hf, prompts), hf.score_choices(messages, choices)

    learner = Learner(model, TrainConfig(lr=3e-4, entropy_coef=0.0, seed=0).validate(), tokenizer=tokenizer)
    policy = LanguagePolicy(hf, tokenizer, mode="choice")
    metrics = learner.update(update_batch(policy, kuhn_prompts, seed=0))
    new_greedy, new_scores = greedy(hf, prompts), hf.score_choices(messages, choices)
    moved = max(abs(a - b) for o, n in zip(old_scores, new_scores) for a, b in zip(o, n))
    changed = sum(o.response_ids != n.response_ids for o, n in zip(old_greedy, new_greedy))
    report("learner step", {"loss": metrics["loss"], "max |score change|": round(moved, 3), "greedy outputs changed": f"{changed}/{len(prompts)}"})
    assert moved > 0.1 and changed >= 1  # the update really changed the policy

    # Not synced yet: the engine still answers with the old weights.
    assert_same_greedy(greedy(engine, prompts), old_greedy, "after update, before sync (old weights)")
    started = time.perf_counter()
    loaded = engine.load_weights(learner.model)
    report("weight sync", f"{loaded} tensors in {time.perf_counter() - started:.1f} s")
    assert_same_greedy(greedy(engine, prompts), new_greedy, "after update and sync (new weights)")
    assert_same_scores(engine.score_choices(messages, choices), new_scores, "after update and sync")


@needs_vllm
def test_a_lora_update_syncs_the_merged_weights(engine, smollm2, kuhn_prompts):
    _, tokenizer = smollm2
    model = load_model("smollm2-135m")[0]
    config = TrainConfig(lr=1e-2, lora_rank=8, lora_alpha=16, entropy_coef=0.0, seed=0).validate()
    learner = Learner(model, config, tokenizer=tokenizer)
    hf = TransformersBackend(learner.model, tokenizer)
    messages = [p.messages() for p in kuhn_prompts]
    choices = choice_sets(kuhn_prompts)
    before = hf.score_choices(messages, choices)
    learner.update(update_batch(LanguagePolicy(hf, tokenizer, mode="choice"), kuhn_prompts, seed=1))
    after = hf.score_choices(messages, choices)
    assert max(abs(a - b) for o, n in zip(before, after) for a, b in zip(o, n)) > 0.05
    engine.load_weights(learner.model)
    engine.holds = "lora"
    assert_same_scores(engine.score_choices(messages, choices), after, "LoRA (rank 8) after update and sync")


@needs_vllm
def test_the_worker_stops_when_the_backend_is_garbage_collected(smollm2):
    model, tokenizer = smollm2
    backend = VLLMBackend.from_model(model, tokenizer)
    pid = backend.info["pid"]
    assert process_exists(pid)
    del backend
    gc.collect()
    deadline = time.monotonic() + 30
    while process_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_exists(pid)


@needs_vllm
def test_a_short_selfplay_run_with_the_vllm_backend_completes_and_matches_transformers(tmp_path):
    """Choice mode samples from the scores with the run's own seeded generator, so with scores
    that agree to ~1e-4 both engines play the same games and train the same way."""
    from trainers.selfplay import main

    def run(generation):
        out = tmp_path / generation
        argv = [
            "env=kuhn_poker", f"generation={generation}", "model=smollm2-135m", "steps=2", "games_per_step=16",
            "eval_games=4", "eval_opponents=random", f"out={out}", "tensorboard=false", "progress=false",
            "lr=1e-4", "seed=0",
        ]
        started = time.perf_counter()
        assert main(argv) == 0
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        final = json.loads((out / "eval" / "final.json").read_text())
        return metrics, final, round(time.perf_counter() - started)

    metrics, final, seconds = run("vllm")
    report("self-play run (kuhn_poker, generation=vllm, 2 steps)", {
        "seconds": seconds, "steps": [m["step"] for m in metrics], "samples": [m["samples"] for m in metrics],
        "time/generation_s": [round(m["time/generation_s"], 1) for m in metrics],
        "time/weight_sync_s": [round(m["time/weight_sync_s"], 1) for m in metrics],
        "final exploitability": final["kuhn_poker/exploitability"],
    })
    assert [m["step"] for m in metrics] == [0, 1]
    assert all(m["samples"] > 0 and m["time/weight_sync_s"] > 0 for m in metrics)

    reference, reference_final, seconds = run("transformers")
    report("the same run with generation=transformers", {
        "seconds": seconds, "time/generation_s": [round(m["time/generation_s"], 1) for m in reference],
        "final exploitability": reference_final["kuhn_poker/exploitability"],
    })
    for ours, theirs in zip(metrics, reference):
        assert ours["samples"] == theirs["samples"]
        assert {k: v for k, v in ours.items() if k.startswith("return/")} == {k: v for k, v in theirs.items() if k.startswith("return/")}
        assert ours["train/entropy_choice"] == pytest.approx(theirs["train/entropy_choice"], abs=1e-4)
    assert final["kuhn_poker/exploitability"] == pytest.approx(reference_final["kuhn_poker/exploitability"], abs=1e-4)
