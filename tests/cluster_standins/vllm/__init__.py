"""vLLM stand-in: the async engine OpenRLHF 0.11.2's `RolloutRayActor` drives, on the CPU.

`AsyncLLMEngine` samples with a transformers model (`local_engine.LocalEngine`: it stops
where vLLM stops, at the eos ids and `stop_token_ids`), keeps vLLM's sleep / wake-up state
(generating while asleep is an error, as the real engine would answer from freed memory),
joins a one-rank torch.distributed world as a vLLM worker does, and runs `collective_rpc` on a worker built from the engine arguments'
`worker_extension_cls` - OpenRLHF's own `WorkerWrap` - whose `model_runner.model.load_weights`
copies into the sampling model. Every weight load and generation is appended to the file
named by $REHEARSAL_LOG (JSON lines), so the rehearsal can check what the engine served.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from types import SimpleNamespace

import cpu_cuda

__version__ = "0.29.0"  # the release OpenRLHF 0.11.2 pins (its vllm extra)

cpu_cuda.install()


@dataclass
class SamplingParams:
    """The fields of `vllm.SamplingParams` that OpenRLHF and the agent read or set."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int | None = 16
    min_tokens: int = 0
    skip_special_tokens: bool = True
    logprobs: int | None = None
    stop_token_ids: list[int] | None = field(default=None)
    seed: int | None = None


class AsyncEngineArgs:
    def __init__(self, model: str, dtype: str = "auto", seed: int = 0, worker_extension_cls: str = "", **kwargs):
        self.model = model
        self.dtype = dtype
        self.seed = seed
        self.worker_extension_cls = worker_extension_cls
        self.options = kwargs


def log_event(event: str, **fields) -> None:
    path = os.environ.get("REHEARSAL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


class _WeightLoader:
    """`model_runner.model` of a vLLM worker: `load_weights` copies into the sampling model."""

    def __init__(self, model):
        self.model = model
        self.parameters = dict(model.named_parameters())
        self.loaded = 0

    def load_weights(self, weights):
        import torch

        with torch.no_grad():
            for name, tensor in weights:
                self.parameters[name].copy_(tensor.to(self.parameters[name].dtype))
                self.loaded += 1
        if self.loaded == len(self.parameters):
            log_event("engine_weights_loaded", checksum=weights_checksum(self.model))
            self.loaded = 0


def weights_checksum(model) -> float:
    """A float summary of the weights, equal when the same values are loaded."""
    import torch

    with torch.no_grad():
        return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


class _CpuWorker:
    def __init__(self, model, dtype):
        import torch

        self.device = torch.device("cpu")
        self.model_config = SimpleNamespace(dtype=dtype)
        self.model_runner = SimpleNamespace(model=_WeightLoader(model))


def _init_worker_process_group() -> None:
    """A vLLM worker runs inside a torch.distributed world of its tensor-parallel ranks
    (OpenRLHF's `WorkerWrap` asks for its rank); here a world of one, over gloo."""
    import socket

    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


class AsyncLLMEngine:
    @classmethod
    def from_engine_args(cls, args: AsyncEngineArgs) -> "AsyncLLMEngine":
        return cls(args)

    def __init__(self, args: AsyncEngineArgs):
        import torch
        from local_engine import LocalEngine
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)
        _init_worker_process_group()
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        self.engine = LocalEngine(model, tokenizer, seed=args.seed)
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(args.dtype, torch.float32)
        module, _, name = args.worker_extension_cls.rpartition(".")
        extension = getattr(importlib.import_module(module), name) if module else object
        self.worker = type("RehearsalWorker", (extension, _CpuWorker), {})(model, dtype)
        self.sleeping = False
        self.unfinished = 0
        self.output_processor = SimpleNamespace(get_num_unfinished_requests=lambda: self.unfinished)
        log_event("engine_started", model=args.model, seed=args.seed, checksum=weights_checksum(model))

    async def is_sleeping(self) -> bool:
        return self.sleeping

    async def sleep(self, level: int = 1) -> None:
        self.sleeping = True

    async def wake_up(self, tags=None) -> None:
        self.sleeping = False

    async def reset_prefix_cache(self) -> None:
        return None

    async def collective_rpc(self, method: str, args=(), kwargs=None):
        return [getattr(self.worker, method)(*args, **(kwargs or {}))]

    async def generate(self, prompt, sampling_params, request_id=None):
        if self.sleeping:
            raise RuntimeError("generate() on a sleeping engine: OpenRLHF must wake the engines before a rollout")
        self.unfinished += 1
        try:
            output = await self.engine.generate(prompt["prompt_token_ids"], sampling_params)
        finally:
            self.unfinished -= 1
        completion = output.outputs[0]
        log_event("generate", prompt_tokens=len(prompt["prompt_token_ids"]), tokens=len(completion.token_ids),
                  finish_reason=completion.finish_reason, stop_token_ids=sampling_params.stop_token_ids,
                  max_tokens=sampling_params.max_tokens)
        yield output
