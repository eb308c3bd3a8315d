"""TextArena games as environments of this suite: `envs.make("textarena:PigDice-v0")`.

TextArena (pinned in `requirements/lock.txt`) holds about 70 text games; its two-player
games and its free-for-all games (played with two players: Snake, Liar's Dice) come in whose moves are
free text checked by the game itself (`[roll]`, `[Offer: 3 Wheat -> 2 Ore]`, a message in
a conversation). Their legal moves cannot be listed, so they are not `games` trees; this
adapter is a PettingZoo AEC env of its own with the surface `GameEnv` gives the trainer
and the evaluation (`turn_prompt`, `step` with raw model output, `is_over`,
`episode_returns`, `infos` counting invalid answers, `state` and `game`).

What stays TextArena's: the rules, the messages each player receives (its prompt and the
game's transcript, rendered whole every turn), what a move may be and who wins.
What is ours around it:

* the text protocol: the model answers inside ``\\boxed{}`` (think or direct mode; choice
  mode needs a list of legal actions and is refused by name). The answer goes to the game
  as written, in brackets when it has none (``\\boxed{roll}`` -> ``[roll]``). An output
  with no answer at all is invalid before TextArena sees it;
* the invalid-action policy: TextArena's error allowance (one retry, then the offender
  loses -1 / +1) is replaced by `InvalidActionPolicy`. The game's own allowance is set
  out of reach and every invalid move, ours (no answer) or the game's (its reason is the
  retry feedback), is decided by the policy: `retries` re-asks with the reason, then the
  game ends with the policy's returns. Policies that play a fallback move
  (``ends_game=False``) are refused: there is no list of legal moves to draw one from;
* seeding: TextArena draws from the global `random` module. Each env keeps its own
  `random` state and swaps it in only while TextArena runs, so games are reproducible
  from `reset(seed=...)` and nothing else's random stream moves;
* a turn limit (a draw, as for every game here) and the PettingZoo / Gymnasium views.

Fixed opponents: `random` answers uniformly from the game's move vocabulary
(`MOVE_VOCABULARY`, e.g. `[roll]` / `[hold]` in Pig Dice), which is all TextArena has to
offer for a baseline; games without one take model opponents only.
"""

from __future__ import annotations

import inspect
import random
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from envs.invalid import InvalidActionPolicy, resolve_policy
from envs.parsing import extract_answer
from envs.protocol import TurnPrompt
from envs.spaces import text_space
from envs.text_aec import TextAECEnv

GAME_LIBRARY = "textarena"
MODES = ("think", "direct")
_OUT_OF_REACH = 10**9
"""TextArena's own error allowance, so that our policy decides every invalid move."""
_VARIANT_SUFFIXES = ("-raw", "-train")
"""TextArena registers each game again with other observation wrappers; the adapter uses
the game itself, so these variants are the same game."""

MOVE_VOCABULARY = {
    "PigDice": ("[roll]", "[hold]"),
    "Snake": ("[up]", "[down]", "[left]", "[right]"),
    "SimpleNegotiation": ("[Accept]", "[Deny]"),
    "TruthAndDeception": ("[Fact 1]", "[Fact 2]"),
    "LiarsDice": ("[Call]", "[Bid: 1, 1]", "[Bid: 2, 3]", "[Bid: 3, 5]", "[Bid: 4, 6]"),
    "KuhnPoker": ("[check]", "[bet]", "[call]", "[fold]"),
    "TicTacToe": tuple(f"[{cell}]" for cell in range(9)),
}
"""Moves a uniformly random player draws from, per game family (moves illegal in a
given state are TextArena's invalid moves like any other)."""

_ANSWER_FORMAT = {
    "think": "Think step by step about your move. Then give your final move inside \\boxed{}, written as the game asks, for example \\boxed{%s}.",
    "direct": "Reply with your move only, inside \\boxed{}, written as the game asks, for example \\boxed{%s}. Do not explain.",
}


def _textarena():
    try:
        import textarena
    except ImportError as error:
        raise ImportError("TextArena games need the optional extra: pip install 'selfplay-suite[textarena]'") from error
    return textarena


def _registry() -> dict:
    from textarena.envs.registration import ENV_REGISTRY

    _textarena()
    return ENV_REGISTRY


def _env_class(env_id: str):
    spec = _registry()[env_id]
    entry = spec.entry_point
    if isinstance(entry, str):
        import importlib

        module, _, name = entry.partition(":")
        entry = getattr(importlib.import_module(module), name)
    return entry


def family(env_id: str) -> str:
    """`PigDice-v0-short` -> `PigDice`."""
    return env_id.split("-v")[0]


def unsupported_reason(env_id: str) -> str | None:
    """Why TextArena's `env_id` cannot be an env of this suite, or None if it can."""
    if env_id.endswith(_VARIANT_SUFFIXES):
        return f"a wrapper variant of {env_id.rsplit('-', 1)[0]} (use that id: the adapter renders observations itself)"
    source = _entry_source(env_id)
    if not source:
        return "its module is missing from the installed release"
    if "TwoPlayerState" not in source and "FFAMultiPlayerState" not in source:
        return "neither a two-player nor a free-for-all game (played here with two players)"
    return None


def _entry_source(env_id: str) -> str:
    """The source text of the module defining `env_id`'s game, read without importing it
    (some modules of the release fail to import, or fetch data when imported)."""
    import os

    entry = _registry()[env_id].entry_point
    if not isinstance(entry, str):
        return inspect.getsource(entry)
    root = os.path.dirname(os.path.dirname(_textarena().__file__))
    path = os.path.join(root, *entry.partition(":")[0].split(".")) + ".py"
    if not os.path.exists(path):  # an entry point the release does not ship
        return ""
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def supported_names() -> list[str]:
    """TextArena ids (of the installed release) that `envs.make("textarena:<id>")` accepts."""
    return sorted(i for i in _registry() if unsupported_reason(i) is None)


def library_entry(env_id: str) -> dict:
    """What the registry needs to make `textarena:<env_id>`."""
    registry = _registry()
    if env_id not in registry:
        near = [i for i in supported_names() if family(i).lower() == family(env_id).lower()]
        hint = f"; ids of that game: {', '.join(near)}" if near else ""
        raise ValueError(
            f"unknown TextArena env {env_id!r} in textarena {_textarena().__version__}{hint}; "
            f"supported: {', '.join(supported_names())}"
        )
    reason = unsupported_reason(env_id)
    if reason is not None:
        raise ValueError(f"TextArena env {env_id!r} is not supported: {reason}")
    return dict(
        entry_point=_Factory(env_id),
        text_game=True,
        title=family(env_id),
        description=f"TextArena's {env_id} ({_textarena().__version__}) through the adapter",
    )


@dataclass(frozen=True)
class _Factory:
    """Makes `TextArenaEnv(env_id, ...)`; its signature names the env options and the
    TextArena game's own parameters, so the registry checks both."""

    env_id: str

    def __call__(self, **kwargs) -> "TextArenaEnv":
        return TextArenaEnv(self.env_id, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        options = [p for name, p in inspect.signature(TextArenaEnv).parameters.items() if name not in ("env_id", "game_params")]
        game = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY)
            for name in inspect.signature(_env_class(self.env_id)).parameters
            if name not in ("self", "args", "kwargs")
        ]
        return inspect.Signature([*options, *game])


class TextArenaGame:
    """The facts of one TextArena game that the trainer and the opponents ask for."""

    def __init__(self, env_id: str, params: dict):
        self.env_id = env_id
        self.name = f"{GAME_LIBRARY}:{env_id}"
        self.params = dict(params)
        self.moves = MOVE_VOCABULARY.get(family(env_id), ())

    def num_players(self) -> int:
        return 2

    def num_distinct_actions(self) -> int:
        return max(len(self.moves), 1)

    def max_utility(self) -> float:
        return 1.0

    def is_zero_sum(self) -> bool:
        return True


class TextArenaView:
    """The live game as the rollout and the opponents see it (`env.state`)."""

    def __init__(self, env: "TextArenaEnv"):
        self.env = env
        self.game = env.game

    def current_player(self) -> int:
        return -4 if self.env.is_over() else self.env.player_to_move

    def is_terminal(self) -> bool:
        return self.env.is_over()

    def is_chance_node(self) -> bool:
        return False

    def legal_actions(self) -> list[int]:
        """Indices into the game's move vocabulary (what a random player draws from)."""
        if not self.game.moves:
            raise ValueError(f"{self.game.name} has no move vocabulary for a fixed opponent; play it against a model")
        return list(range(len(self.game.moves)))

    def observation_string(self, player: int) -> str:
        return self.env.transcript(player)

    def information_state_string(self, player: int) -> str:
        """The player's whole transcript: everything it has been told, in order."""
        return f"{player}|{self.env.transcript(player)}"

    def history(self) -> list[str]:
        return list(self.env.moves_played)


class TextArenaEnv(TextAECEnv):
    """PettingZoo AEC env over one two-player TextArena game (see the module docstring).

    Args:
        env_id: a TextArena id, e.g. "PigDice-v0".
        mode: "think" or "direct".
        invalid_action_policy: an `InvalidActionPolicy`, a preset name or a dict (one that
            ends the game).
        turn_limit: cut the game after this many moves and score it a draw.
        seed: seeds the game until `reset(seed=...)`.
        game_params: the TextArena game's own parameters (e.g. `max_turns`).
    """

    metadata = {"render_modes": ["ansi", "human"], "is_parallelizable": False}

    def __init__(
        self,
        env_id: str,
        *,
        title: str = "",
        mode: str = "think",
        invalid_action_policy: "InvalidActionPolicy | str | dict | None" = None,
        turn_limit: int | None = None,
        seed: int | None = 0,
        render_mode: str | None = None,
        **game_params,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(
                f"mode={mode!r} is not available for TextArena games (moves are free text, so there is no "
                f"list of legal actions to choose from); valid modes: {', '.join(MODES)}"
            )
        self.invalid_action_policy = resolve_policy(invalid_action_policy)
        if not self.invalid_action_policy.ends_game:
            raise ValueError(
                "TextArena games need an invalid-action policy that ends the game (ends_game=True): "
                "there is no list of legal moves to play a fallback from"
            )
        if turn_limit is not None and (not isinstance(turn_limit, int) or turn_limit < 1):
            raise ValueError(f"turn_limit must be a positive integer or None, got {turn_limit!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.env_id = env_id
        self.game = TextArenaGame(env_id, game_params)
        self.title = title or family(env_id)
        self.mode = mode
        self.turn_limit = turn_limit
        self.render_mode = render_mode
        self.metadata = dict(self.metadata, name=f"selfplay_textarena_{env_id}")
        self._game_class = _env_class(env_id)
        self._game_kwargs = {**_registry()[env_id].kwargs, **game_params}
        self.possible_agents = [f"player_{p}" for p in range(2)]
        self._player_of = {a: p for p, a in enumerate(self.possible_agents)}
        self._observation_space = None
        self._action_space = spaces.Discrete(self.game.num_distinct_actions())
        self._random_state = random.Random(seed).getstate()
        self.ta_env = None
        self.state: TextArenaView | None = None
        self._prompt: TurnPrompt | None = None

    # -- PettingZoo API ---------------------------------------------------------------
    def observation_space(self, agent):
        self._check_agent(agent)
        if self._observation_space is None:
            text = text_space(65_536)
            self._observation_space = spaces.Dict({
                "prompt": text,
                "legal_actions": spaces.Sequence(text),
                "action_mask": spaces.Box(0, 1, shape=(self.game.num_distinct_actions(),), dtype=np.int8),
            })
        return self._observation_space

    def action_space(self, agent):
        self._check_agent(agent)
        return self._action_space

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self._random_state = random.Random(seed).getstate()
        with self._textarena_random():
            self.ta_env = self._game_class(**self._game_kwargs)
            self.ta_env.reset(num_players=2, seed=None)
        self.ta_env.state.error_allowance = _OUT_OF_REACH
        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {"invalid_actions": 0, "unparseable_actions": 0, "last_error": None} for a in self.agents}
        self.turns = 0
        self.moves_played: list[str] = []
        self._paid = [0.0, 0.0]
        self._retries_used = 0
        self._feedback = ""
        self._transcripts = ["", ""]
        self._prompt = None
        self.state = TextArenaView(self)
        self._collect_observations()
        self.agent_selection = self.possible_agents[self.player_to_move]

    def observe(self, agent: str) -> dict:
        self._require_reset("observe")
        player = self._player_of[agent]
        mask = np.zeros(self.game.num_distinct_actions(), dtype=np.int8)
        if self.is_over() or player != self.player_to_move:
            return {"prompt": self.transcript(player), "legal_actions": (), "action_mask": mask}
        prompt = self.turn_prompt()
        mask[: len(self.game.moves)] = 1
        return {"prompt": prompt.text, "legal_actions": prompt.choices, "action_mask": mask}

    def step(self, action: "int | str | None") -> None:
        self._require_reset("step")
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        move = self._move_text(action)
        if move is None:
            self._invalid("unparseable", "Your previous reply contained no move. Give your move inside \\boxed{}.")
            return
        player = self.player_to_move
        errors_before = self.ta_env.state.error_count
        with self._textarena_random():
            done, _ = self.ta_env.step(move)
        self._collect_observations()
        if self.ta_env.state.error_count > errors_before:  # TextArena found the move invalid
            self._invalid("illegal", f"Your previous move was invalid: {self._last_reason(player)}")
            return
        self.turns += 1
        self.moves_played.append(move)
        self._retries_used = 0
        self._feedback = ""
        self._prompt = None
        if done:
            self._finish([float(self.ta_env.state.rewards.get(p, 0.0)) for p in range(2)], truncated=False)
        elif self.turn_limit is not None and self.turns >= self.turn_limit:
            self._finish([0.0, 0.0], truncated=True)
        else:
            self._clear_rewards()
            self.agent_selection = self.possible_agents[self.player_to_move]

    def render(self) -> str | None:
        if self.render_mode is None:
            return None
        self._require_reset("render")
        return self.transcript(self.player_to_move)

    def close(self) -> None:
        pass

    # -- what the trainer and evaluation use ------------------------------------------
    @property
    def player_to_move(self) -> int:
        return int(self.ta_env.state.current_player_id)




    def transcript(self, player: int) -> str:
        """Everything TextArena has told `player` so far, in order."""
        return self._transcripts[player].strip()

    def turn_prompt(self) -> TurnPrompt:
        """The prompt of the player to move: TextArena's messages to it, then our answer format."""
        if self._prompt is not None:
            return self._prompt
        self._require_reset("turn_prompt")
        example = self.game.moves[0] if self.game.moves else "[your move]"
        feedback = f"\n{self._feedback}" if self._feedback else ""
        text = (
            f"You are playing {self.title} (TextArena's {self.env_id}) as Player {self.player_to_move}.\n\n"
            f"{self.transcript(self.player_to_move)}\n{feedback}\n{_ANSWER_FORMAT[self.mode] % example}"
        )
        moves = self.game.moves
        self._prompt = TurnPrompt(text, tuple(moves), tuple(range(len(moves))))
        return self._prompt

    # -- internals --------------------------------------------------------------------
    @contextmanager
    def _textarena_random(self):
        """Run TextArena on this env's own `random` state, leaving the global one as it was."""
        outside = random.getstate()
        random.setstate(self._random_state)
        try:
            yield
        finally:
            self._random_state = random.getstate()
            random.setstate(outside)

    def _collect_observations(self) -> None:
        """Append what TextArena has queued for each player to that player's transcript."""
        state = self.ta_env.state
        for player in range(2):
            for sender, message, _ in state.observations[player]:
                speaker = "GAME" if sender == -1 else f"Player {sender}"
                self._transcripts[player] += f"[{speaker}] {message}\n"
            state.observations[player] = []

    def _last_reason(self, player: int) -> str:
        lines = [line for line in self._transcripts[player].splitlines() if "invalid move" in line.lower()]
        return lines[-1].split("Reason:", 1)[-1].strip() if lines else "the game refused it"

    def _move_text(self, action) -> str | None:
        """The move handed to TextArena: a vocabulary move for an id, else the extracted answer."""
        if isinstance(action, (int, np.integer)) and not isinstance(action, bool):
            moves = self.game.moves
            return moves[int(action)] if 0 <= int(action) < len(moves) else None
        answer = extract_answer(action) if isinstance(action, str) else None
        if not answer:
            return None
        return answer if "[" in answer else f"[{answer}]"

    def _invalid(self, error: str, feedback: str) -> None:
        if self._count_invalid_and_retry(error, feedback):
            return
        player = self._player_of[self.agent_selection]
        policy = self.invalid_action_policy
        offender, other = policy.penalties(self.game.max_utility(), 2)
        final = [other, other]
        final[player] = offender
        self._finish(final, truncated=False)

    def _finish(self, totals: list[float], truncated: bool) -> None:
        for p, agent in enumerate(self.possible_agents):
            delta = totals[p] - self._paid[p]
            self.rewards[agent] = delta
            self._cumulative_rewards[agent] += delta
            self._paid[p] = totals[p]
            if truncated:
                self.truncations[agent] = True
            else:
                self.terminations[agent] = True
        self.agent_selection = self.agents[0]


