"""Process set-up of the rehearsal cluster: every Ray process started with this folder on
PYTHONPATH imports it (Python's `site` hook).

* OpenRLHF's `PolicyModelActor` moves every tensor to `cuda:N`; once
  `openrlhf.trainer.ray.ppo_actor` is imported, its `PolicyModelActor` is the CPU actor of
  `rehearsal_actor` (a class importable by name, so Ray builds it on any worker).

It only installs an import hook, so Ray's own processes start as fast as without it.
"""

import importlib.abc
import importlib.machinery
import sys

PATCHED_MODULE = "openrlhf.trainer.ray.ppo_actor"


class _SwapPolicyActor(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads `openrlhf.trainer.ray.ppo_actor` as usual, then replaces its `PolicyModelActor`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != PATCHED_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        self._original = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._original.create_module(spec)

    def exec_module(self, module):
        self._original.exec_module(module)
        import rehearsal_actor

        module.PolicyModelActor = rehearsal_actor.PolicyModelActor


sys.meta_path.insert(0, _SwapPolicyActor())
