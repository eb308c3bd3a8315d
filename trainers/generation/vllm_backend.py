"""``GenerationBackend`` on vLLM, run in its own virtual environment behind a small client.

vLLM pins its own torch and transformers, so it cannot share the trainer's environment. The
engine runs in a worker process started with the vLLM environment's python
(``trainers/generation/vllm_worker.py``, ``vllm.LLM`` in-process there); ``VLLMBackend`` is
the client in the trainer's process. Only plain data crosses: token ids in, token ids and
log-probs out (pickles on a pipe), and new weights as a safetensors file (in ``/dev/shm``
when it has room, else on disk: `staging_folder`) whose path is sent.

Agreement with the transformers backend (``trainers.generation.base``): prompts are
tokenised here with ``encode_prompts`` and sent as ``TokensPrompt`` token ids (vLLM never
tokenises or decodes: ``skip_tokenizer_init``); log-probs are the raw model
distribution's (``logprobs_mode="raw_logprobs"``: temperature 1, no top-p); the stop
tokens are ``stop_token_ids`` (by default ``default_stop_token_ids``) and no others (vLLM's
own eos handling is off; ``[]`` never stops early), and a stopped response ends with its
stop token; ``max_new_tokens`` may give one budget per prompt;
``score_choices`` sums vLLM's prompt log-probs of the candidate tokens after the prompt.
Sampling is seeded per request (request i of a call seeded s gets its own seed derived
from (s, i)), so the same call gives the same outputs; the numbers are vLLM's, not the
transformers sampler's.

Weights: ``load_weights(model)`` (or a state dict) after every learner update puts the new
weights into the running engine by the path the worker chose for its device and vLLM
version (``vllm_worker.weight_update_path``: a layer-wise reload on CPU, every
tensor-parallel rank loading its shards on CUDA), then the prefix cache is reset, since
cached KV blocks hold the old weights' keys and values.
A LoRA-wrapped model is merged on the fly (base + scale * B @ A) without touching it.

Setup: ``bash scripts/test-vllm.sh --setup-only`` makes ``.venv-vllm`` (the default
``vllm_python`` is ``.venv-vllm/bin/python``, looked up from the working directory, then
from the repository root).
"""

from __future__ import annotations

import os
import pickle
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainers.generation.base import Generation, Prompt, default_stop_token_ids, encode_choice, encode_prompts, prompt_budgets

DEFAULT_VLLM_PYTHON = ".venv-vllm/bin/python"
VLLM_PYTHON_ENV = "SELFPLAY_VLLM_PYTHON"  # where scripts/test-vllm.sh points the tests when VLLM_VENV moves the environment
SETUP_COMMAND = "bash scripts/test-vllm.sh --setup-only"
WORKER_SCRIPT = Path(__file__).with_name("vllm_worker.py")
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

_HEADER = struct.Struct(">Q")  # the worker's framing: 8-byte big-endian length, then a pickle
_LOG_LINES_IN_ERRORS = 40


class VLLMUnavailableError(ModuleNotFoundError):
    """The vLLM environment is missing or cannot import vLLM (the CLI reports it like a missing module)."""


class VLLMWorkerError(RuntimeError):
    """The vLLM worker failed a request, died, or did not answer in time."""


class VLLMUnsupportedModelError(VLLMWorkerError, ValueError):
    """vLLM cannot run this model on this machine (a user choice to change, hence a ValueError too)."""


def find_vllm_python(python: str | os.PathLike | None = None) -> Path:
    """The python of the vLLM environment: `python` if given, else ``$SELFPLAY_VLLM_PYTHON``,
    else ``.venv-vllm/bin/python``.

    A relative path is looked up from the working directory, then from the repository root.
    Raises ``VLLMUnavailableError`` naming the setup command when it does not exist.
    """
    name = Path(python or os.environ.get(VLLM_PYTHON_ENV) or DEFAULT_VLLM_PYTHON).expanduser()
    candidates = [name] if name.is_absolute() else [Path.cwd() / name, REPOSITORY_ROOT / name]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise VLLMUnavailableError(
        f"generation=vllm needs the vLLM virtual environment's python, {name} "
        f"(looked in {', '.join(str(c) for c in candidates)}), which does not exist; "
        f"create it with: {SETUP_COMMAND} (or name another one with vllm_python=PATH)"
    )


def vllm_available(python: str | os.PathLike | None = None) -> bool:
    """Whether the vLLM environment exists (without starting it)."""
    try:
        find_vllm_python(python)
    except VLLMUnavailableError:
        return False
    return True


def export_weights(source) -> dict:
    """Hugging Face-named tensors of a model (LoRA merged) or of a state dict, ready to save.

    A ``peft`` LoRA model gives its base model's names, with each adapted weight replaced by
    ``W + scale * B @ A`` of its active adapters (the model itself is not changed). Tensors
    that share storage (tied embeddings) are kept once, under their first name: the
    engine ties them again from the model config. Every tensor is detached, contiguous and
    on the CPU.
    """
    import torch

    if isinstance(source, Mapping):
        items = list(source.items())
        deltas = {}
    else:
        base = source.get_base_model() if hasattr(source, "get_base_model") else source
        deltas = _lora_deltas(base)
        items = list(base.state_dict().items())
    weights, seen = {}, set()
    with torch.no_grad():
        for name, tensor in items:
            if ".lora_" in name or name.startswith("lora_"):
                continue
            clean = name.replace(".base_layer.", ".")
            if tensor.numel() and tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            value = tensor.detach()
            if clean in deltas:
                value = value + deltas[clean].to(value.dtype)
            weights[clean] = value.to("cpu").contiguous()
    return weights


def _lora_deltas(base) -> dict:
    """``{weight name: scale * B @ A}`` for every unmerged LoRA layer of `base` with active adapters."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return {}
    import torch

    deltas = {}
    with torch.no_grad():
        for name, module in base.named_modules():
            if not isinstance(module, LoraLayer) or getattr(module, "merged", False) or module.disable_adapters:
                continue
            active = [a for a in module.active_adapters if a in module.lora_A]
            if active:
                deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in active)
    return deltas


def save_model_folder(model, folder: Path) -> Path:
    """Write `model` (LoRA merged) as a Hugging Face folder vLLM can load: config, generation config, weights."""
    from safetensors.torch import save_file

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    folder.mkdir(parents=True, exist_ok=True)
    base.config.save_pretrained(folder)
    generation_config = getattr(base, "generation_config", None)
    if generation_config is not None:
        generation_config.save_pretrained(folder)
    save_file(export_weights(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


class VLLMBackend:
    """``GenerationBackend`` over a vLLM engine in a worker process (see the module docstring).

    ``VLLMBackend(folder, tokenizer)`` serves a Hugging Face folder;
    ``VLLMBackend.from_model(model, tokenizer)`` serves an in-memory model (written to a
    temporary folder first), which is what a training run does. The worker is stopped by
    ``close()``, by leaving a ``with`` block, when the backend is garbage-collected, or at
    interpreter exit.

    Options: ``python`` (the vLLM environment's python), ``dtype`` (float32 by default:
    vLLM's CPU bfloat16 output was wrong on the development machine), ``seed`` (the engine's
    own seed; sampling uses each call's), ``max_model_len`` (prompt plus response; default
    the model's positions, at most 8192), ``kv_cache_gib`` (CPU KV cache), ``threads``
    (OpenMP/torch threads of the engine; default ``$OMP_NUM_THREADS``, else the CPU count),
    ``enforce_eager`` (skip graph compilation: much faster to start on CPU),
    ``startup_timeout_s`` and ``request_timeout_s`` (a worker that does not answer in time
    is stopped and the call raises ``VLLMWorkerError``), ``log_path`` (the worker's
    output; by default a file in a temporary folder, quoted in errors).
    """

    per_prompt_max_new_tokens = True
    """``generate`` accepts one budget per prompt (see ``trainers.generation.base``)."""

    def __init__(
        self,
        model_folder: str | os.PathLike,
        tokenizer,
        *,
        python: str | os.PathLike | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        seed: int = 0,
        stop_token_ids: Sequence[int] | None = None,
        max_model_len: int | None = None,
        kv_cache_gib: int = 2,
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        max_num_seqs: int = 256,
        threads: int | None = None,
        enforce_eager: bool | None = None,
        startup_timeout_s: float = 900.0,
        request_timeout_s: float = 3600.0,
        log_path: str | os.PathLike | None = None,
        _owned_folder: Path | None = None,
    ):
        self.tokenizer = tokenizer
        self.request_timeout_s = request_timeout_s
        self._lock = threading.Lock()
        self._process = None
        engine = engine_options(device, dtype=dtype, enforce_eager=enforce_eager, tensor_parallel_size=tensor_parallel_size,
                                gpu_memory_utilization=gpu_memory_utilization)
        python = find_vllm_python(python)
        folder = Path(model_folder).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json)")
        if stop_token_ids is None:
            stop_token_ids = default_stop_token_ids(_GenerationConfigHolder(folder), tokenizer)
        self.stop_token_ids = sorted(set(int(t) for t in stop_token_ids))
        self._scratch = Path(tempfile.mkdtemp(prefix="selfplay-vllm-"))
        shm = Path("/dev/shm")
        self._weights_dir = Path(tempfile.mkdtemp(prefix="selfplay-vllm-weights-", dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else self._scratch
        self.log_path = Path(log_path) if log_path else self._scratch / "vllm_worker.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        environment = dict(os.environ)
        environment.update(
            VLLM_ENABLE_V1_MULTIPROCESSING="0",
            VLLM_CPU_KVCACHE_SPACE=str(int(kv_cache_gib)),
            OMP_NUM_THREADS=str(threads or os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        environment.pop("PYTHONPATH", None)
        if device.startswith("cuda:"):  # the engine's first GPU is the one asked for
            environment["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        with open(self.log_path, "ab") as log:
            # Own process group: close() can stop the worker and anything it started, by its id.
            self._process = subprocess.Popen(
                [str(python), "-I", str(WORKER_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=environment,
                cwd=str(self._scratch),
                start_new_session=True,
            )
        self._finalizer = weakref.finalize(
            self, _stop_worker, self._process, [self._scratch, self._weights_dir, _owned_folder]
        )
        options = {
            "model": str(folder),
            "seed": int(seed),
            "max_model_len": max_model_len or _default_max_model_len(folder),
            "max_num_seqs": int(max_num_seqs),
            **engine,
        }
        started = time.perf_counter()
        try:
            self.info = self._request({"op": "start", "options": options}, timeout_s=startup_timeout_s)
        except VLLMWorkerError as error:
            self.close()
            if "No module named 'vllm'" in str(error) or "ModuleNotFoundError" in str(error):
                raise VLLMUnavailableError(f"{python} cannot import vllm; recreate its environment with: {SETUP_COMMAND}\n{error}") from None
            if "Unsupported CPU attention configuration" in str(error):
                raise VLLMUnsupportedModelError(
                    f"vLLM's CPU attention cannot run this model ({folder}): its head size is not one its kernels "
                    f"support (32, 64, 80, 96, 112, 128, ...; tiny-random's is 16). Use a real model "
                    f"such as smollm2-135m, or generation=transformers.\n{error}"
                ) from None
            raise
        self.info["startup_s"] = round(time.perf_counter() - started, 1)
        self.max_model_len = int(self.info["max_model_len"])
        if _owned_folder is not None:  # the engine holds the weights now; the export is no longer needed
            shutil.rmtree(_owned_folder, ignore_errors=True)

    @classmethod
    def from_model(cls, model, tokenizer, **options) -> "VLLMBackend":
        """Serve the current weights of an in-memory model (a LoRA model is merged)."""
        folder = Path(tempfile.mkdtemp(prefix="selfplay-vllm-model-"))
        try:
            save_model_folder(model, folder)
            options.setdefault("stop_token_ids", default_stop_token_ids(_base(model), tokenizer))
            return cls(folder, tokenizer, _owned_folder=folder, **options)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    # -- GenerationBackend --------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int | Sequence[int],
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int,
        batch_size: int = 8,
    ) -> list[Generation]:
        """One sampled response per prompt, in prompt order (see the module docstring).

        ``temperature=0`` is greedy. ``max_new_tokens`` is one budget for every prompt or one
        per prompt. ``batch_size`` is accepted for the protocol's sake: vLLM schedules its
        own batches.
        """
        budgets = prompt_budgets(max_new_tokens, len(prompts))
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        if any(len(ids) == 0 for ids in prompt_ids):
            raise ValueError("every prompt needs at least one token to condition the response on")
        self._check_lengths(prompt_ids)
        if not prompt_ids:
            return []
        results = self._request(
            {
                "op": "generate",
                "prompt_ids": prompt_ids,
                "max_new_tokens": budgets,
                "temperature": float(temperature),
                "top_p": float(top_p),
                "seed": int(seed),
                "stop_token_ids": self.stop_token_ids,
            }
        )
        generations = []
        for ids, result in zip(prompt_ids, results):
            response = list(result["response_ids"])
            stopped = result["finish_reason"] == "stop"
            text_ids = response[:-1] if stopped else response
            generations.append(
                Generation(
                    text=self.tokenizer.decode(text_ids, skip_special_tokens=True),
                    prompt_ids=ids,
                    response_ids=response,
                    logprobs=list(result["logprobs"]),
                    finish_reason="stop" if stopped else "length",
                )
            )
        return generations

    def score_choices(
        self, prompts: Sequence[Prompt], choices: Sequence[Sequence[str]], *, batch_size: int = 16
    ) -> list[list[float]]:
        """Sequence log-prob of every candidate continuation of every prompt.

        ``result[i][j]`` sums vLLM's prompt log-probs of ``encode_choice(tokenizer,
        choices[i][j])`` appended to ``encode_prompts(tokenizer, [prompts[i]])[0]``.
        ``batch_size`` is accepted for the protocol's sake.
        """
        if len(prompts) != len(choices):
            raise ValueError("prompts and choices must have the same length")
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        if any(len(ids) == 0 for ids in prompt_ids):
            raise ValueError("every prompt needs at least one token to condition the response on")
        candidate_ids = [[encode_choice(self.tokenizer, c) for c in candidates] for candidates in choices]
        if any(len(c) == 0 for candidates in candidate_ids for c in candidates):
            raise ValueError("every candidate needs at least one token")
        self._check_lengths([p + max(c, key=len) for p, c in zip(prompt_ids, candidate_ids) if c], reserve=1)
        if not prompt_ids:
            return []
        return self._request({"op": "score", "prompt_ids": prompt_ids, "candidate_ids": candidate_ids})

    # -- weights ------------------------------------------------------------------------
    def load_weights(self, source) -> int:
        """Put new weights into the running engine; returns the number of tensors loaded.

        `source` is a model (``torch.nn.Module``, LoRA-wrapped or not) or a state dict with
        Hugging Face names. Call it after every learner update: the next call generates
        with these weights.
        """
        from safetensors.torch import save_file

        weights = export_weights(source)
        folder = staging_folder([self._weights_dir, self._scratch], sum(t.numel() * t.element_size() for t in weights.values()))
        path = folder / f"weights-{os.getpid()}-{time.monotonic_ns()}.safetensors"
        try:
            save_file(weights, str(path))
            del weights
            return int(self._request({"op": "load_weights", "path": str(path)}))
        finally:
            path.unlink(missing_ok=True)

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Stop the worker and remove the temporary files (idempotent)."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> "VLLMBackend":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- protocol -----------------------------------------------------------------------
    def _check_lengths(self, sequences, reserve: int = 0) -> None:
        limit = getattr(self, "max_model_len", None)
        for ids in sequences:
            if limit is not None and len(ids) + reserve > limit:
                raise ValueError(
                    f"a prompt of {len(ids)} tokens does not fit the engine's max_model_len={limit}; "
                    f"start VLLMBackend with a larger max_model_len"
                )

    def _request(self, message: dict, timeout_s: float | None = None):
        with self._lock:
            if not self.alive:
                raise VLLMWorkerError(f"the vLLM worker has stopped{self._log_tail()}")
            timeout_s = self.request_timeout_s if timeout_s is None else timeout_s
            body = pickle.dumps(message, protocol=4)
            try:
                self._process.stdin.write(_HEADER.pack(len(body)) + body)
                self._process.stdin.flush()
                reply = pickle.loads(self._read_reply(time.monotonic() + timeout_s, message["op"], timeout_s))
            except (BrokenPipeError, EOFError) as error:
                self._process.wait(timeout=30)
                raise VLLMWorkerError(
                    f"the vLLM worker exited (status {self._process.returncode}) during {message['op']!r}"
                    f"{self._log_tail()}"
                ) from error
        if not reply.get("ok"):
            raise VLLMWorkerError(f"the vLLM worker failed {message['op']!r}:\n{reply.get('error')}")
        return reply["result"]

    def _read_reply(self, deadline: float, op: str, timeout_s: float) -> bytes:
        header = self._read_exactly(_HEADER.size, deadline, op, timeout_s)
        (length,) = _HEADER.unpack(header)
        return self._read_exactly(length, deadline, op, timeout_s)

    def _read_exactly(self, size: int, deadline: float, op: str, timeout_s: float) -> bytes:
        stream = self._process.stdout
        chunks, remaining = [], size
        while remaining:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([stream], [], [], max(0.0, left))
            if not ready:
                _stop_worker(self._process, [])
                raise VLLMWorkerError(
                    f"the vLLM worker did not answer {op!r} within {timeout_s:.0f} s and was stopped{self._log_tail()}"
                )
            chunk = os.read(stream.fileno(), min(remaining, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-_LOG_LINES_IN_ERRORS:]
        except OSError:
            return ""
        return f"; the end of its log ({self.log_path}):\n" + "\n".join(lines) if lines else ""


def start_for_run(model, tokenizer, config) -> VLLMBackend:
    """The vLLM backend of a training run (``generation=vllm``), serving `model`'s current weights.

    Reads the run config's ``vllm_python``, ``seed``, ``threads``, ``device``,
    ``vllm_tensor_parallel`` and ``vllm_gpu_memory`` (`engine_options` picks dtype and
    CUDA graphs by device). The trainer calls ``load_weights(model)`` after every update.
    """
    return VLLMBackend.from_model(
        model,
        tokenizer,
        python=getattr(config, "vllm_python", None) or None,
        seed=config.seed,
        threads=getattr(config, "threads", 0) or None,
        device=config.device,
        tensor_parallel_size=config.vllm_tensor_parallel,
        gpu_memory_utilization=config.vllm_gpu_memory,
    )


def engine_options(device: str, *, dtype: str | None = None, enforce_eager: bool | None = None,
                   tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.5) -> dict:
    """The engine settings that depend on where it runs.

    CPU: float32 (vLLM's CPU bfloat16 output was wrong on the development machine), eager
    execution (CUDA graphs do not exist there), tensor parallel 1, and the KV cache sized
    by ``kv_cache_gib`` instead of a share of GPU memory. CUDA: bfloat16, CUDA graphs, and
    ``gpu_memory_utilization`` of each GPU for weights and KV cache, leaving the rest to
    the learner that shares the GPU.
    """
    if device == "cpu":
        if tensor_parallel_size != 1:
            raise ValueError(f"vLLM on CPU runs with tensor parallel 1; got {tensor_parallel_size} (device=cpu)")
        return {"dtype": dtype or "float32", "enforce_eager": True if enforce_eager is None else enforce_eager,
                "tensor_parallel_size": 1}
    if not 0 < gpu_memory_utilization < 1:
        raise ValueError(f"gpu_memory_utilization must lie in (0, 1); got {gpu_memory_utilization}")
    return {"dtype": dtype or "bfloat16", "enforce_eager": False if enforce_eager is None else enforce_eager,
            "tensor_parallel_size": int(tensor_parallel_size), "gpu_memory_utilization": float(gpu_memory_utilization)}


STAGING_HEADROOM_BYTES = 64 * 2**20
"""Free space kept beyond the weights themselves when staging them for the engine."""


def staging_folder(candidates: Sequence[Path], size: int) -> Path:
    """The first folder (``/dev/shm`` first, then disk) with room for `size` bytes of weights.

    /dev/shm is often small in containers (64 MiB by default under Docker); a full one
    would fail the write halfway, or take memory the learner needs, so its free space is
    checked first.
    """
    for folder in dict.fromkeys(Path(c) for c in candidates):
        if shutil.disk_usage(folder).free >= size + STAGING_HEADROOM_BYTES:
            return folder
    listed = ", ".join(f"{c} ({shutil.disk_usage(c).free / 2**20:.0f} MiB free)" for c in dict.fromkeys(Path(c) for c in candidates))
    raise OSError(f"no room to stage {size / 2**20:.0f} MiB of weights for the vLLM engine: {listed}")


class _GenerationConfigHolder:
    """What ``default_stop_token_ids`` reads from a model (its generation config), read from a folder."""

    def __init__(self, folder: Path):
        self.generation_config = None
        if (folder / "generation_config.json").is_file():
            from transformers import GenerationConfig

            self.generation_config = GenerationConfig.from_pretrained(folder)


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _default_max_model_len(folder: Path) -> int:
    import json

    config = json.loads((folder / "config.json").read_text())
    return min(int(config.get("max_position_embeddings") or 8192), 8192)


def _stop_worker(process, folders) -> None:
    """Close the worker's input (it exits at end of input), then kill its process group if it lingers."""
    if process is not None and process.poll() is None:
        try:
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                process.kill()
            process.wait(timeout=30)
    if process is not None:
        for stream in (process.stdin, process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
    for folder in folders:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


if sys.platform == "win32":  # pragma: no cover - select() on pipes is POSIX-only
    raise ImportError("trainers.generation.vllm_backend needs a POSIX system (select on pipes)")
