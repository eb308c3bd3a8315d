"""The `torch.cuda` calls that OpenRLHF makes on the rehearsal's CPU path, answered for the CPU.

`WorkerWrap.update_weight_cuda_ipc` looks up the IPC handle by the current device's uuid
and synchronizes afterwards; the trainer's helpers synchronize and empty caches. Called by
the `vllm` and `deepspeed` stand-ins, so only processes that load them are changed.
"""

import types

import torch

CPU_DEVICE_UUID = "rehearsal-cpu"


def install() -> None:
    torch.cuda.current_device = lambda: 0
    torch.cuda.synchronize = lambda *args, **kwargs: None
    torch.cuda.set_device = lambda *args, **kwargs: None
    torch.cuda.current_stream = lambda *args, **kwargs: None
    torch.cuda.get_device_properties = lambda *args, **kwargs: types.SimpleNamespace(uuid=CPU_DEVICE_UUID, name="cpu")


def tensor_by_value(tensor, *unused):
    """Rebuilds a weight sent in place of a CUDA IPC handle: the handle carries the tensor.

    `WorkerWrap.update_weight_cuda_ipc` calls `func(*args)` after overwriting `args[6]`
    (the CUDA device index), so the tensor travels first and six placeholders follow.
    """
    return tensor


def ipc_handle(tensor):
    """What the CPU actor sends where OpenRLHF sends `reduce_tensor(weight)`."""
    return tensor_by_value, (tensor, None, None, None, None, None, None)
