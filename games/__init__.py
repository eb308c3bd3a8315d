"""Rules engines: pure Python games with explicit chance, integer actions, per-player views.

    >>> import games
    >>> game = games.load("kuhn_poker", hands=3)
    >>> state = game.new_initial_state()

No RL API, no language model, no text parsing lives here (see envs/ for those).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

from games.base import CHANCE_PLAYER, TERMINAL_PLAYER, Game, IllegalActionError, State

__all__ = [
    "CHANCE_PLAYER",
    "TERMINAL_PLAYER",
    "Game",
    "IllegalActionError",
    "State",
    "game_factory",
    "load",
    "list_games",
    "register_game",
]

# name -> factory, or "module:attribute" resolved on first use (keeps `import games` cheap)
_REGISTRY: dict[str, Callable[..., Game] | str] = {
    "kuhn_poker": "games.kuhn_poker:KuhnPokerGame",
    "tic_tac_toe": "games.tic_tac_toe:TicTacToeGame",
    "simple_negotiation": "games.simple_negotiation:SimpleNegotiationGame",
}


def register_game(name: str, factory: Callable[..., Game] | str, *, overwrite: bool = False) -> None:
    """Make `games.load(name, **params)` call `factory(**params)`.

    `factory` is a callable (usually the Game class) or a "module:attribute" string.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"game name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"game {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = factory


def list_games() -> list[str]:
    """Names of all registered games, sorted."""
    return sorted(_REGISTRY)


def game_factory(name: str) -> Callable[..., Game]:
    """The callable that `load(name, **params)` calls."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown game {name!r}; registered games: {', '.join(list_games())}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module_name, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attribute)
        _REGISTRY[name] = factory
    return factory


def load(name: str, **params) -> Game:
    """Build the game `name` with `params`; unknown names or parameters name what exists."""
    factory = game_factory(name)
    accepted = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in params if k not in accepted]
    if unknown and not takes_any:
        valid = ", ".join(accepted) or "none"
        raise ValueError(f"game {name!r} got unknown parameter(s) {unknown}; valid parameters: {valid}")
    return factory(**params)
