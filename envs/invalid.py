"""What happens when a player's answer is not a legal action.

One explicit, configurable policy used by every game environment:

* ``retries``: how many invalid answers a player may give on one turn and be asked again
  (with feedback) before the consequence applies.
* ``offender_reward`` / ``other_reward``: the return the offender and every other player
  receive for the game. ``None`` means the zero-sum forfeit: the offender gets the
  game's worst outcome (``-game.max_utility()``) and the others share its opposite.
* ``ends_game``: True ends the game at once with those returns. False applies the
  offender's penalty as an extra reward and plays a uniformly random legal action for
  it (drawn from the env's seeded RNG), so the game goes on.

Default: `InvalidActionPolicy.forfeit()`. It keeps every game zero-sum, which RAE's
per-role baselines, exploitability and win rates all assume, and an invalid answer is
never better than any legal play (in Kuhn Poker a forfeit costs the most a hand can
cost, so "answer garbage" is never a cheap fold). `InvalidActionPolicy.spiral()` is
SPIRAL's training setting (-1.5 for the offender, +0.5 for the other player, game ends),
which is not zero-sum; `textarena()` allows one retry like TextArena's error allowance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class InvalidActionPolicy:
    retries: int = 0
    offender_reward: float | None = None
    other_reward: float | None = None
    ends_game: bool = True

    def __post_init__(self):
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {self.retries!r}")

    @classmethod
    def forfeit(cls) -> "InvalidActionPolicy":
        """Zero-sum forfeit: offender gets the worst outcome, the game ends."""
        return cls()

    @classmethod
    def spiral(cls) -> "InvalidActionPolicy":
        """SPIRAL's training setting: offender -1.5, other +0.5, game ends."""
        return cls(retries=0, offender_reward=-1.5, other_reward=0.5, ends_game=True)

    @classmethod
    def textarena(cls) -> "InvalidActionPolicy":
        """One retry with feedback, then a zero-sum forfeit (TextArena's allowance)."""
        return cls(retries=1)

    def penalties(self, max_utility: float, num_players: int) -> tuple[float, float]:
        """(offender reward, reward of each other player) for a game with this utility."""
        offender = -max_utility if self.offender_reward is None else float(self.offender_reward)
        if self.other_reward is not None:
            return offender, float(self.other_reward)
        return offender, -offender / max(num_players - 1, 1)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "forfeit": InvalidActionPolicy.forfeit,
    "spiral": InvalidActionPolicy.spiral,
    "textarena": InvalidActionPolicy.textarena,
}


def resolve_policy(policy: "InvalidActionPolicy | str | dict | None") -> InvalidActionPolicy:
    """Accept a policy, a preset name, a dict of fields, or None (the default forfeit)."""
    if policy is None:
        return InvalidActionPolicy.forfeit()
    if isinstance(policy, InvalidActionPolicy):
        return policy
    if isinstance(policy, str):
        if policy not in PRESETS:
            raise ValueError(
                f"unknown invalid-action policy {policy!r}; presets: {', '.join(PRESETS)}"
            )
        return PRESETS[policy]()
    if isinstance(policy, dict):
        fields = set(InvalidActionPolicy.__dataclass_fields__)
        unknown = set(policy) - fields
        if unknown:
            raise ValueError(
                f"unknown invalid-action policy field(s) {sorted(unknown)}; valid: {sorted(fields)}"
            )
        return InvalidActionPolicy(**policy)
    raise ValueError(
        f"invalid_action_policy must be an InvalidActionPolicy, a preset name "
        f"({', '.join(PRESETS)}) or a dict, got {type(policy).__name__}"
    )

