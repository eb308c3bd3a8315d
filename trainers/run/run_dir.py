"""The run directory: what it holds, how it is checked before a run, and how it is written.

    <out>/config.json        the resolved config
    <out>/metrics.jsonl      one JSON object per step (with at least "step")
    <out>/checkpoints/       step_XXXXXXXX/ (atomic, checksummed) and best/
    <out>/eval/              step_XXXXXXXX.json per evaluation, final.json, ratings.json;
                             policies/step_XXXXXXXX.json: the large policy tables (TicTacToe's)
    <out>/league/            frozen snapshots (opponent=league)
    <out>/summary.png        the before/after plot

`check_run_dir` runs before anything is created or loaded: `out` must be a folder (or
creatable), writable, and free unless the run resumes; a resumed run must have an intact
checkpoint and a config that differs from the saved one only in `RESUMABLE_KEYS`.
Every rewrite is atomic (``trainers.run.durable``: temporary file, fsync, rename): a kill or an
I/O error during it leaves the previous file whole. Lines are appended to metrics.jsonl with an fsync each.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from trainers.run import checkpoints
from trainers.run.config import RESUMABLE_KEYS, TrainConfig, resume_conflicts
from trainers.run.durable import write_text_atomically

METRICS = "metrics.jsonl"
CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
LEAGUE = "league"


def check_run_dir(config: TrainConfig) -> dict | None:
    """Check `config.out` without changing anything; return the saved config of a resumed run.

    Raises ValueError with a one-line message for: `out` is a file; `out` cannot be
    created or written; `out` already holds a run and `resume` is false; `resume` is true
    and there is no intact checkpoint to continue from; the resumed config changes keys
    that are not resumable.
    """
    out = Path(config.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={config.out} is a file, not a folder")
    _check_writable(out)
    holds_run = (out / METRICS).exists() or (out / CHECKPOINTS).is_dir()
    if not config.resume:
        if holds_run:
            raise ValueError(f"{config.out} already holds a run; pass resume=true to continue it or choose another out=")
        return None
    latest = checkpoints.latest_intact(out / CHECKPOINTS)
    if latest is None:
        raise ValueError(
            f"resume=true but {config.out} has no intact checkpoint to resume from; "
            f"run without resume=true (and another out=) to start afresh"
        )
    saved = _saved_config(out, latest)
    conflicts = resume_conflicts(saved, config)
    if conflicts:
        listed = "; ".join(f"{key}: saved {before!r}, now {after!r}" for key, (before, after) in sorted(conflicts.items()))
        raise ValueError(
            f"resume=true with a config that changes the run: {listed}. "
            f"Only these keys may change on resume: {', '.join(RESUMABLE_KEYS)}"
        )
    return saved


def _saved_config(out: Path, checkpoint: Path) -> dict:
    """The config the checkpoint was written with (its extra state), else config.json."""
    extra_path = checkpoint / "extra_state.json"
    if extra_path.exists():
        extra = json.loads(extra_path.read_text())
        if isinstance(extra.get("config"), dict):
            return extra["config"]
    return json.loads((out / CONFIG).read_text())


def _check_writable(out: Path) -> None:
    """`out` (or its nearest existing ancestor, where it would be created) accepts a new file."""
    probe_dir = out
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ValueError(f"out={out}: {probe_dir} is a file, so the run folder cannot be created")
    try:
        # Permission bits do not stop root, and a read-only mount says nothing until written:
        # creating (and removing) a file is the only reliable test.
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as error:
        raise ValueError(f"out={out}: cannot write in {probe_dir} ({error.strerror or error})") from None


class RunDirectory:
    """Writes the files of one run (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path).expanduser()

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def league(self) -> Path:
        return self.path / LEAGUE

    @property
    def eval(self) -> Path:
        return self.path / EVAL

    def create(self, config: TrainConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.path / CONFIG, json.dumps(config.to_dict(), indent=1))

    def read_metrics(self) -> list[dict]:
        """Every complete metrics line (a line cut by a kill mid-write is ignored)."""
        path = self.path / METRICS
        if not path.exists():
            return []
        lines = []
        for line in path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def keep_metrics_before(self, step: int) -> None:
        """Atomically rewrite metrics.jsonl with the lines of steps before `step` (a resume)."""
        kept = [m for m in self.read_metrics() if isinstance(m.get("step"), int) and m["step"] < step]
        write_text_atomically(self.path / METRICS, "".join(json.dumps(m) + "\n" for m in kept))

    def append_metrics(self, metrics: dict) -> None:
        with open(self.path / METRICS, "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def write_json(self, relative: str, value) -> Path:
        path = self.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(value, indent=1))
        return path
