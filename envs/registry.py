"""The environment registry: `register`, `make`, `list_envs`.

Two kinds of entries:

* game environments: a rules engine from `games` plus the text that explains it; `make`
  returns a PettingZoo AEC `GameEnv` (multi-agent, turn-based);
* task environments: any Gymnasium env class (e.g. the SAT task), given as an entry
  point; `make` returns the Gymnasium env.

Registering a game env takes one call:

    envs.register("nim", game=NimGame, title="Nim", rules="Take 1 to 3 stones ...")

`rules` may also be a function of the game (`rules=lambda game: ...`) that writes the
rules from the game's parameters; the env calls it once, when it is made.

Every registered id also gets a Gymnasium id ``selfplay/<env_id>-v0`` (a game env as a
single-agent view against a random opponent) so `gymnasium.make` works too.

Whole game libraries come in through adapters named by a prefix: ``openspiel:<game
string>`` (`envs.openspiel_env`) and ``textarena:<env id>`` (`envs.textarena_env`). Their
ids are resolved when asked for, not registered one by one: `list_envs("openspiel")` lists
what a library supports, `list_envs()` only what is registered here (the tests check every
one of those, and a library's whole list costs seconds to build).

Markovian thinking (``thinking=`` of `envs.make`) wraps what this module makes; it lives in
`envs.markovian`, which imports this module, never the other way round.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import games

GYM_NAMESPACE = "selfplay"

LIBRARIES = {"openspiel": "envs.openspiel_env", "textarena": "envs.textarena_env"}
"""Prefix -> adapter module. An adapter module has `library_entry(name) -> dict` (the
EnvSpec fields: `game=` a factory, or `entry_point=` with `text_game=True`; title, rules,
description) and `supported_names() -> list[str]`."""


@dataclass(frozen=True)
class EnvSpec:
    env_id: str
    game: "str | Callable[..., games.Game] | None" = None
    """Game name in `games`, or a Game factory; None for task envs."""
    entry_point: "str | Callable[..., Any] | None" = None
    """Task env class or "module:attribute"; None for game envs."""
    title: str = ""
    rules: "str | Callable[[games.Game], str]" = ""
    """The rules text, or a function of the game that writes it."""
    kwargs: dict = field(default_factory=dict)
    """Defaults passed to the constructor (overridden by `make`'s kwargs)."""
    description: str = ""
    text_game: bool = False
    """A multi-agent env whose moves are free text (a TextArena game): made from
    `entry_point` like a task, played like a game."""
    games_per_step: int = 0
    """A short game's own step size when it trains alone (Kuhn Poker: 512 hands, about 1,150
    turns); 0: its steps are sized by turn samples (`trainers.rollouts.step_size`)."""

    @property
    def kind(self) -> str:
        return "game" if self.game is not None or self.text_game else "task"


_SPECS: dict[str, EnvSpec] = {}


def register(
    env_id: str,
    *,
    game: "str | Callable[..., games.Game] | None" = None,
    entry_point: "str | Callable[..., Any] | None" = None,
    title: str = "",
    rules: "str | Callable[[games.Game], str]" = "",
    description: str = "",
    games_per_step: int = 0,
    overwrite: bool = False,
    **kwargs,
) -> EnvSpec:
    """Register `env_id`: give `game` (a game env) or `entry_point` (a task env).

    `games_per_step`: for a game whose games are short and few-stated, the games a step
    plays when it trains alone and neither step key is set; by default a step trains on
    `trainers.rollouts.step_size.DEFAULT_SAMPLES_PER_STEP` (128) turn samples, however
    long the games are.

    A `game` that is a factory (e.g. a `games.Game` subclass) is also registered in
    `games` under `env_id` unless a game of that name exists, so analysis tools and
    opponents can load it by name.
    """
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env_id must be a non-empty string, got {env_id!r}")
    if (game is None) == (entry_point is None):
        raise ValueError("register() needs exactly one of game= (a game env) or entry_point= (a task env)")
    if env_id in _SPECS and not overwrite:
        raise ValueError(f"env {env_id!r} is already registered (pass overwrite=True to replace it)")
    if game is not None and not isinstance(game, str) and env_id not in games.list_games():
        games.register_game(env_id, game)
        game = env_id
    if not isinstance(games_per_step, int) or games_per_step < 0:
        raise ValueError(f"games_per_step must be an int >= 0, got {games_per_step!r}")
    spec = EnvSpec(env_id, game, entry_point, title, rules, dict(kwargs), description, games_per_step=games_per_step)
    _SPECS[env_id] = spec
    _register_with_gymnasium(spec)
    return spec


def list_envs(library: str | None = None) -> list[str]:
    """Registered env ids, sorted; with `library` ("openspiel", "textarena") the ids that
    library's adapter supports in the installed release, or with "all" both together."""
    if library is None:
        return sorted(_SPECS)
    if library == "all":
        return sorted(_SPECS) + [i for name in LIBRARIES for i in _library_ids(name)]
    if library not in LIBRARIES:
        raise ValueError(f"unknown library {library!r}; choose one of: {', '.join(LIBRARIES)}, all")
    return _library_ids(library)


def _library_ids(library: str) -> list[str]:
    return [f"{library}:{name}" for name in _library(library).supported_names()]


def _library(prefix: str):
    return importlib.import_module(LIBRARIES[prefix])


@functools.lru_cache(maxsize=None)
def _library_spec(prefix: str, name: str) -> EnvSpec:
    """The spec of a library id: a pure function of the id and the installed library,
    remembered because the trainer asks for it once per sample."""
    return EnvSpec(f"{prefix}:{name}", **_library(prefix).library_entry(name))


def spec(env_id: str) -> EnvSpec:
    if env_id in _SPECS:
        return _SPECS[env_id]
    prefix, colon, name = env_id.partition(":") if isinstance(env_id, str) else ("", "", "")
    if colon and prefix in LIBRARIES:
        if not name:
            raise ValueError(f"env {env_id!r} names no game; write {prefix}:<game>")
        return _library_spec(prefix, name)
    raise ValueError(
        f"unknown env {env_id!r}; registered envs: {', '.join(list_envs())}; "
        f"or a library game: {', '.join(p + ':<game>' for p in LIBRARIES)}"
    )


def make(env_id: str, **kwargs):
    """Build the env `env_id`; unknown ids and keyword arguments name what exists.

    (`envs.make` adds ``thinking="markovian"``, see `envs.markovian`.)
    """
    entry = spec(env_id)
    merged = {**entry.kwargs, **kwargs}
    if entry.kind == "game" and not entry.text_game:
        return _make_game_env(entry, merged)
    cls = _resolve(entry.entry_point)
    _check_kwargs(env_id, cls, merged)
    return cls(**merged)


def parameters(env_id: str) -> list[str]:
    """The env's own parameters: its game's (game envs) or its class's (task envs)."""
    entry = spec(env_id)
    if entry.game is None:
        return list(inspect.signature(_resolve(entry.entry_point)).parameters)
    factory = games.game_factory(entry.game) if isinstance(entry.game, str) else entry.game
    return list(inspect.signature(factory).parameters)


def _make_game_env(entry: EnvSpec, kwargs: dict):
    from envs.game_env import GameEnv

    game_name = entry.game if isinstance(entry.game, str) else None
    env_options = [
        p for p in inspect.signature(GameEnv).parameters if p not in ("game", "game_params")
    ]
    game_options = parameters(entry.env_id)
    unknown = [k for k in kwargs if k not in env_options and k not in game_options]
    if unknown:
        raise ValueError(
            f"env {entry.env_id!r} got unknown argument(s) {unknown}; "
            f"env options: {', '.join(env_options)}; game parameters: {', '.join(game_options) or 'none'}"
        )
    kwargs.setdefault("title", entry.title)
    kwargs.setdefault("rules", entry.rules)
    if game_name is not None:
        return GameEnv(game_name, **kwargs)
    game_params = {k: kwargs.pop(k) for k in list(kwargs) if k in game_options}
    return GameEnv(entry.game(**game_params), **kwargs)


def _check_kwargs(env_id: str, cls, kwargs: dict) -> None:
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [k for k in kwargs if k not in parameters]
    if unknown:
        raise ValueError(
            f"env {env_id!r} got unknown argument(s) {unknown}; valid: {', '.join(parameters)}"
        )


def _resolve(entry_point):
    if isinstance(entry_point, str):
        module_name, _, attribute = entry_point.partition(":")
        return getattr(importlib.import_module(module_name), attribute)
    return entry_point


def gym_id(env_id: str) -> str:
    """The Gymnasium id of a registered env."""
    return f"{GYM_NAMESPACE}/{env_id}-v0"


def make_gym(env_id: str, **kwargs):
    """A Gymnasium env for `env_id`: the task env itself, or a game's single-agent view."""
    entry = spec(env_id)
    if entry.kind == "task":
        return make(env_id, **kwargs)
    from envs.single_agent import SingleAgentEnv

    view_options = ("opponent", "seat", "seed")
    view_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in view_options}
    return SingleAgentEnv(make(env_id, **kwargs), **view_kwargs)


def _register_with_gymnasium(entry: EnvSpec) -> None:
    import gymnasium

    identifier = gym_id(entry.env_id)
    gymnasium.registry.pop(identifier, None)
    gymnasium.register(id=identifier, entry_point=_GymEntryPoint(entry.env_id), disable_env_checker=True)


class _GymEntryPoint:
    """Picklable callable that builds the Gymnasium form of a registered env."""

    def __init__(self, env_id: str):
        self.env_id = env_id

    def __call__(self, **kwargs):
        return make_gym(self.env_id, **kwargs)
