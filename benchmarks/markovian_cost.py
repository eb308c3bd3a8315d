"""Cost of thinking long: plain generation vs Markovian (Delethink) generation.

    python -m benchmarks.markovian_cost                      # SmolLM2-135M, 512..4096 tokens
    python -m benchmarks.markovian_cost --lengths 512,1024 --batch-size 1

Both modes generate on the same prompts at the same batch size through the trainer's own
generation path (``TransformersBackend``; Markovian through ``trainers.generation.traces``
with C=512, carry=256, head=64), with the stop tokens switched off so that every trace
reaches its length. Prints one JSON line per (mode, length):

* ``s_per_token``: wall time until every trace of the batch holds `length` tokens, divided
  by `length` (the traces run side by side, so this is the time per token of one trace);
* ``s_per_token_last_1k``: the same over the trace's last 1024 tokens (null below 1024);
* ``peak_mem_mb``: the peak size of the KV cache (keys and values of every layer, all rows)
  while generating the row, read from the cache tensors after every forward pass;
  ``peak_mem_kind`` says so. With ``--fresh-process`` every row runs in its own process and
  ``peak_rss_mb`` (that process's peak resident memory, weights included) is added;
* ``max_context``: the longest sequence any forward pass attended over.

Then one summary line: the fitted growth exponent b of ``s_per_token ~ length^b`` per mode
and whether the targets hold (Markovian ``s_per_token`` and ``peak_mem_mb`` within 15% from
1024 to 4096; at 4096 plain ``s_per_token`` >= 1.5x Markovian's and >= 2x over the last 1024).

By default each mode runs ONCE, to the longest length, and the shorter rows are read off that
run: a plain run of 4096 tokens does for its first L tokens exactly what a plain run of L
tokens does (the decoding of a token never depends on later ones), and a Markovian run with
I = 15 chunks does in its first 1, 3 or 7 chunks exactly what runs with I = 1, 3, 7 do (the
lengths are chunk boundaries: 512 + (I - 1) * 256). Time and cache size are recorded per
forward pass by a forward hook, so both are read at any token count.

SmolLM2-135M has 8192 position embeddings: the longest plain context, prompt + 4096, fits.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import signal
import subprocess
import sys
import time

MODES = ("plain", "markovian")
DEFAULT_LENGTHS = (512, 1024, 2048, 4096)
LAST = 1024
PROMPTS = (
    "Think step by step, at length, about why the sum of two odd numbers is even.",
    "Think step by step, at length, about how many ways eight rooks fit on a chessboard.",
    "Think step by step, at length, about whether 221 is a prime number.",
    "Think step by step, at length, about the fastest way to sort a deck of cards by hand.",
)


class ForwardRecorder:
    """A forward hook: after every forward pass, the time and the KV cache's bytes and length."""

    def __init__(self, model):
        self.start = time.perf_counter()
        self.times: list[float] = []
        self.cache_bytes: list[int] = []
        self.cache_length: list[int] = []
        self._handle = model.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs, output):
        cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
        total = length = 0
        for layer in getattr(cache, "layers", []):
            for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if tensor is not None and hasattr(tensor, "nbytes"):
                    total += tensor.nbytes
                    length = max(length, tensor.shape[-2])
        self.times.append(time.perf_counter())
        self.cache_bytes.append(total)
        self.cache_length.append(length)

    def close(self) -> None:
        self._handle.remove()


def generate_mode(model, tokenizer, mode: str, length: int, recorder: ForwardRecorder, *, batch_size: int, chunk: int, carry: int, head: int, seed: int) -> float:
    """Run one mode to `length` tokens per trace, recorded by `recorder`; return the start time."""
    from envs.markovian import MarkovianConfig
    from trainers.generation import TransformersBackend
    from trainers.generation.traces import new_traces, run_traces, token_codec

    backend = TransformersBackend(model, tokenizer, stop_token_ids=[])
    prompts = [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}] for i in range(batch_size)]
    recorder.start = start = time.perf_counter()
    if mode == "plain":
        generations = backend.generate(prompts, max_new_tokens=length, seed=seed, batch_size=batch_size)
        produced = [len(g.response_ids) for g in generations]
    else:
        config = MarkovianConfig.for_length(length, chunk=chunk, carry=carry, head=head)
        traces = new_traces(prompts, token_codec(tokenizer), config)
        run_traces(backend, traces, seed=seed, batch_size=batch_size)
        produced = [t.thinking_tokens for t in traces]
    if any(n < length for n in produced):
        raise RuntimeError(f"{mode}: traces stopped early ({produced}); the benchmark needs every trace at {length} tokens")
    return start


def rows_from_run(mode: str, start: float, recorder: ForwardRecorder, lengths, *, batch_size: int, device: str = "cpu") -> list[dict]:
    """One row per length, read off one run: forward pass i produces token i of every trace."""
    rows = []
    for length in lengths:
        elapsed = recorder.times[length - 1] - start
        last = None
        if length >= LAST:
            before = recorder.times[length - LAST - 1] if length > LAST else start
            last = (recorder.times[length - 1] - before) / LAST
        rows.append({
            "mode": mode,
            "thinking_tokens": length,
            "batch_size": batch_size,
            "wall_s": round(elapsed, 3),
            "s_per_token": elapsed / length,
            "s_per_token_last_1k": last,
            "peak_mem_mb": max(recorder.cache_bytes[:length]) / 2**20,
            "peak_mem_kind": "kv_cache",
            "max_context": max(recorder.cache_length[:length]),
            "device": device,
        })
    return rows


def growth_exponent(rows: list[dict]) -> float | None:
    """Least-squares slope of log(s_per_token) on log(length)."""
    points = [(math.log(r["thinking_tokens"]), math.log(r["s_per_token"])) for r in rows]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def summary(rows: list[dict]) -> dict:
    """Growth exponents and the targets that the measured lengths can decide."""
    by = {(r["mode"], r["thinking_tokens"]): r for r in rows}
    result: dict = {"summary": True}
    for mode in MODES:
        mode_rows = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["thinking_tokens"])
        result[f"exponent_{mode}"] = growth_exponent(mode_rows)
    low, high = by.get(("markovian", 1024)), by.get(("markovian", 4096))
    if low and high:
        result["markovian_s_per_token_change_1k_4k"] = high["s_per_token"] / low["s_per_token"] - 1
        result["markovian_peak_mem_change_1k_4k"] = high["peak_mem_mb"] / low["peak_mem_mb"] - 1
        result["target_markovian_flat"] = (
            abs(result["markovian_s_per_token_change_1k_4k"]) <= 0.15
            and abs(result["markovian_peak_mem_change_1k_4k"]) <= 0.15
        )
    plain, markovian = by.get(("plain", 4096)), by.get(("markovian", 4096))
    if plain and markovian:
        result["plain_over_markovian_4k"] = plain["s_per_token"] / markovian["s_per_token"]
        result["plain_over_markovian_4k_last_1k"] = plain["s_per_token_last_1k"] / markovian["s_per_token_last_1k"]
        result["target_speedup"] = result["plain_over_markovian_4k"] >= 1.5 and result["plain_over_markovian_4k_last_1k"] >= 2.0
    return result


def random_model(folder: str, seed: int):
    """The architecture of the model folder `folder` (config.json, tokenizer) with random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from trainers.models import _prepare_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    return model.eval(), _prepare_tokenizer(AutoTokenizer.from_pretrained(folder))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.markovian_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", default=",".join(map(str, DEFAULT_LENGTHS)), help="thinking lengths in tokens, comma-separated")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--batch-size", type=int, default=1, help="traces generated side by side (the same for both modes); 1 keeps the default run within 10 minutes on 2 cores")
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--carry", type=int, default=256)
    parser.add_argument("--head", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu (the target) or e.g. cuda")
    parser.add_argument(
        "--random-weights", action="store_true",
        help="--model is a folder with config and tokenizer only: build that architecture with random "
             "weights (the cost is the same, since no trace may stop early)",
    )
    parser.add_argument("--fresh-process", action="store_true", help="run every (mode, length) in its own process and add its peak RSS")
    args = parser.parse_args(argv)
    args.lengths = sorted({int(x) for x in args.lengths.split(",") if x.strip()})
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in args.modes:
        if mode not in MODES:
            parser.error(f"--modes: unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if not args.lengths or args.lengths[0] < 1 or args.batch_size < 1:
        parser.error("--lengths and --batch-size must be positive")
    return args


def measure(args, mode: str, lengths) -> list[dict]:
    """Load the model in this process and measure `mode` at `lengths` (one run to the longest)."""
    import torch

    from trainers.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_weights:
        model, tokenizer = random_model(args.model, args.seed)
    else:
        model, tokenizer = load_model(args.model)
    model = model.to(args.device)
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(lengths)
    if limit is not None and mode == "plain" and longest + 64 > limit:
        raise SystemExit(f"{args.model} has {limit} positions; a plain trace of {longest} tokens plus its prompt does not fit")
    recorder = ForwardRecorder(model)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        generate_mode(
            model, tokenizer, mode, longest, recorder, batch_size=args.batch_size,
            chunk=args.chunk, carry=args.carry, head=args.head, seed=args.seed,
        )
    except _Stopped:
        # killed by a time limit: report the lengths the run reached (a prefix is a full row)
        lengths = [n for n in lengths if n <= len(recorder.times)]
        print(f"stopped after {len(recorder.times)} tokens; reporting {lengths}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
        recorder.close()
    return rows_from_run(mode, recorder.start, recorder, lengths, batch_size=args.batch_size, device=args.device)


class _Stopped(Exception):
    pass


def _stop(signum, frame):
    raise _Stopped()


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rows = []
    for mode in args.modes:
        if not args.fresh_process:
            mode_rows = measure(args, mode, args.lengths)
        else:
            mode_rows = []
            for length in args.lengths:
                child = [sys.executable, "-m", "benchmarks.markovian_cost", "--child", mode, str(length)]
                child += [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--fresh-process"]
                output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
                mode_rows.append(json.loads(output.strip().splitlines()[-1]))
        for row in mode_rows:
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps(summary(rows)), flush=True)
    return 0


def child_main(argv) -> int:
    """``--child MODE LENGTH [options]``: one row in a fresh process, with its peak RSS."""
    mode, length, rest = argv[0], int(argv[1]), argv[2:]
    args = parse_args(rest)
    row = measure(args, mode, [length])[0]
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(main())
