"""How the vLLM engine is set up per device and version, without starting vLLM.

The engine itself needs the vLLM environment (tests/test_vllm_backend.py, CPU) or a GPU
(benchmarks/gpu_check.py); what is decided before it starts is checked here: dtype,
CUDA graphs, tensor parallel and memory share by device, the weight-update path by vLLM
version, and where new weights are staged when /dev/shm is short of room.
"""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from trainers.run.config import parse_overrides
from trainers.generation import vllm_backend
from trainers.generation.vllm_backend import engine_options, staging_folder, start_for_run
from trainers.generation.vllm_worker import weight_update_path


def test_cpu_runs_float32_eager_with_one_engine_rank():
    assert engine_options("cpu") == {"dtype": "float32", "enforce_eager": True, "tensor_parallel_size": 1}
    with pytest.raises(ValueError, match="tensor parallel 1"):
        engine_options("cpu", tensor_parallel_size=2)


def test_cuda_runs_bfloat16_with_cuda_graphs_and_leaves_the_learner_its_share():
    assert engine_options("cuda:0", tensor_parallel_size=4, gpu_memory_utilization=0.35) == {
        "dtype": "bfloat16", "enforce_eager": False, "tensor_parallel_size": 4, "gpu_memory_utilization": 0.35,
    }
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        engine_options("cuda", gpu_memory_utilization=1.0)


@pytest.mark.parametrize(
    "version, tensor_parallel, on_cpu, path",
    [
        ("0.32.0+cpu", 1, True, "iterator"),  # the pinned CPU build: layer-wise reload
        ("0.29.0", 1, False, "file"),  # OpenRLHF 0.11.2's CUDA pin
        ("0.29.0", 8, False, "file"),  # every rank loads its shards
        ("0.8.5", 2, False, "file"),
    ],
)
def test_the_weight_update_path_follows_device_version_and_tensor_parallel(version, tensor_parallel, on_cpu, path):
    assert weight_update_path(version, tensor_parallel, on_cpu) == path


def test_too_old_a_vllm_or_cpu_tensor_parallel_is_refused():
    with pytest.raises(RuntimeError, match="older than 0.8.5"):
        weight_update_path("0.7.3", 1, False)
    with pytest.raises(RuntimeError, match="tensor parallel 1"):
        weight_update_path("0.32.0", 2, True)


Usage = namedtuple("Usage", "total used free")


def test_weights_are_staged_on_disk_when_shm_is_short_of_room(tmp_path, monkeypatch):
    shm, disk = tmp_path / "shm", tmp_path / "disk"
    shm.mkdir()
    disk.mkdir()
    free = {shm: 256 * 2**20, disk: 10 * 2**30}  # a container's small /dev/shm
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(0, 0, free[Path(path)]))
    assert staging_folder([shm, disk], 500 * 2**20) == disk
    assert staging_folder([shm, disk], 1 * 2**20) == shm
    free[disk] = 100 * 2**20
    with pytest.raises(OSError, match=r"no room to stage 500 MiB.*shm \(256 MiB free\)"):
        staging_folder([shm, disk], 500 * 2**20)


def test_a_run_hands_device_tensor_parallel_and_memory_share_to_the_engine(monkeypatch):
    seen = {}
    monkeypatch.setattr(vllm_backend.VLLMBackend, "from_model", classmethod(lambda cls, model, tokenizer, **kw: seen.update(kw)))
    config = parse_overrides(["generation=vllm", "device=cuda:1", "vllm_tensor_parallel=2", "vllm_gpu_memory=0.3", "seed=4"])
    start_for_run(None, None, config)
    assert {k: seen[k] for k in ("device", "tensor_parallel_size", "gpu_memory_utilization", "seed")} == {
        "device": "cuda:1", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.3, "seed": 4,
    }


@pytest.mark.parametrize("key", ["vllm_gpu_memory=0.3", "vllm_tensor_parallel=2"])
def test_vllm_gpu_keys_are_refused_where_no_vllm_runs_on_a_gpu(key):
    with pytest.raises(ValueError, match=key.split("=")[0]):
        parse_overrides([key])
    with pytest.raises(ValueError, match=key.split("=")[0]):
        parse_overrides(["generation=vllm", key])  # vLLM on the CPU
