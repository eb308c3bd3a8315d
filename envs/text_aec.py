"""What every AEC env of this suite keeps the same way, written once (the game env and the TextArena env).

PettingZoo's classic envs repeat this bookkeeping per env; here the envs subclass
`TextAECEnv` and keep only what is their own: how a move is read and played, and what an
answer that used up its retries costs (a fallback move, or the end of the game).
"""

from __future__ import annotations

from pettingzoo import AECEnv


class TextAECEnv(AECEnv):
    """The shared part of the suite's AEC envs.

    A subclass sets `state` (None before reset), `_player_of` (agent -> player),
    `_paid` (each player's reward so far), `invalid_action_policy`, `_retries_used`,
    `_feedback`, `_prompt`, and provides `_clear_rewards()`.
    """

    # -- what the trainer and evaluation use ------------------------------------------
    def current_player(self) -> int:
        self._require_reset("current_player")
        return self.state.current_player()

    def is_over(self) -> bool:
        """True once the game has ended (terminated or cut at the turn limit)."""
        self._require_reset("is_over")
        return all(self.terminations[a] or self.truncations[a] for a in self.agents)

    def episode_returns(self) -> list[float]:
        """Each player's total reward this game so far (its return once the game is over)."""
        self._require_reset("episode_returns")
        return list(self._paid)

    # -- internals --------------------------------------------------------------------
    def _require_reset(self, method: str) -> None:
        if self.state is None:
            raise RuntimeError(f"{type(self).__name__}.{method}() called before reset(); call reset() first")

    def _check_agent(self, agent: str) -> None:
        if agent not in self._player_of:
            raise ValueError(f"unknown agent {agent!r}; agents: {', '.join(self.possible_agents)}")

    def _count_invalid_and_retry(self, error: str, feedback: str) -> bool:
        """Record the invalid answer; True when the same player answers again."""
        info = self.infos[self.agent_selection]
        info["invalid_actions"] += 1
        if error == "unparseable":
            info["unparseable_actions"] += 1
        info["last_error"] = error
        if self._retries_used < self.invalid_action_policy.retries:
            self._retries_used += 1
            self._feedback = feedback
            self._prompt = None
            self._clear_rewards()
            return True
        return False
