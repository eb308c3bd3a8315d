"""DeepSpeed stand-in: the names OpenRLHF 0.11.2 imports, nothing that trains.

In the rehearsal the model actor that would call DeepSpeed is the CPU actor of
`rehearsal_actor`, so what is left here is import-time surface and the strategy's
construction in the driver. Anything that would run DeepSpeed says so.
"""

import contextlib

import cpu_cuda

__version__ = "0.19.6"
version = __version__

cpu_cuda.install()


class DeepSpeedEngine:
    """Never built in the rehearsal; `isinstance` checks in OpenRLHF name it."""


def _needs_gpu(name):
    def call(*args, **kwargs):
        raise RuntimeError(f"deepspeed.{name} needs a GPU; the cluster rehearsal's CPU actor does not call it")

    return call


initialize = _needs_gpu("initialize")
init_distributed = _needs_gpu("init_distributed")
tp_model_init = _needs_gpu("tp_model_init")


class zero:  # noqa: N801 - the module-like namespace OpenRLHF uses (deepspeed.zero.GatheredParameters)
    @staticmethod
    def GatheredParameters(params, *args, enabled=True, **kwargs):  # noqa: N802
        return contextlib.nullcontext()

    Init = staticmethod(_needs_gpu("zero.Init"))


class utils:  # noqa: N801
    set_z3_leaf_modules = staticmethod(_needs_gpu("utils.set_z3_leaf_modules"))
