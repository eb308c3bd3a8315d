"""What one row of the OpenRLHF prompt dataset asks for, as a JSON label.

OpenRLHF hands every `execute()` the row's `label` string untouched, and keeps it beside
the sample in `Experience.labels`; the launcher writes, the agent plays and the
advantage estimator reads the same record:

    {"kind": "game", "env": "kuhn_poker", "row": 17, "seed": 123..., "players": 2,
     "env_args": {"mode": "direct", "invalid_action_policy": "forfeit", "turn_limit": 50},
     "max_new_tokens": 64}
    {"kind": "task", "env": "sat", "row": 40, "level": [3, 5, 5], "formula": "A!B & ...",
     "max_new_tokens": 512}

`row` is unique in the dataset. A game row is played as `n_samples_per_prompt / players`
independent games ("copies", copy 0 with the row's seed, copy c with
`derive_seed(seed, "copy", c)`); a task row is one instance answered
`n_samples_per_prompt` times (a GRPO group).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from trainers.run.seeds import derive_seed

KINDS = ("game", "task")


@dataclass(frozen=True)
class Row:
    kind: str
    env: str
    row: int
    max_new_tokens: int
    seed: int = 0
    players: int = 1
    env_args: dict = field(default_factory=dict)
    level: tuple[int, ...] = ()
    formula: str = ""

    def to_label(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in ((), "", {})}, sort_keys=True)

    @classmethod
    def from_label(cls, label: str) -> "Row":
        try:
            data = json.loads(label)
            if not isinstance(data, dict) or data.get("kind") not in KINDS:
                raise ValueError("no kind")
            data["level"] = tuple(data.get("level", ()))
            return cls(**data)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"not a selfplay-suite dataset label: {label[:120]!r} (write the dataset with "
                f"`python -m trainers.selfplay backend=openrlhf ...`)"
            ) from error

    def copy_seed(self, copy: int) -> int:
        """The seed of the row's `copy`-th game (copy 0 plays the row's own seed)."""
        return self.seed if copy == 0 else derive_seed(self.seed, "copy", copy)

    def describe(self) -> str:
        """The dataset's `input` text: what OpenRLHF logs as the sample's prompt."""
        if self.kind == "game":
            return f"{self.env}: self-play game {self.row} (seed {self.seed})"
        return f"{self.env}: task {self.row} at level {list(self.level)}"
