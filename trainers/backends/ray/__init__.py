"""Scale-out of rollouts on Ray (`backend=ray`).

    engine.py   RayRolloutEngine: shares a step's games among Ray actor workers, broadcasts
                the learner's weights through the object store, replaces dead workers and
                replays their games
    worker.py   RolloutWorker: one actor's model copy, generation backend, env pool and
                opponents, built from the run's config as the trainer builds its own

Ray is imported only when an engine starts (install the `distributed` extra).
"""

from trainers.backends.ray.engine import RayRolloutEngine, split_shares
from trainers.backends.ray.worker import RolloutWorker

__all__ = ["RayRolloutEngine", "RolloutWorker", "split_shares"]
