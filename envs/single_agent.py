"""A Gymnasium single-agent view of a multi-player game against fixed opponents.

The learner sits in one seat; every other seat is played by an `Opponent` (random,
rule-based, equilibrium, ...). `step` takes the learner's action (an id or raw model
output), then lets the opponents move until it is the learner's turn again or the game
is over; the reward is everything the learner earned in between. `step` or `render`
before `reset()` is a clear `RuntimeError`.
"""

from __future__ import annotations

import random

import gymnasium

from envs.game_env import GameEnv, agent_name
from envs.opponents import Opponent, make_opponent


class SingleAgentEnv(gymnasium.Env):
    """Gymnasium env: the learner plays `seat` of `env`, opponents play the rest.

    Args:
        env: the multi-agent `GameEnv`.
        opponent: an `Opponent` or its name ("random", "rule_based", "equilibrium").
        seat: the learner's player id, or "random" to draw it at every reset.
        seed: seeds the opponents' and the seat's RNG until `reset(seed=...)`.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, env: GameEnv, *, opponent: "Opponent | str" = "random", seat: "int | str" = 0, seed: int = 0):
        self.env = env
        self.opponent = make_opponent(opponent, env.game) if isinstance(opponent, str) else opponent
        n = env.game.num_players()
        if seat != "random" and (isinstance(seat, bool) or not isinstance(seat, int) or not 0 <= seat < n):
            raise ValueError(f"seat must be a player id in 0..{n - 1} or 'random', got {seat!r}")
        self.seat_option = seat
        self.seat = 0 if seat == "random" else seat
        self.action_space = env.action_space(agent_name(0))
        self.render_mode = env.render_mode
        self._rng = random.Random(seed)
        self._started = False

    @property
    def observation_space(self):
        """The game env's observation space (built when first asked for; see envs.spaces)."""
        return self.env.observation_space(agent_name(0))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = random.Random(seed)
        if self.seat_option == "random":
            self.seat = self._rng.randrange(self.env.game.num_players())
        self.env.reset(seed=self._rng.getrandbits(63))
        self._started = True
        self._play_opponents()
        agent = agent_name(self.seat)
        return self.env.observe(agent), dict(self.env.infos[agent], seat=self.seat)

    def step(self, action):
        self._require_reset("step")
        agent = agent_name(self.seat)
        if self._done(agent):
            raise RuntimeError("step() called after the game ended; call reset()")
        self.env.step(action)
        self._play_opponents()
        # everything earned since the learner's action: its own move and the replies
        reward = self.env._cumulative_rewards[agent]
        info = dict(self.env.infos[agent], seat=self.seat)
        return (
            self.env.observe(agent),
            float(reward),
            self.env.terminations[agent],
            self.env.truncations[agent],
            info,
        )

    def render(self):
        self._require_reset("render")
        return self.env.state.observation_string(self.seat)

    def _require_reset(self, method: str) -> None:
        if not self._started:
            raise RuntimeError(f"{type(self).__name__}.{method}() called before reset(); call reset() first")

    def _done(self, agent: str) -> bool:
        return self.env.terminations[agent] or self.env.truncations[agent]

    def _play_opponents(self) -> None:
        """Let the other seats move until the learner is to move or the game is over."""
        env, agent = self.env, agent_name(self.seat)
        while not self._done(agent) and env.agent_selection != agent:
            player = env.state.current_player()
            env.step(self.opponent.act(env.state, player, self._rng))
