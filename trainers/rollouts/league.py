"""An opponent league: frozen snapshots of the learner, and who each game is played against.

Self-play against only the latest policy can chase its own tail (rock-paper-scissors
cycles); playing a mixture of past policies is fictitious self-play, whose average
converges in two-player zero-sum games. The league keeps the last `size` snapshots
(weights or LoRA adapters on disk, under ``<run>/league/``, written atomically and never
changed; a dropped snapshot's folder stays until no kept checkpoint refers to it), and for every game draws its opponent:

* with probability `latest_prob`, the current policy itself (plain self-play: both seats
  are the learner and both produce samples);
* otherwise a snapshot, uniformly (``uniform``: fictitious self-play) or in proportion to
  ``(1 - p)^2 + 0.01`` where ``p`` is the learner's recent score against it
  (``prioritized``: prioritised fictitious self-play favours the snapshots the learner
  does worst against, while every snapshot keeps some weight).

The learner's score against each snapshot is an exponential moving average over training
games (win 1, draw 0.5, loss 0; starting at 0.5). Draws use a seeded RNG per step, and the
pool's state (snapshot list, scores) is part of every checkpoint, so a resumed run draws
the same opponents. Frozen snapshot models are loaded on first use and dropped when their
snapshot leaves the pool.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SNAPSHOT_PREFIX = "snapshot_"
SCORE_DECAY = 0.9
PRIORITY_FLOOR = 0.01


@dataclass(frozen=True)
class Snapshot:
    name: str
    """The rating name of the policy it froze (``step_XXXXXXXX``)."""
    step: int
    path: Path


class League:
    """The snapshot pool, its sampling rule and its frozen policies.

    `load_policy(path)` turns a snapshot folder into a playing policy (the trainer passes
    a function that loads the weights into a frozen model with the run's settings).
    """

    def __init__(
        self,
        directory,
        *,
        size: int,
        sampling: str,
        latest_prob: float,
        load_policy: Callable[[Path], object] | None = None,
    ):
        if size < 1:
            raise ValueError(f"league size must be >= 1, got {size}")
        if sampling not in ("uniform", "prioritized"):
            raise ValueError(f"league sampling must be uniform or prioritized, got {sampling!r}")
        if not 0.0 <= latest_prob <= 1.0:
            raise ValueError(f"latest_prob must lie in [0, 1], got {latest_prob}")
        self.directory = Path(directory)
        self.size = size
        self.sampling = sampling
        self.latest_prob = latest_prob
        self._load_policy = load_policy
        self.snapshots: list[Snapshot] = []
        self.scores: dict[str, float] = {}
        self._policies: dict[str, object] = {}

    # -- the pool ---------------------------------------------------------------------
    def add(self, step: int, write: Callable[[Path], None]) -> Snapshot:
        """Freeze the policy of `step`: `write(folder)` saves it; the oldest snapshot beyond `size` leaves."""
        from trainers.evaluation.ratings import policy_name

        path = self.directory / f"{SNAPSHOT_PREFIX}{step:08d}"
        write(path)
        snapshot = Snapshot(policy_name(step), step, path)
        self.snapshots = [s for s in self.snapshots if s.step != step] + [snapshot]
        self.scores.setdefault(snapshot.name, 0.5)
        while len(self.snapshots) > self.size:
            dropped = self.snapshots.pop(0)
            self.scores.pop(dropped.name, None)
            self._policies.pop(str(dropped.path), None)
        return snapshot

    def remove_unreferenced(self, referenced: set[str]) -> None:
        """Delete snapshot folders that neither the pool nor any kept checkpoint's pool names.

        A dropped snapshot's folder outlives it until no checkpoint on disk refers to it, so
        resuming from any kept checkpoint finds its whole pool.
        """
        keep = referenced | {s.path.name for s in self.snapshots}
        if self.directory.is_dir():
            for folder in self.directory.iterdir():
                if folder.name.startswith(SNAPSHOT_PREFIX) and folder.name not in keep:
                    shutil.rmtree(folder, ignore_errors=True)

    def weights(self) -> list[float]:
        """Sampling weight of each snapshot (not normalised)."""
        if self.sampling == "uniform":
            return [1.0] * len(self.snapshots)
        return [(1.0 - self.scores[s.name]) ** 2 + PRIORITY_FLOOR for s in self.snapshots]

    def draw(self, games: int, seed: int) -> list[Snapshot | None]:
        """The opponent of each of `games` games: a snapshot, or None for the current policy."""
        rng = random.Random(seed)
        weights = self.weights()
        drawn = []
        for _ in range(games):
            if not self.snapshots or rng.random() < self.latest_prob:
                drawn.append(None)
            else:
                drawn.append(rng.choices(self.snapshots, weights)[0])
        return drawn

    def record(self, name: str, score: float) -> None:
        """Fold one training game's result (the learner's score, 0 to 1) into its snapshot's average."""
        if name in self.scores:
            self.scores[name] = SCORE_DECAY * self.scores[name] + (1.0 - SCORE_DECAY) * score

    def policy(self, snapshot: Snapshot):
        """The frozen playing policy of `snapshot` (loaded once, kept while it is in the pool)."""
        return self.policy_at(str(snapshot.path))

    def policy_at(self, path: str):
        """The frozen playing policy saved in the snapshot folder `path` (loaded once)."""
        if self._load_policy is None:
            raise RuntimeError("this league was built without a policy loader")
        known = {str(s.path) for s in self.snapshots}
        for cached in [p for p in self._policies if p not in known]:
            del self._policies[cached]  # its snapshot left the pool
        if path not in self._policies:
            self._policies[path] = self._load_policy(Path(path))
        return self._policies[path]

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "snapshots": [{"name": s.name, "step": s.step, "folder": s.path.name} for s in self.snapshots],
            "scores": dict(self.scores),
        }

    def load_state_dict(self, state: dict, *, step: int) -> None:
        """Restore the pool of the checkpoint of `step`; snapshot folders of later steps are removed.

        Those were written after the checkpoint by the run that was killed; the resumed
        run writes them again, identically, when it reaches their steps.
        """
        self.snapshots = [Snapshot(s["name"], s["step"], self.directory / s["folder"]) for s in state["snapshots"]]
        self.scores = dict(state["scores"])
        self._policies = {}
        missing = [s.path for s in self.snapshots if not s.path.is_dir()]
        if missing:
            raise FileNotFoundError(f"league snapshot folders are missing: {', '.join(map(str, missing))}")
        if self.directory.is_dir():
            for folder in self.directory.iterdir():
                suffix = folder.name[len(SNAPSHOT_PREFIX):]
                if folder.name.startswith(SNAPSHOT_PREFIX) and suffix.isdigit() and int(suffix) > step:
                    shutil.rmtree(folder, ignore_errors=True)


def referenced_snapshot_folders(directory) -> set[str]:
    """League snapshot folders named by any checkpoint on disk."""
    from trainers.run.checkpoints import list_checkpoints

    referenced = set()
    for path in list_checkpoints(directory):
        try:
            league = json.loads((path / "extra_state.json").read_text()).get("league") or {}
        except (OSError, ValueError):
            continue
        referenced.update(entry["folder"] for entry in league.get("snapshots", []))
    return referenced
