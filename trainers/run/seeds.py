"""Named seed streams: every random draw of a run comes from `derive_seed(run_seed, STREAM, ...)`.

A stream name says what the numbers are for (``"rollout"``, ``"evaluation"``, ...), so two
uses never share a stream by accident and a reader can tell which draw a seed drives.
`derive_seed` mixes integers and names into a 63-bit seed that is stable across runs,
machines and Python versions (no use of ``hash()``, which is salted per process).
"""

from __future__ import annotations

# The streams of a training run (trainers.selfplay, trainers.rollouts.play, trainers.evaluation.evaluate).
GAME = "game"                     # a self-play game's chance events and fallback moves
ROLLOUT = "rollout"               # the policy's sampling in one step's games
OPPONENT = "opponent"             # a frozen model opponent's sampling
LEAGUE = "league"                 # which opponent each game is played against
TASK = "task"                     # which task instances a step draws
TASK_SAMPLING = "task_sampling"   # the policy's answers to them
EVALUATION = "evaluation"         # evaluation games against fixed opponents
EXPLOITABILITY = "exploitability" # sampled policy tables (think mode)
TASK_EVALUATION = "task_evaluation"
FORMAT = "format"                 # format-phase answers

_OFFSET = 0x9E3779B97F4A7C15
_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from integers and stream names, stable across runs and Python versions."""
    value = _OFFSET
    for part in parts:
        if isinstance(part, str):
            for byte in part.encode("utf-8"):
                value = ((value ^ byte) * _PRIME) & _MASK
            part = len(part)  # keeps "ab" + "c" apart from "a" + "bc"
        value = ((value ^ (int(part) & _MASK)) * _PRIME) & _MASK
    return value >> 1
