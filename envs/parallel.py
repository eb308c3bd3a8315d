"""The parallel-API form of a turn-based game environment.

PettingZoo's parallel API steps every live agent at once. In a turn-based game only
the player to move acts: `step` reads that agent's action from the dict and ignores the
others (whose action masks are all zero). Observations, rewards and flags come back for
every live agent, as the parallel API expects. `step` before `reset()` is a clear
`RuntimeError`.
"""

from __future__ import annotations

from pettingzoo import ParallelEnv

from envs.game_env import GameEnv


class GameParallelEnv(ParallelEnv):
    metadata = {"render_modes": ["ansi", "human"], "is_parallelizable": True}

    def __init__(self, env: GameEnv):
        self.env = env
        self.possible_agents = list(env.possible_agents)
        self.agents: list[str] = []
        self.metadata = dict(self.metadata, name=env.metadata["name"] + "_parallel")
        self.render_mode = env.render_mode

    def observation_space(self, agent):
        return self.env.observation_space(agent)

    def action_space(self, agent):
        return self.env.action_space(agent)

    @property
    def agent_to_move(self) -> str:
        return self.env.agent_selection

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.env.reset(seed=seed, options=options)
        self.agents = list(self.env.agents)
        return {a: self.env.observe(a) for a in self.agents}, {a: dict(self.env.infos[a]) for a in self.agents}

    def step(self, actions: dict):
        env = self.env
        if env.state is None:
            raise RuntimeError(f"{type(self).__name__}.step() called before reset(); call reset() first")
        mover = env.agent_selection
        if mover not in actions:
            raise ValueError(f"it is {mover}'s turn; actions must include {mover!r}, got {sorted(actions)}")
        live = list(self.agents)
        for agent in live:
            env._cumulative_rewards[agent] = 0.0
        env.step(actions[mover])
        rewards = {a: float(env._cumulative_rewards[a]) for a in live}
        terminations = {a: env.terminations[a] for a in live}
        truncations = {a: env.truncations[a] for a in live}
        observations = {a: env.observe(a) for a in live}
        infos = {a: dict(env.infos[a]) for a in live}
        self.agents = [a for a in live if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, infos

    def render(self):
        return self.env.render()

    def close(self):
        self.env.close()

    def state(self):
        raise NotImplementedError("text game envs expose per-agent prompts, not a global state array")
