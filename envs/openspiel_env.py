"""OpenSpiel games as games of this suite: `envs.make("openspiel:leduc_poker")`.

OpenSpiel (`pip install selfplay-suite[openspiel]`, module `pyspiel`) holds about 80
games with exact rules, explicit chance and per-player information states: the same
protocol as `games.base`. `OpenSpielGame` wraps one pyspiel game in that protocol, so
the generic `envs.game_env.GameEnv` gives it prompts, parsing, the invalid-action
policy, the PettingZoo and Gymnasium views, `envs.check`, training, and
`games.analysis` its exact best response and exploitability (whenever the tree is small
enough), with nothing written per game.

Which games (`unsupported_reason` says why one is not):

* turn-based games of two or more players, chance allowed when its outcomes are listed
  with probabilities (OpenSpiel's explicit stochastic chance);
* simultaneous-move games (goofspiel, oshi_zumo, the matrix games) through OpenSpiel's
  own turn-based transform: players move one after the other and no one sees the moves
  of the same round before making its own, so every seat keeps the information it had;
* refused by name: single-player and mean-field games, sampled chance (no outcome
  distribution to seed or analyse), games that need a file to load, and
  imperfect-information games without information-state strings (no key for the
  player's information set).

Ids carry OpenSpiel's own game string: `openspiel:liars_dice(numdice=1)`; parameters may
also be given as keyword arguments of `envs.make` (they override the string).

What the model reads: "You are Player p", the rules of the game (written here for the
common games, a one-line pointer to OpenSpiel's game otherwise), and the player's view:
the observation string in perfect-information games (the board), the information-state
string otherwise (what the player knows, history included). Actions are OpenSpiel's
action strings in brackets (`[Raise]`, `[1-3]`, `[x3]`), with brackets and braces inside
them turned into parentheses so the answer parser reads every one back.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import games
from games.base import check_player

GAME_LIBRARY = "openspiel"

# Short rules for the games SPIRAL's evaluation and the issue name; other games get a
# pointer to OpenSpiel's implementation (their observation strings are self-describing).
RULES = {
    "kuhn_poker": (
        "Kuhn Poker with OpenSpiel's rules: a deck of three cards (0 < 1 < 2); each player "
        "antes 1 chip and gets one card. Players act in turn: [Pass] (check, or fold when "
        "facing a bet) or [Bet] (bet 1, or call a bet). The higher card wins the pot at a "
        "showdown. Your state reads: your card, then the moves so far (p = pass, b = bet)."
    ),
    "leduc_poker": (
        "Leduc Poker: a six-card deck (two suits of J, Q, K); each player antes 1 chip and "
        "gets one private card. Two betting rounds (raises of 2, then 4 chips; at most two "
        "raises a round): [Fold], [Call] (or check) or [Raise]. After the first round one "
        "public card is dealt. At a showdown a pair with the public card wins, else the "
        "higher card. In your state, cards are numbered 0-5 (0-1 J, 2-3 Q, 4-5 K), and in "
        "the round histories 0 = fold, 1 = call, 2 = raise."
    ),
    "liars_dice": (
        "Liar's Dice: each player rolls dice hidden from the other. Players take turns "
        "raising the bid '[quantity-face]' (at least that many dice of that face among all "
        "dice; a 6 counts as any face), or calling [Liar] on the last bid. If the bid holds, "
        "the caller loses; otherwise the bidder loses. Your state reads: your dice, then the "
        "bids so far."
    ),
    "connect_four": (
        "Connect Four: players drop a piece into one of the columns 0-6 (x moves first, then "
        "o); it falls to the lowest empty cell. Four of your pieces in a row, column or "
        "diagonal win; a full board is a draw. The board shows the top row first."
    ),
    "pig": (
        "Pig: on your turn [roll] a die as often as you like, adding the face to your turn "
        "total, or [stop] to bank the turn total into your score. Rolling a 1 loses the turn "
        "total and ends your turn. The first player to reach the target score wins."
    ),
    "goofspiel": (
        "Goofspiel: each player holds cards 1..N; each round a point card is revealed and "
        "both players bid one of their cards at the same time (you do not see this round's "
        "other bid). The higher bid wins the point card's points; equal bids win nothing. "
        "Bid cards are used up. The player with more points at the end wins."
    ),
    "tic_tac_toe": (
        "Tic-tac-toe: players mark empty cells (x first, then o), written (row,column) with "
        "rows and columns 0-2. Three marks in a line win; a full board is a draw."
    ),
    "nim": (
        "Nim: players take turns removing any positive number of matches from one pile "
        "(pile:take). Whoever takes the last match wins (unless the game is misere)."
    ),
}

_UNREADABLE = str.maketrans({"[": "(", "]": ")", "{": "(", "}": ")", "\\": "/"})


def _pyspiel():
    try:
        import pyspiel
    except ImportError as error:  # the optional extra is missing
        raise ImportError(
            "OpenSpiel games need the optional extra: pip install 'selfplay-suite[openspiel]' (module pyspiel)"
        ) from error
    return pyspiel


# -- which games ----------------------------------------------------------------------------

def unsupported_reason(name: str) -> str | None:
    """Why OpenSpiel's game `name` cannot be an env of this suite, or None if it can."""
    pyspiel = _pyspiel()
    game_type = _game_type(name)
    kinds = pyspiel.GameType
    if game_type.dynamics == kinds.Dynamics.MEAN_FIELD:
        return "a mean-field game (one representative player against a population)"
    if game_type.max_num_players < 2:
        return "a single-player game (this suite's games have two or more players)"
    if game_type.chance_mode == kinds.ChanceMode.SAMPLED_STOCHASTIC:
        return "sampled chance: its chance outcomes have no listed probabilities to seed or analyse"
    if not game_type.default_loadable:
        return "it cannot be loaded without parameters (e.g. a file or another game)"
    if not (game_type.provides_information_state_string or game_type.provides_observation_string):
        return "it provides neither information-state nor observation strings to show a player"
    imperfect = game_type.information != kinds.Information.PERFECT_INFORMATION
    if imperfect and not game_type.provides_information_state_string:
        return "imperfect information without information-state strings (no key for a player's information set)"
    return None


def supported_names() -> list[str]:
    """OpenSpiel's registered games that `envs.make("openspiel:<name>")` accepts, sorted."""
    pyspiel = _pyspiel()
    return sorted(t.short_name for t in pyspiel.registered_games() if unsupported_reason(t.short_name) is None)


def _game_type(name: str):
    pyspiel = _pyspiel()
    types = {t.short_name: t for t in pyspiel.registered_games()}
    if name not in types:
        raise ValueError(
            f"unknown OpenSpiel game {name!r}; supported: {', '.join(sorted(n for n in types if _quiet_supported(n)))}"
        )
    return types[name]


def _quiet_supported(name: str) -> bool:
    return unsupported_reason(name) is None


# -- the game --------------------------------------------------------------------------------

def split_game_string(text: str) -> tuple[str, dict]:
    """`"liars_dice(numdice=1)"` -> `("liars_dice", {"numdice": 1})` (OpenSpiel's own parser)."""
    pyspiel = _pyspiel()
    if not re.fullmatch(r"[A-Za-z0-9_]+(\(.*\))?", text or ""):
        raise ValueError(f"an OpenSpiel game is written name or name(param=value,...), got {text!r}")
    params = dict(pyspiel.game_parameters_from_string(text))
    return params.pop("name"), params


def parameter_names(name: str) -> list[str]:
    """The parameters OpenSpiel's game `name` accepts."""
    return sorted(_game_type(name).parameter_specification)


def load(text: str, **params) -> "OpenSpielGame":
    """The OpenSpiel game `text` (a name or game string) with `params` on top, wrapped."""
    name, parsed = split_game_string(text)
    spec = _game_type(name).parameter_specification
    reason = unsupported_reason(name)
    if reason is not None:
        raise ValueError(f"OpenSpiel game {name!r} is not supported: {reason}")
    merged = {**parsed, **params}
    unknown = sorted(set(merged) - set(spec))
    if unknown:
        raise ValueError(
            f"OpenSpiel game {name!r} got unknown parameter(s) {unknown}; valid parameters: {', '.join(sorted(spec)) or 'none'}"
        )
    typed = {key: _as_type_of(key, value, spec[key]) for key, value in merged.items()}
    return OpenSpielGame(name, typed)


def _as_type_of(key: str, value, default):
    """`value` in the type OpenSpiel expects for the parameter `key` (whose default is `default`)."""
    expected = type(default)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"parameter {key}={value!r} must be a {expected.__name__} (default {default!r})")


class OpenSpielGame(games.Game):
    """One pyspiel game (simultaneous ones through the turn-based transform) in the `games` protocol."""

    def __init__(self, short_name: str, params: dict | None = None):
        pyspiel = _pyspiel()
        self.short_name = short_name
        self._params = dict(params or {})
        game = pyspiel.load_game(short_name, self._params)
        self.simultaneous = game.get_type().dynamics == pyspiel.GameType.Dynamics.SIMULTANEOUS
        self.spiel_game = pyspiel.convert_to_turn_based(game) if self.simultaneous else game
        self.game_type = game.get_type()
        self.name = f"{GAME_LIBRARY}:{short_name}"
        kinds = pyspiel.GameType
        self.perfect_information = self.spiel_game.get_type().information == kinds.Information.PERFECT_INFORMATION
        self.provides_information_state = self.spiel_game.get_type().provides_information_state_string
        self.provides_observation = self.spiel_game.get_type().provides_observation_string

    def num_players(self) -> int:
        return self.spiel_game.num_players()

    def num_distinct_actions(self) -> int:
        return self.spiel_game.num_distinct_actions()

    def new_initial_state(self) -> "OpenSpielState":
        return OpenSpielState(self, self.spiel_game.new_initial_state())

    def max_game_length(self) -> int:
        return self.spiel_game.max_game_length()

    def params(self) -> dict:
        return dict(self._params)

    def max_utility(self) -> float:
        return float(max(self.spiel_game.max_utility(), -self.spiel_game.min_utility()))

    def is_zero_sum(self) -> bool:
        return self.game_type.utility == _pyspiel().GameType.Utility.ZERO_SUM

    def game_string(self) -> str:
        """OpenSpiel's string of the game played (what `pyspiel.load_game` accepts)."""
        if not self._params:
            return self.short_name
        args = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(self._params.items()))
        return f"{self.short_name}({args})"

    def __repr__(self) -> str:
        return f"OpenSpielGame({self.game_string()!r})"


class OpenSpielState(games.State):
    """A pyspiel state seen through the `games` protocol; `spiel_state` is the state itself."""

    def __init__(self, game: OpenSpielGame, spiel_state):
        super().__init__(game)
        self.spiel_state = spiel_state

    def current_player(self) -> int:
        if self.spiel_state.is_terminal():
            return games.TERMINAL_PLAYER
        if self.spiel_state.is_chance_node():
            return games.CHANCE_PLAYER
        return self.spiel_state.current_player()

    def _legal_actions(self) -> list[int]:
        return list(self.spiel_state.legal_actions())

    def chance_outcomes(self) -> list[tuple[int, float]]:
        return [(int(a), float(p)) for a, p in self.spiel_state.chance_outcomes()]

    def is_legal(self, action: int) -> bool:
        return action in self.legal_actions()

    def _apply_action(self, action: int) -> None:
        self.spiel_state.apply_action(action)

    def history(self) -> list[int]:
        return list(self.spiel_state.history())

    def action_to_string(self, action: int) -> str:
        player = self.spiel_state.current_player()
        text = self.spiel_state.action_to_string(player, action).translate(_UNREADABLE).strip()
        return f"[{text or action}]"

    def returns(self) -> list[float]:
        return [float(r) for r in self.spiel_state.returns()]

    def observation_string(self, player: int) -> str:
        check_player(self, player)
        return f"You are Player {player}.\n{self._view(player)}"

    def information_state_string(self, player: int) -> str:
        """OpenSpiel's information-state string, or in perfect-information games that do not
        provide one the history (it identifies the state); prefixed by the player so that two
        players never share a key."""
        check_player(self, player)
        game = self.game
        if game.provides_information_state:
            return f"{player}|{self.spiel_state.information_state_string(player)}"
        return f"{player}|{self.spiel_state.history_str()}"

    def _view(self, player: int) -> str:
        game = self.game
        if game.provides_observation and (game.perfect_information or not game.provides_information_state):
            return self.spiel_state.observation_string(player).rstrip()
        return self.spiel_state.information_state_string(player).rstrip()

    def clone(self) -> "OpenSpielState":
        return OpenSpielState(self.game, self.spiel_state.clone())

    def __str__(self) -> str:
        return str(self.spiel_state)


def spiel_key(key: str) -> str:
    """OpenSpiel's own information-state string of one of our keys (the player prefix removed)."""
    return key.split("|", 1)[1]


# -- the env registry's view ----------------------------------------------------------------

def rules_text(game: OpenSpielGame) -> str:
    """The rules shown to the model for `game`."""
    rules = RULES.get(game.short_name)
    if rules is None:
        rules = (
            f"{game.game_type.long_name}, with the rules of OpenSpiel's game "
            f"{game.game_string()!r}. Your view of the game is shown below."
        )
    elif game.params():
        rules += f" (OpenSpiel game {game.game_string()!r}.)"
    return rules


@dataclass(frozen=True)
class GameFactory:
    """Builds the game of one id; `inspect.signature` of it names the game's parameters,
    so the registry reports and checks them like those of a built-in game."""

    text: str

    def __call__(self, **params) -> OpenSpielGame:
        return load(self.text, **params)

    @property
    def __signature__(self) -> inspect.Signature:
        name, _ = split_game_string(self.text)
        return inspect.Signature(
            [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in parameter_names(name)]
        )


def library_entry(text: str) -> dict:
    """What the registry needs to make `openspiel:<text>`: the game factory, title, rules."""
    name, params = split_game_string(text)
    load(text)  # unknown names, parameters and unsupported games fail here, by name
    title = _game_type(name).long_name
    return dict(
        game=GameFactory(text),
        title=title,
        rules=rules_text,
        description=f"OpenSpiel's {title} ({text}) through the adapter",
    )


# -- OpenSpiel's own analysis, for cross-checks ---------------------------------------------

def openspiel_exploitability(game: OpenSpielGame, policy: dict[str, dict[int, float]]) -> float:
    """Exploitability of `policy` (keyed by our information-state keys) by OpenSpiel's own code."""
    from open_spiel.python import policy as spiel_policy
    from open_spiel.python.algorithms import exploitability

    tabular = spiel_policy.TabularPolicy(game.spiel_game)
    for key, distribution in policy.items():
        row = tabular.policy_for_key(spiel_key(key))
        row[:] = 0.0
        for action, probability in distribution.items():
            row[action] = probability
    return float(exploitability.exploitability(game.spiel_game, tabular))
