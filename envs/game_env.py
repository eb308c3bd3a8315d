"""One generic PettingZoo adapter from the `games` protocol to text environments.

Written once so that a new game never touches PettingZoo bookkeeping (agent selection,
cumulative rewards, dead steps). Chance nodes are resolved with the env's own seeded
RNG. The agent to move observes a `TurnPrompt` (rendered by `envs.protocol`) and answers
with an action id or with raw model output, which the protocol parses; invalid answers
follow the env's `InvalidActionPolicy` and are counted in `infos`.

Rewards are paid as the change of the game's returns, so the sum of an agent's rewards
over a game equals its return (chips in Kuhn Poker, +1/0/-1 in TicTacToe).

The rules text may be a string or a function of the game, so that it can state the
game's parameters (a negotiation's number of turns) instead of a fixed default.
Stepping or observing before `reset()` is a clear `RuntimeError`, not a crash deep
inside the env.
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
from gymnasium import spaces

import games
from envs.invalid import InvalidActionPolicy, resolve_policy
from envs.protocol import PromptTemplate, TurnPrompt, describe_error
from envs.spaces import text_space
from envs.text_aec import TextAECEnv

MAX_PROMPT_CHARS = 16_384

Rules = str | Callable[[games.Game], str]
"""A game's rules text, or a function that writes it from the game's parameters."""


def agent_name(player: int) -> str:
    return f"player_{player}"


class GameEnv(TextAECEnv):
    """PettingZoo AEC text environment over any game of the `games` protocol.

    Args:
        game: a registered game name or a `games.Game` instance.
        title: how the prompt names the game.
        rules: the rules text, or a function of the game that returns it.
        mode: "think", "direct" or "choice" (see `envs.protocol`).
        choice_chain: "auto" (choice mode asks a turn with many legal actions as a chain of
            small choices, `envs.action_chain`) or "off".
        invalid_action_policy: an `InvalidActionPolicy`, a preset name or a dict.
        turn_limit: cut the game after this many player actions and score it a draw
            (None: only the game's own end).
        seed: seeds the env RNG (chance and fallback moves) until `reset(seed=...)`.
        game_params: passed to `games.load` when `game` is a name.
    """

    metadata = {"render_modes": ["ansi", "human"], "is_parallelizable": False}

    def __init__(
        self,
        game: "str | games.Game",
        *,
        title: str = "",
        rules: Rules = "",
        mode: str = "think",
        choice_chain: str = "auto",
        invalid_action_policy: "InvalidActionPolicy | str | dict | None" = None,
        turn_limit: int | None = None,
        seed: int | None = 0,
        render_mode: str | None = None,
        **game_params,
    ):
        super().__init__()
        self.game = games.load(game, **game_params) if isinstance(game, str) else game
        if game_params and not isinstance(game, str):
            raise ValueError("game parameters are only accepted with a game name")
        self.title = title or self.game.name.replace("_", " ").title()
        self.rules = resolve_rules(rules, self.game)
        self.mode = mode
        self._template = PromptTemplate(title=self.title, rules=self.rules, mode=mode, choice_chain=choice_chain)
        self.invalid_action_policy = resolve_policy(invalid_action_policy)
        if turn_limit is not None and (not isinstance(turn_limit, int) or turn_limit < 1):
            raise ValueError(f"turn_limit must be a positive integer or None, got {turn_limit!r}")
        self.turn_limit = turn_limit
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.metadata = dict(self.metadata, name=f"selfplay_{self.game.name}")

        n = self.game.num_players()
        self.possible_agents = [agent_name(p) for p in range(n)]
        self._player_of = {a: p for p, a in enumerate(self.possible_agents)}
        # built on first use: a text space takes tens of milliseconds (see envs.spaces)
        self._observation_space: spaces.Dict | None = None
        num_actions = self.game.num_distinct_actions()
        self._action_spaces = {a: spaces.Discrete(num_actions) for a in self.possible_agents}
        self._rng = random.Random(seed)
        self.state: games.State | None = None
        self._prompt: TurnPrompt | None = None

    # -- PettingZoo API ---------------------------------------------------------------
    def observation_space(self, agent):
        """Every agent's observation space (one object, built on the first call)."""
        self._check_agent(agent)
        if self._observation_space is None:
            self._observation_space = _observation_space(self.game.num_distinct_actions())
        return self._observation_space

    def action_space(self, agent):
        self._check_agent(agent)
        return self._action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self._rng = random.Random(seed)
        self.state = self.game.new_initial_state()
        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {
            a: {"invalid_actions": 0, "unparseable_actions": 0, "last_error": None}
            for a in self.agents
        }
        self.turns = 0
        self._paid = [0.0] * len(self.agents)
        self._penalties = [0.0] * len(self.agents)
        self._retries_used = 0
        self._feedback = ""
        self._prompt = None
        self._advance_chance()
        self._select_agent()

    def observe(self, agent: str) -> dict:
        self._require_reset("observe")
        player = self._player_of[agent]
        state = self.state
        if state.is_terminal() or state.current_player() != player or not self._alive(agent):
            mask = np.zeros(self.game.num_distinct_actions(), dtype=np.int8)
            return {"prompt": state.observation_string(player), "legal_actions": (), "action_mask": mask}
        prompt = self.turn_prompt()
        return {"prompt": prompt.text, "legal_actions": prompt.choices, "action_mask": self._mask.copy()}

    def step(self, action: "int | str | None") -> None:
        self._require_reset("step")
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        prompt = self.turn_prompt()
        parsed = self._read_action(action, prompt)
        if parsed is None:
            return  # invalid answer handled (retry granted or game ended / fallback played)
        self._play(parsed)
        if self.state.is_terminal():
            self._finish(truncated=False)
        elif self.turn_limit is not None and self.turns >= self.turn_limit:
            self._finish(truncated=True)
        else:
            self._pay_rewards()
            self._select_agent()
        if self.render_mode == "human":
            print(self.render())

    def render(self) -> str | None:
        if self.render_mode is None:
            return None
        self._require_reset("render")
        return str(self.state)

    def close(self) -> None:
        pass

    # -- text protocol ----------------------------------------------------------------
    def turn_prompt(self) -> TurnPrompt:
        """The prompt of the player to move (cached until the state changes)."""
        if self._prompt is not None:
            return self._prompt
        self._require_reset("turn_prompt")
        prompt = self.prompt_for(self.state, self._feedback)
        mask = bytearray(self.game.num_distinct_actions())
        for action in prompt.action_ids:
            mask[action] = 1
        self._mask = np.frombuffer(mask, dtype=np.int8)
        self._prompt = prompt
        return prompt

    def prompt_for(self, state: "games.State", feedback: str = "") -> TurnPrompt:
        """The prompt this env shows the player to move in any `state` of its game.

        Used for the live game and by analysis that needs the policy at every
        information state (e.g. exact exploitability of a language model).
        """
        action_ids = tuple(state.legal_actions())
        choices = tuple([state.action_to_string(a) for a in action_ids])
        player = state.current_player()
        observation = state.observation_string(player)
        return self._template.render(
            observation, action_ids, choices, feedback, state.decision_note(player),
            actions_text=state.legal_actions_text(player),
        )




    # -- internals --------------------------------------------------------------------


    def _alive(self, agent: str) -> bool:
        return not (self.terminations.get(agent, True) or self.truncations.get(agent, True))

    def _read_action(self, action, prompt: TurnPrompt) -> int | None:
        """The legal action id meant by `action`, or None after applying the policy."""
        if isinstance(action, (int, np.integer)) and not isinstance(action, bool):
            if int(action) in prompt.action_ids:
                return int(action)
            feedback = f"Action id {int(action)} is not legal here. Choose one of: {', '.join(prompt.choices)}."
            return self._invalid("illegal", feedback)
        parsed = prompt.parse(action)
        if parsed.action is not None:
            return parsed.action
        return self._invalid(parsed.error, describe_error(parsed, prompt.choices))

    def _invalid(self, error: str, feedback: str) -> None:
        if self._count_invalid_and_retry(error, feedback):
            return None
        player = self._player_of[self.agent_selection]
        policy = self.invalid_action_policy
        offender, other = policy.penalties(self.game.max_utility(), self.game.num_players())
        if policy.ends_game:
            final = [other] * len(self.possible_agents)
            final[player] = offender
            self._pay_rewards(final)
            self._end(truncated=False)
            return None
        self._penalties[player] += offender
        fallback = self._rng.choice(self.state.legal_actions())
        self._play(fallback)
        if self.state.is_terminal():
            self._finish(truncated=False)
        else:
            self._pay_rewards()
            self._select_agent()
        return None

    def _play(self, action: int) -> None:
        self.state.apply_action(action)
        self.turns += 1
        self._retries_used = 0
        self._feedback = ""
        self._prompt = None
        self._advance_chance()

    def _advance_chance(self) -> None:
        state = self.state
        while state.is_chance_node():
            outcomes = state.chance_outcomes()
            actions = [a for a, _ in outcomes]
            weights = [p for _, p in outcomes]
            state.apply_action(self._rng.choices(actions, weights)[0])

    def _select_agent(self) -> None:
        self.agent_selection = self.possible_agents[self.state.current_player()]

    def _pay_rewards(self, totals: list[float] | None = None) -> None:
        """Pay each agent the change of its total return since the last payment."""
        if totals is None:
            totals = self.state.returns()
            if any(self._penalties):
                totals = [r + p for r, p in zip(totals, self._penalties)]
        rewards = self.rewards
        for p, agent in enumerate(self.possible_agents):
            delta = totals[p] - self._paid[p]
            rewards[agent] = delta
            if delta:
                self._paid[p] = totals[p]
                self._cumulative_rewards[agent] += delta

    def _finish(self, truncated: bool) -> None:
        if truncated:  # cut at the turn limit: scored as a draw, penalties kept
            self._pay_rewards(list(self._penalties))
        else:
            self._pay_rewards()
        self._end(truncated)

    def _end(self, truncated: bool) -> None:
        for agent in self.agents:
            if truncated:
                self.truncations[agent] = True
            else:
                self.terminations[agent] = True
        # dead agents step with None in seat order, as PettingZoo expects
        self.agent_selection = self.agents[0]


def resolve_rules(rules: Rules, game: games.Game) -> str:
    """The rules text for `game`: `rules` itself, or what `rules(game)` writes."""
    text = rules(game) if callable(rules) else rules
    if not isinstance(text, str):
        raise ValueError(
            f"rules must be a string or a function of the game returning one, got {type(text).__name__}"
        )
    return text


def _observation_space(num_actions: int) -> spaces.Dict:
    text = text_space(MAX_PROMPT_CHARS)
    return spaces.Dict(
        {
            "prompt": text,
            "legal_actions": spaces.Sequence(text),
            "action_mask": spaces.Box(0, 1, shape=(num_actions,), dtype=np.int8),
        }
    )
