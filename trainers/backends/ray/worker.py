"""One Ray rollout worker: its own model copy, generation backend, env pool and opponents.

A worker builds its playing side from the run's `TrainConfig` through the same
`trainers.run.setup.RunSetup` the trainer uses (policy options, env arguments, opponents,
frozen policies, thinking strategy), and its model as the learner's (model name, dtype,
seed, LoRA wrapping), so that with the learner's weights loaded it plays the same games
the local trainer would play. It knows nothing about Ray beyond receiving the
weights as an object reference: `trainers.backends.ray.engine` wraps the class into an
actor, and a test can drive it in-process.

    worker = RolloutWorker(config)
    worker.load_weights(state, version=3)        # the learner's trainable tensors
    samples, results, timing = worker.play(specs, seed)
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from trainers.run.config import TrainConfig
from trainers.rollouts.play import GameSetup, GameSpec, play_games
from trainers.run.setup import RunSetup, game_env_kwargs, policy_options  # noqa: F401  (importable from here too)

MAX_FROZEN_POLICIES = 4
"""League snapshots a worker keeps loaded at once (least recently used dropped first)."""


def trainable_state(model) -> dict:
    """The tensors an update changes: every trainable parameter, on the CPU, by name.

    Full fine-tuning sends every parameter (tied weights once); LoRA sends the adapter
    tensors only, and a worker that wrapped its base model the same way loads them.
    Buffers (rotary tables) are functions of the config and are not sent.
    """
    return {name: p.detach().to("cpu") for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict) -> None:
    """Copy `state` (from `trainable_state`) into `model`; every tensor must find its parameter."""
    import torch

    parameters = dict(model.named_parameters())
    unknown = sorted(set(state) - set(parameters))
    if unknown:
        raise ValueError(f"broadcast weights name {len(unknown)} tensors this worker's model lacks, e.g. {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            parameters[name].copy_(tensor)


class RolloutWorker:
    """Plays a share of a step's games with its own copy of the policy."""

    def __init__(self, config: TrainConfig):
        import torch

        from trainers.generation import TransformersBackend
        from trainers.models import load_model

        self.config = config
        # A GPU worker sees only the GPU Ray gave it, as "cuda" (whatever index the learner uses).
        self.device = "cuda" if config.device.startswith("cuda") else config.device
        if config.threads:
            torch.set_num_threads(config.threads)
        model, tokenizer = load_model(config.model, dtype=config.dtype, seed=config.seed)
        if config.lora_rank > 0:
            from trainers.learning.learner import _wrap_lora

            model = _wrap_lora(model, config)  # same adapter names as the learner's
        # requires_grad stays as the learner has it: torch picks different (equally valid)
        # kernels for parameters that require gradients, and the sampled log-probs must be
        # bit-identical to a local rollout's. Generation runs under inference_mode anyway.
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.setup = RunSetup(config)
        self.policy = self.setup.make_policy(TransformersBackend(self.model, tokenizer), tokenizer)
        self.weights_version = None
        self.env_pool: dict[str, list] = {}
        self.opponent = self.setup.fixed_opponent(device=self.device)
        self.frozen: OrderedDict[str, object] = OrderedDict()
        self._playing = threading.Event()

    # -- what the engine asks -----------------------------------------------------------
    def pid(self) -> int:
        """This worker's process id (tests kill it by this id)."""
        return os.getpid()

    def project_path(self) -> str:
        """The folder this worker imported the project from (the runtime env's copy on a cluster)."""
        import trainers

        return str(Path(trainers.__file__).resolve().parents[1])

    def is_playing(self) -> bool:
        """True while `play` runs (answered concurrently: the actor has two threads)."""
        return self._playing.is_set()

    def load_weights(self, state: dict, version) -> None:
        load_trainable_state(self.model, state)
        self.weights_version = version

    def play_with_weights(self, specs: list[GameSpec], seed: int, weights: list, version):
        """`play` after loading the weights of `version` if this worker holds older ones.

        `weights` is a one-element list holding the object reference, so that Ray does not
        fetch the tensors for a worker that already has them.
        """
        if version != self.weights_version:
            import ray

            self.load_weights(ray.get(weights[0]), version)
        return self.play(specs, seed)

    def play(self, specs: list[GameSpec], seed: int):
        """`play_games` over these specs with this seed: what `Trainer.play` does locally."""
        self._playing.set()
        try:
            setups = self._setups(specs)
            return play_games(setups, self.policy, seed=seed, opponent=self.opponent, thinking=self.setup.thinking,
                              reward=self.config.reward, credit=self.config.game_credit)
        finally:
            self._playing.clear()

    # -- building games -----------------------------------------------------------------
    def _setups(self, specs: list[GameSpec]) -> list[GameSetup]:
        used: dict[str, int] = {}
        setups = []
        for spec in specs:
            index = used.get(spec.env_id, 0)
            used[spec.env_id] = index + 1
            setup = GameSetup(spec.env_id, self._env(spec.env_id, index), spec.seed, frozenset(spec.learner_seats), spec.game_id)
            if spec.opponent_path:
                setup.opponent, setup.opponent_name = self._frozen_policy(spec.opponent_path), spec.opponent_name
            setups.append(setup)
        return setups

    def _env(self, env_id: str, index: int):
        """The pool's `index`-th env of `env_id` (every env is reset with its game's seed)."""
        pool = self.env_pool.setdefault(env_id, [])
        while len(pool) <= index:
            pool.append(self.setup.make_game_env(env_id))
        return pool[index]

    def _frozen_policy(self, path: str):
        """A league snapshot's playing policy (the folder must be readable from this node)."""
        if path in self.frozen:
            self.frozen.move_to_end(path)
            return self.frozen[path]
        while len(self.frozen) >= MAX_FROZEN_POLICIES:
            self.frozen.popitem(last=False)
        self.frozen[path] = self.setup.frozen_policy(path, device=self.device)
        return self.frozen[path]
