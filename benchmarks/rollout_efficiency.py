"""Self-play rollout throughput against plain batched `model.generate`, in one run.

    python -m benchmarks.rollout_efficiency [--model smollm2-135m] [--games 16] [--max-new-tokens 32] [--vllm auto]

Self-play side: `trainers.rollouts.play.play_games` plays `--games` Kuhn Poker games in
``direct`` mode (the model plays both seats), every pending turn of every game in one
batched generation call; its time includes prompt rendering, answer parsing and env
steps. Peer side: the very prompts the self-play rollout saw, sent to Hugging Face
`model.generate` (sampling, same batch size, same `max_new_tokens`, KV cache), with no
game around it. Tokens are generated tokens up to and including the end-of-turn token.
Medians over `--repeats` interleaved runs; prints one JSON line with `ratio` =
self-play tokens/s / plain tokens/s (target: at least 0.8).

vLLM row (``--vllm auto``: when the vLLM environment of ``bash scripts/test-vllm.sh
--setup-only`` exists; ``on`` requires it, ``off`` skips it): the same self-play rollout
with `trainers.generation.vllm_backend.VLLMBackend` (the same weights, float32, as many
threads as torch uses here), interleaved with the other two in every repeat.
`vllm_selfplay_tokens_per_s`, and `vllm_speedup` = vLLM self-play tokens/s / transformers
self-play tokens/s. The engine's start (`vllm_startup_s`) is not in the rates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import envs
from trainers.generation import TransformersBackend, default_stop_token_ids
from trainers.models import load_model
from trainers.rollouts.policy import LanguagePolicy
from trainers.rollouts.play import GameSetup, play_games


def selfplay_round(policy, games: int, seed: int):
    setups = [
        GameSetup("kuhn_poker", envs.make("kuhn_poker", mode="direct"), seed + i, frozenset({0, 1}), i)
        for i in range(games)
    ]
    start = time.perf_counter()
    samples, _, _ = play_games(setups, policy, seed=seed)
    elapsed = time.perf_counter() - start
    tokens = sum(len(s.response_ids) for s in samples)
    prompts = [s.prompt_ids for s in samples]
    return tokens / elapsed, prompts, tokens, elapsed


def plain_generate(model, tokenizer, prompt_ids, *, batch_size: int, max_new_tokens: int, seed: int):
    import torch

    stops = default_stop_token_ids(model, tokenizer)
    torch.manual_seed(seed)  # model.generate samples from the global RNG; this is the peer's way
    tokens = 0
    start = time.perf_counter()
    for begin in range(0, len(prompt_ids), batch_size):
        batch = prompt_ids[begin : begin + batch_size]
        encoded = tokenizer.pad({"input_ids": batch}, return_tensors="pt", padding_side="left")
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row in output[:, encoded["input_ids"].shape[1] :].tolist():
            length = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            tokens += length
    return tokens / (time.perf_counter() - start), tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--games", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vllm", choices=("auto", "on", "off"), default="auto", help="add the vLLM backend's row")
    args = parser.parse_args(argv)
    model, tokenizer = load_model(args.model)
    options = dict(mode="direct", max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    policy = LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, **options)
    engine, vllm_note = start_vllm(args.vllm, model, tokenizer)
    vllm_policy = None if engine is None else LanguagePolicy(engine, tokenizer, **options)
    ours, theirs, token_counts, vllm_rates, vllm_tokens = [], [], [], [], []
    try:
        for repeat in range(args.repeats):
            rate, prompts, tokens, _ = selfplay_round(policy, args.games, seed=1000 * repeat)
            ours.append(rate)
            peer_rate, peer_tokens = plain_generate(
                model, tokenizer, prompts, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, seed=repeat
            )
            theirs.append(peer_rate)
            token_counts.append((tokens, peer_tokens))
            if vllm_policy is not None:
                rate, _, tokens, _ = selfplay_round(vllm_policy, args.games, seed=1000 * repeat)
                vllm_rates.append(rate)
                vllm_tokens.append(tokens)
    finally:
        if engine is not None:
            engine.close()
    result = {
        "benchmark": "rollout_efficiency",
        "model": args.model,
        "games": args.games,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "selfplay_tokens_per_s": round(statistics.median(ours), 1),
        "generate_tokens_per_s": round(statistics.median(theirs), 1),
        "ratio": round(statistics.median(ours) / statistics.median(theirs), 3),
        "tokens": token_counts,
        "repeats": args.repeats,
    }
    if engine is not None:
        result.update(
            vllm_selfplay_tokens_per_s=round(statistics.median(vllm_rates), 1),
            vllm_speedup=round(statistics.median(vllm_rates) / statistics.median(ours), 3),
            vllm_tokens=vllm_tokens,
            vllm_startup_s=engine.info["startup_s"],
            vllm=f"vllm {engine.info['vllm']}, torch {engine.info['torch']}, {vllm_note}",
        )
    else:
        result["vllm"] = vllm_note
    print(json.dumps(result))


def start_vllm(mode: str, model, tokenizer):
    """The vLLM engine for the vLLM row, or None and why not."""
    if mode == "off":
        return None, "skipped (--vllm off)"
    from trainers.generation.vllm_backend import SETUP_COMMAND, VLLMBackend, VLLMWorkerError, vllm_available

    if not vllm_available():
        if mode == "on":
            raise SystemExit(f"--vllm on: the vLLM environment is not installed; set it up with: {SETUP_COMMAND}")
        return None, f"skipped (not installed: {SETUP_COMMAND})"
    import torch

    threads = torch.get_num_threads()
    try:
        engine = VLLMBackend.from_model(model, tokenizer, threads=threads)
    except VLLMWorkerError as error:
        if mode == "on":
            raise
        return None, f"skipped (vLLM cannot run this model: {str(error).splitlines()[0]})"
    # One short untimed call: the engine's first requests pay one-off setup costs.
    engine.generate(["Hello"], max_new_tokens=4, seed=0)
    return engine, f"threads={threads}"


if __name__ == "__main__":
    main()
