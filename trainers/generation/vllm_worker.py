"""The vLLM engine process behind ``trainers.generation.vllm_backend.VLLMBackend``.

vLLM pins its own torch and transformers, so it lives in its own virtual environment
(``bash scripts/test-vllm.sh`` makes ``.venv-vllm``) and this file runs there, started by
the client as ``<vllm venv>/bin/python -I vllm_worker.py``. It imports nothing from this
project (only the standard library, torch, safetensors and vllm), and nothing but plain
data crosses between the two processes, so the two sides may run different torch versions.

Protocol: length-prefixed pickles (8-byte big-endian length, then a pickle of plain
Python data: dicts, lists, ints, floats, strings) on the process's original stdin and
stdout. Everything the process or vLLM prints goes to stderr (the client's log file).

    client -> worker: {"op": "start", "model": folder, "dtype": ..., ...}   (first message)
    worker -> client: {"ok": True, "result": {"vllm": version, ...}}
    client -> worker: {"op": "generate" | "score" | "load_weights" | "ping" | "shutdown", ...}
    worker -> client: {"ok": True, "result": ...} or {"ok": False, "error": traceback text}

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``); with tensor
parallel > 1 vLLM starts one process per further GPU. New weights arrive as a safetensors
file; how they reach the model is chosen once per engine (`weight_update_path`):

* ``iterator`` (CPU): the worker's ``reload_weights(weights_iterator=...)``, vLLM's
  layer-wise reload, which also redoes the CPU runner's repacking of linear weights (a
  plain ``load_weights`` into the running CPU model fails). The iterator cannot cross
  processes, so this path is tensor parallel 1 only.
* ``file`` (CUDA): every worker process (one per tensor-parallel rank) reads the file,
  ``model.load_weights`` takes its shard of each tensor, and vLLM's
  ``process_weights_after_loading`` runs, imported from where the installed version keeps
  it. Works for any tensor-parallel size.

The worker exits when its stdin closes (the client died or closed it).
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import traceback

_HEADER = struct.Struct(">Q")


def read_message(stream):
    """One message from a binary stream, or None at end of file."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    body = _read_exactly(stream, length) if length else b""
    if body is None:
        raise EOFError("the stream ended inside a message")
    return pickle.loads(body)


def write_message(stream, message) -> None:
    body = pickle.dumps(message, protocol=4)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _read_exactly(stream, size: int):
    chunks, remaining = [], size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if remaining == size:
                return None
            raise EOFError("the stream ended inside a message")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


MIN_VLLM = (0, 8, 5)
"""Oldest vLLM the worker drives (V1 engine, ``collective_rpc`` with a callable; OpenRLHF's floor too)."""


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def weight_update_path(vllm_version: str, tensor_parallel: int, on_cpu: bool) -> str:
    """How new weights reach the running model: ``iterator`` or ``file`` (module docstring)."""
    if _version_tuple(vllm_version) < MIN_VLLM:
        raise RuntimeError(f"vLLM {vllm_version} is older than {'.'.join(map(str, MIN_VLLM))}, the oldest this worker drives")
    if on_cpu:
        if tensor_parallel != 1:
            raise RuntimeError(f"vLLM on CPU runs with tensor parallel 1 (asked for {tensor_parallel})")
        return "iterator"
    return "file"


def _load_weights_from_file(worker, path: str) -> int:
    """Run in each vLLM worker process (``collective_rpc``): load every weight of `path`, take
    this rank's shards, then vLLM's post-processing (repacking, quantisation scales)."""
    import vllm
    from safetensors.torch import load_file

    if _version_tuple(vllm.__version__) >= (0, 9, 0):
        from vllm.model_executor.model_loader.utils import process_weights_after_loading
    else:
        from vllm.model_executor.model_loader.loader import _process_weights_after_loading as process_weights_after_loading
    runner = worker.model_runner
    model = runner.model
    weights = load_file(path)
    model.load_weights(weights=weights.items())
    device = next(model.parameters()).device
    process_weights_after_loading(model, runner.model_config, device)
    return len(weights)


def request_seed(seed: int, index: int) -> int:
    """The sampling seed of request `index` of a call seeded with `seed` (distinct per request)."""
    return (seed * 1_000_003 + index * 7_919 + 1) % (2**63 - 1)


class Engine:
    """A ``vllm.LLM`` and the few operations the client asks of it."""

    def __init__(self, options: dict):
        import torch
        import vllm
        from vllm import LLM

        tensor_parallel = int(options.get("tensor_parallel_size", 1))
        self.weight_update = weight_update_path(vllm.__version__, tensor_parallel, on_cpu=not torch.cuda.is_available())
        on_gpu = {"gpu_memory_utilization": float(options["gpu_memory_utilization"])} if options.get("gpu_memory_utilization") else {}
        self.llm = LLM(
            options["model"],
            dtype=options.get("dtype", "float32"),
            seed=int(options.get("seed", 0)),
            max_model_len=options.get("max_model_len"),
            max_num_seqs=int(options.get("max_num_seqs", 256)),
            enforce_eager=bool(options.get("enforce_eager", True)),
            tensor_parallel_size=tensor_parallel,
            **on_gpu,
            enable_prefix_caching=True,
            # Token ids in, token ids out: the client tokenises and decodes with its own
            # tokenizer, so vLLM never needs (or disagrees about) one.
            skip_tokenizer_init=True,
            # The log-prob convention of trainers.generation.base: the raw model distribution.
            logprobs_mode="raw_logprobs",
        )

    def info(self) -> dict:
        import torch
        import vllm

        config = self.llm.llm_engine.model_config
        return {
            "vllm": vllm.__version__,
            "torch": torch.__version__,
            "max_model_len": config.max_model_len,
            "dtype": str(config.dtype),
            "pid": os.getpid(),
            "weight_update": self.weight_update,
        }

    def generate(self, prompt_ids, max_new_tokens, temperature, top_p, seed, stop_token_ids) -> list[dict]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        budgets = [max_new_tokens] * len(prompt_ids) if isinstance(max_new_tokens, int) else max_new_tokens
        params = [
            SamplingParams(
                n=1,
                max_tokens=int(budgets[index]),
                temperature=float(temperature),
                top_p=float(top_p),
                seed=request_seed(int(seed), index),
                logprobs=0,  # the sampled token's log-prob only
                # The client's stop tokens are the only ones (an empty list never stops early).
                stop_token_ids=list(stop_token_ids),
                ignore_eos=True,
                detokenize=False,
            )
            for index in range(len(prompt_ids))
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids], params, use_tqdm=False
        )
        results = []
        for output in outputs:
            completion = output.outputs[0]
            tokens = list(completion.token_ids)
            logprobs = [float(position[token].logprob) for token, position in zip(tokens, completion.logprobs)]
            results.append(
                {
                    "response_ids": tokens,
                    "logprobs": logprobs,
                    "finish_reason": "stop" if completion.finish_reason == "stop" else "length",
                }
            )
        return results

    def score(self, prompt_ids, candidate_ids) -> list[list[float]]:
        """Summed prompt log-probs of each candidate's tokens after its prompt."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        pairs = [(tuple(p), tuple(c)) for p, candidates in zip(prompt_ids, candidate_ids) for c in candidates]
        distinct = list(dict.fromkeys(pairs))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p + c)) for p, c in distinct], params, use_tqdm=False
        )
        value = {}
        for (prompt, candidate), output in zip(distinct, outputs):
            positions = output.prompt_logprobs[len(prompt) :]
            value[(prompt, candidate)] = float(
                sum(position[token].logprob for token, position in zip(candidate, positions))
            )
        scores, start = [], 0
        for candidates in candidate_ids:
            scores.append([value[pair] for pair in pairs[start : start + len(candidates)]])
            start += len(candidates)
        return scores

    def load_weights(self, path: str) -> int:
        """Reload the running model's weights in place from a safetensors file (Hugging Face
        names, every weight of the model), by this engine's `weight_update` path."""
        from safetensors.torch import load_file

        if self.weight_update == "file":
            (count, *_) = self.llm.collective_rpc(_load_weights_from_file, args=(path,))
        else:
            weights = load_file(path)
            count = len(weights)
            self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": iter(weights.items()), "is_checkpoint_format": True}
            )
            if getattr(self.llm.llm_engine.model_config.hf_config, "tie_word_embeddings", False):
                self.llm.apply_model(_retie_output_embeddings)
        # Cached KV blocks were computed with the old weights.
        self.llm.reset_prefix_cache()
        return count


def _retie_output_embeddings(model) -> None:
    """Make a tied output layer compute with the reloaded input embeddings.

    The layer-wise reload post-processes the embeddings once, as ``embed_tokens``; the
    output layer that shares them keeps the GEMM kernel it prepared at start (on CPU a
    oneDNN handle built from the old weights), so it is pointed at the shared weight again
    and prepared anew.
    """
    head = getattr(model, "lm_head", None)
    embeddings = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embeddings is None or not hasattr(head, "weight"):
        raise RuntimeError(f"cannot find the tied output layer of {type(model).__name__}")
    if head.weight is not embeddings.weight:
        head.weight = embeddings.weight
    method = getattr(head, "quant_method", None)
    if method is not None:
        method.process_weights_after_loading(head)


def serve(requests, replies) -> None:
    """Answer requests until `shutdown` or end of input."""
    engine = None
    while True:
        try:
            message = read_message(requests)
        except EOFError:
            return
        if message is None:
            return
        op = message.get("op")
        try:
            if op == "start":
                engine = Engine(message["options"])
                # One token through the whole path, so that a model vLLM cannot run (e.g. an
                # attention head size its CPU kernels lack) fails here, not at the first rollout.
                engine.generate([[0]], 1, 0.0, 1.0, 0, [])
                result = engine.info()
            elif op == "shutdown":
                write_message(replies, {"ok": True, "result": None})
                return
            elif op == "ping":
                result = "pong"
            elif engine is None:
                raise RuntimeError(f"operation {op!r} before start")
            elif op == "generate":
                result = engine.generate(
                    message["prompt_ids"],
                    message["max_new_tokens"],
                    message["temperature"],
                    message["top_p"],
                    message["seed"],
                    message["stop_token_ids"],
                )
            elif op == "score":
                result = engine.score(message["prompt_ids"], message["candidate_ids"])
            elif op == "load_weights":
                result = engine.load_weights(message["path"])
            else:
                raise ValueError(f"unknown operation {op!r}")
        except Exception:  # the client raises it with the traceback; the log keeps it too
            error = traceback.format_exc()
            print(error, file=sys.stderr, flush=True)
            write_message(replies, {"ok": False, "error": error})
            continue
        write_message(replies, {"ok": True, "result": result})


def main() -> None:
    # Keep the protocol's streams for ourselves and send everything printed (by vLLM, by
    # C extensions, by print) to stderr, so no log line can corrupt a message.
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # collective_rpc sends `_load_weights_from_file` (a function of this script) to vLLM's
    # tensor-parallel worker processes by value, which vLLM allows only when asked to.
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    serve(requests, replies)


if __name__ == "__main__":  # vLLM may spawn processes that re-import the main module
    main()
