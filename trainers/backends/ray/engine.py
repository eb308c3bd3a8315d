"""`backend=ray`: a step's games played by Ray actor rollout workers, fault tolerant.

    engine = RayRolloutEngine(config)            # ray.init (or join ray_address), start workers
    engine.broadcast(learner.model, version=step)  # ray.put of the new weights, once per update
    samples, results, timing = engine.play(specs, seed)
    engine.close()

How a step runs:

1. The step's `GameSpec`s (plain data, in the trainer's order) are cut into one
   contiguous share per worker, sizes differing by at most one.
2. Each share goes to its worker with the object reference of the current weights; a
   worker holding an older version loads them first (`ray.put` happens once per update,
   every worker reads the same object).
3. A worker plays its share with `play_games` (one batched policy call per round, as the
   local trainer) and returns `TurnSample`s, `GameResult`s and timings.
4. Shares come back in any order and are put back in share order, so samples are in the
   same per-game order as a local rollout (RAE reads the games in that order).

Fault tolerance: a worker that dies (killed, out of memory, its node lost) surfaces as a
`RayActorError` on its share. The engine kills what is left of it, starts a replacement
(which loads the current weights from the object store) and replays the whole share:
`play_games` returns nothing until every game of a share is over, so all of that share's
games are unfinished and nothing of them was accepted. A share's result is accepted once
and checked against the requested game ids, so a step never loses or duplicates a game. A
replay is the same computation (same games, seed and weights), so on CPU it returns the
same samples the dead worker would have. A share that kills `MAX_REPLAYS` workers in a row
fails the step with an error naming its games. The learner is not a Ray actor: it
checkpoints as before, and `resume=true` after the whole job was killed restarts the
workers and broadcasts the restored weights.

Determinism: with one worker the share is the whole step and its seed is the step's
rollout seed, so the worker makes exactly the `play_games` call `Trainer.play` makes and a
seeded run gives the same metrics as `backend=local`. With W > 1 workers each share gets
its own seed (`derive_seed(seed, "rollout_share", k)`: shares must not reuse one random
stream) and batches hold 1/W of the games, so the sampled games differ from a one-worker
run (and float sums over differently composed batches round differently); a run is still
reproducible for a fixed W, whichever workers die along the way.

Shipping the project: the engine starts (or joins, with ``ray_address``) Ray with a job
runtime env whose ``py_modules`` are the project's packages (`project_runtime_env`),
uploaded by the driver, so a cluster whose nodes hold only the dependencies runs the
driver's code, not whatever copy a node may have. (Ray accepts local folders only at the
job level: a driver that initialised Ray itself passes ``runtime_env=project_runtime_env()``.)

A replacement that cannot be placed (the cluster lost the resources a worker asks for)
fails the step after `WORKER_START_S` with an error naming what it asks for and what is
free, instead of waiting forever.

Timing: `generation_s` and `env_s` are summed over workers (compute seconds, not wall
time); `timing.extra` has `wall_s`, `workers`, `broadcast_s`, `replayed_games` and
`worker_restarts`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from trainers.run.config import TrainConfig
from trainers.backends.ray.worker import RolloutWorker, trainable_state
from trainers.rollouts.play import GameSpec, RolloutTiming
from trainers.run.seeds import derive_seed

MAX_REPLAYS = 3
"""Replacement workers a share may use up within one step before the step fails."""
WORKER_START_S = 900.0
"""How long the first workers may take to start (a large model loads slowly)."""
SHARE_STREAM = "rollout_share"
PROJECT_PACKAGES = ("games", "curricula", "envs", "trainers")
"""What a worker imports from the project (its layers down to trainers/)."""


def project_runtime_env() -> dict:
    """The runtime env of every worker: the project's packages as Ray ``py_modules``.

    Ray uploads each folder once per content hash and puts it first on the worker's
    ``sys.path``, so a node needs the dependencies only, and runs exactly the driver's code.
    """
    root = Path(__file__).resolve().parents[3]
    return {
        "py_modules": [str(root / name) for name in PROJECT_PACKAGES],
        "excludes": ["__pycache__", "*.pyc"],
    }


def split_shares(specs: list[GameSpec], parts: int) -> list[list[GameSpec]]:
    """`parts` contiguous slices of `specs` whose sizes differ by at most one (some may be empty)."""
    n = len(specs)
    return [specs[k * n // parts:(k + 1) * n // parts] for k in range(parts)]


def share_seed(seed: int, share: int, shares: int) -> int:
    """The rollout seed of one share: the step's own seed when there is a single share."""
    return seed if shares == 1 else derive_seed(seed, SHARE_STREAM, share)


class RayRolloutEngine:
    """Rollout workers as Ray actors; see the module docstring."""

    def __init__(self, config: TrainConfig):
        import ray

        self.config = config
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(
                address=config.ray_address or None, include_dashboard=False, log_to_driver=True,
                runtime_env=project_runtime_env(),
            )
        resources = {"num_cpus": 1}
        if config.device.startswith("cuda"):
            resources["num_gpus"] = 1
        self.resources = resources
        self.replace_timeout_s = WORKER_START_S
        # Two threads: `play` runs in one while `pid` / `is_playing` answer in the other.
        self._actor_class = ray.remote(max_concurrency=2, max_restarts=0, **resources)(RolloutWorker)
        self.workers = [self._start_worker() for _ in range(config.num_workers)]
        try:  # a worker that cannot load fails here, not in the first step
            ray.get([worker.pid.remote() for worker in self.workers], timeout=WORKER_START_S)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise RuntimeError(
                f"{config.num_workers} rollout workers did not start within {WORKER_START_S:.0f} s; each asks for "
                f"{resources} and the cluster has {ray.cluster_resources()}"
            ) from None
        self.weights_ref = None
        self.weights_version = None
        self.broadcast_s = 0.0

    def _start_worker(self):
        return self._actor_class.remote(self.config)

    # -- weights ------------------------------------------------------------------------
    def broadcast(self, model, version) -> None:
        """Put `model`'s trainable tensors in the object store if `version` is new.

        `version` names the learner's weights (the trainer passes the step: weights change
        only between steps). Workers load the object when they next play.
        """
        if version == self.weights_version and self.weights_ref is not None:
            return
        import ray

        start = time.perf_counter()
        self.weights_ref = ray.put(trainable_state(model))
        self.weights_version = version
        self.broadcast_s = time.perf_counter() - start

    # -- one step -----------------------------------------------------------------------
    def play(self, specs: list[GameSpec], seed: int):
        """Play `specs` on the workers; returns `(samples, results, timing)` like `play_games`."""
        return self.collect(self.submit(specs, seed))

    def submit(self, specs: list[GameSpec], seed: int) -> "StepRollout":
        """Send every share to its worker and return at once (`collect` waits for them)."""
        if self.weights_ref is None:
            raise RuntimeError("broadcast(model, version) must run before the first play")
        ids = [spec.game_id for spec in specs]
        if len(set(ids)) != len(ids):
            raise ValueError("game ids must be unique within a step")
        shares = split_shares(list(specs), len(self.workers))
        step = StepRollout(specs=list(specs), shares=shares, seed=seed, start=time.perf_counter())
        for k, share in enumerate(shares):
            if share:
                step.pending[self._send(k, share, seed, len(shares))] = k
        return step

    def collect(self, step: "StepRollout"):
        """Wait for every share, replacing dead workers and replaying their shares."""
        import ray
        from ray.exceptions import RayActorError

        while step.pending:
            ready, _ = ray.wait(list(step.pending), num_returns=1)
            k = step.pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except RayActorError:
                step.replays[k] = step.replays.get(k, 0) + 1
                if step.replays[k] > MAX_REPLAYS:
                    ids = [s.game_id for s in step.shares[k]]
                    raise RuntimeError(
                        f"rollout workers died {step.replays[k]} times playing games {ids[0]}..{ids[-1]} of one step; "
                        f"giving up on this step (see the Ray logs for why they died)"
                    ) from None
                self._replace(k, step.shares[k])
                step.replayed_games += len(step.shares[k])
                step.pending[self._send(k, step.shares[k], step.seed, len(step.shares))] = k
                continue
            _check_share(step.shares[k], outcome[1])
            step.done[k] = outcome
        return self._merge(step)

    def _send(self, k: int, share: list[GameSpec], seed: int, shares: int):
        worker = self.workers[k]
        return worker.play_with_weights.remote(share, share_seed(seed, k, shares), [self.weights_ref], self.weights_version)

    def _replace(self, k: int, share: list[GameSpec]) -> None:
        """Start a replacement for worker `k`; fail clearly if it cannot start within `replace_timeout_s`."""
        import ray

        try:
            ray.kill(self.workers[k], no_restart=True)
        except Exception:  # already gone
            pass
        self.workers[k] = self._start_worker()
        try:
            ray.get(self.workers[k].pid.remote(), timeout=self.replace_timeout_s)
        except ray.exceptions.GetTimeoutError:
            ids = [spec.game_id for spec in share]
            raise RuntimeError(
                f"a rollout worker died and its replacement did not start within {self.replace_timeout_s:.0f} s; "
                f"it asks for {self.resources} and the cluster has {ray.available_resources()} free; "
                f"games {ids[0]}..{ids[-1]} of this step were not played"
            ) from None

    def _merge(self, step: "StepRollout"):
        samples, results = [], []
        timing = RolloutTiming()
        for k in sorted(step.done):
            share_samples, share_results, share_timing = step.done[k]
            samples += share_samples
            results += share_results
            timing.generation_s += share_timing.generation_s
            timing.env_s += share_timing.env_s
            timing.rounds = max(timing.rounds, share_timing.rounds)
        requested = [spec.game_id for spec in step.specs]
        returned = [result.game_id for result in results]
        if returned != requested:
            raise RuntimeError(f"a step returned games {returned}, expected exactly {requested}")
        timing.extra = {
            "wall_s": time.perf_counter() - step.start,
            "workers": len(self.workers),
            "broadcast_s": self.broadcast_s,
            "replayed_games": step.replayed_games,
            "worker_restarts": sum(step.replays.values()),
        }
        return samples, results, timing

    # -- introspection and shutdown -------------------------------------------------------
    def worker_pids(self) -> list[int]:
        import ray

        return ray.get([worker.pid.remote() for worker in self.workers])

    def close(self) -> None:
        """Stop the workers (and the local Ray instance if this engine started it)."""
        import ray

        for worker in self.workers:
            try:
                ray.kill(worker, no_restart=True)
            except Exception:
                pass
        self.workers = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()


@dataclass
class StepRollout:
    """The shares of one step in flight: which are pending (object ref -> share), done, replayed."""

    specs: list[GameSpec]
    shares: list[list[GameSpec]]
    seed: int
    start: float
    pending: dict = field(default_factory=dict)
    done: dict[int, tuple] = field(default_factory=dict)
    replays: dict[int, int] = field(default_factory=dict)
    replayed_games: int = 0


def _check_share(share: list[GameSpec], results) -> None:
    """A share's results must be exactly its games, in order."""
    expected = [spec.game_id for spec in share]
    returned = [result.game_id for result in results]
    if returned != expected:
        raise RuntimeError(f"a rollout worker returned games {returned} for the share {expected}")
