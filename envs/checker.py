"""One checker for every registered environment.

`check_env(env_id)` first walks a game env's game through the `games` protocol
(`check_game`: every state when the game tree is small, seeded random playouts always),
so that a broken game fails with a message naming its defect and the state where it
shows (returns that are not zero-sum in a zero-sum game, returns of the wrong length,
legal actions out of range, duplicated or indistinguishable to the answer parser, a
player id out of range, chance outcomes that are not a distribution, a game that does
not end within its declared length) rather than with an IndexError deep inside an API
test, or a hang.

Then it runs, for a game env: PettingZoo's `api_test`, `seed_test`, `parallel_api_test`
(on the parallel form) and Gymnasium's `check_env` (on the single-agent view); for a
task env: Gymnasium's `check_env`. Last it fuzzes the text path with arbitrary strings
from hypothesis (derandomised, so a run is reproducible): no input may crash the env,
and every answer is either a legal action (the state advances with exactly the action
the answer names) or an invalid action (counted in `infos`), never both and never
neither.
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import games
from envs.parsing import extract_answer, normalize_action_text
from envs.registry import make, make_gym, spec

EXHAUSTIVE_WALK_STATES = 5_000
"""`check_game` visits every state of a game tree up to this size (Kuhn Poker, small Nim)."""
PROTOCOL_PLAYOUTS = 50
ACTION_CAP = 100_000
"""Actions (chance included) after which a playout is declared endless, whatever the
game's own `max_game_length()` says: the checker fails instead of hanging."""

# Pieces that make near-miss answers much more likely than uniform text does.
_FUZZ_PIECES = [
    "\\boxed{", "}", "{", "[", "]", "\\text{", "\\boxed", " ", "\n", "\\", "$",
    "[bet]", "[Bet]", "[call]", "[fold]", "[check]", "[4]", "[ 4 ]", "[Accept]", "[Deny]",
    "[Offer: 1 Wood -> 1 Gold]", "[Offer:10 Gold->10 Wood]", "0101", "\\boxed{}", "BET", "4",
]


@dataclass
class CheckReport:
    env_id: str
    kind: str
    passed: list[str] = field(default_factory=list)
    fuzz_examples: int = 0
    fuzz_valid: int = 0
    fuzz_invalid: int = 0
    protocol_states: int = 0
    """Game states checked by the protocol walk (0 for task envs)."""

    def __str__(self) -> str:
        return (
            f"{self.env_id} ({self.kind}): passed {', '.join(self.passed)}; "
            f"walked {self.protocol_states} game states; fuzzed "
            f"{self.fuzz_examples} answers ({self.fuzz_valid} legal, {self.fuzz_invalid} invalid)"
        )


def check_env(env_id: str, *, fuzz_examples: int = 200, cycles: int = 50, **make_kwargs) -> CheckReport:
    """Check `env_id` (built with `make_kwargs`); raises AssertionError on any failure."""
    entry = spec(env_id)
    report = CheckReport(env_id, entry.kind)
    with warnings.catch_warnings():
        # the API testers warn that text observations are not numpy arrays: by design
        warnings.simplefilter("ignore")
        if entry.text_game:  # free-text moves (TextArena): no game tree to walk
            _check_game_apis(env_id, make_kwargs, cycles, report)
            _fuzz_text_game(env_id, make_kwargs, fuzz_examples, report)
        elif entry.kind == "game":
            report.protocol_states = check_game(make(env_id, **make_kwargs).game)
            report.passed.append("game protocol")
            _check_game_apis(env_id, make_kwargs, cycles, report)
            _fuzz_game(env_id, make_kwargs, fuzz_examples, report)
        else:
            from gymnasium.utils.env_checker import check_env as gym_check_env

            gym_check_env(make(env_id, **make_kwargs), skip_render_check=True)
            report.passed.append("gymnasium.check_env")
            _fuzz_task(env_id, make_kwargs, fuzz_examples, report)
    return report


class GameProtocolError(AssertionError):
    """A game breaks the `games` protocol; the message names the defect and the state."""


def check_game(
    game: games.Game,
    *,
    playouts: int = PROTOCOL_PLAYOUTS,
    seed: int = 0,
    exhaustive_states: int = EXHAUSTIVE_WALK_STATES,
    action_cap: int = ACTION_CAP,
) -> int:
    """Walk `game` through the protocol; return how many states were checked (with repeats).

    Visits states depth first until `exhaustive_states` (every state of a small game),
    then plays `playouts` uniformly random games from `random.Random(seed)`. Raises
    `GameProtocolError` at the first defect.
    """
    walk = _ProtocolWalk(game, action_cap)
    walk.depth_first(exhaustive_states)
    rng = random.Random(seed)
    for _ in range(playouts):
        walk.playout(rng)
    return walk.states_checked


class _ProtocolWalk:
    """Checks states of one game, remembering what it has already verified."""

    def __init__(self, game: games.Game, action_cap: int):
        self.game = game
        self.num_players = game.num_players()
        self.num_actions = game.num_distinct_actions()
        self.zero_sum = game.is_zero_sum()
        self.longest_game = game.max_game_length()
        self.shortest_game = game.min_game_length()
        self.action_cap = action_cap
        self.states_checked = 0
        self._readable: dict[str, str | None] = {}  # action text -> its parser key, None if unreadable

    # -- walks ------------------------------------------------------------------------
    def depth_first(self, limit: int) -> None:
        """Check states depth first until every state or `limit` states are checked."""
        stack = [(self.game.new_initial_state(), _Moves(0, 0))]
        while stack and self.states_checked < limit:
            state, moves = stack.pop()
            actions = self.check(state, moves)
            after = moves.after(state.is_chance_node()) if actions else moves
            for action in actions:
                child = state.clone()
                self.apply(child, action)
                stack.append((child, after))

    def playout(self, rng: random.Random) -> None:
        """Check every state of one game played with uniformly random moves."""
        state, moves = self.game.new_initial_state(), _Moves(0, 0)
        while actions := self.check(state, moves):
            chance = state.is_chance_node()
            if chance:
                outcomes = state.chance_outcomes()
                action = rng.choices([a for a, _ in outcomes], [p for _, p in outcomes])[0]
            else:
                action = rng.choice(actions)
            self.apply(state, action)
            moves = moves.after(chance)

    def apply(self, state: games.State, action: int) -> None:
        try:
            state.apply_action(action)
        except Exception as error:
            raise self.failure(state, f"apply_action({action}) of a legal action raised {error!r}") from error

    # -- one state --------------------------------------------------------------------
    def check(self, state: games.State, moves: "_Moves") -> list[int]:
        """Check `state`, reached after `moves`; return the actions to try from it."""
        self.states_checked += 1
        self._check_length(state, moves)
        try:
            return self._check_state(state)
        except GameProtocolError:
            raise
        except Exception as error:
            raise self.failure(state, f"a protocol method raised {error!r}") from error

    def _check_length(self, state: games.State, moves: "_Moves") -> None:
        if moves.by_players > self.longest_game:
            raise self.failure(
                state,
                f"the game has not ended after {moves.by_players} player actions, more than "
                f"max_game_length() = {self.longest_game}",
            )
        if moves.all > self.action_cap:
            raise self.failure(state, f"the game has not ended after {self.action_cap} actions (the checker's cap)")
        if moves.by_players < self.shortest_game and state.is_terminal():
            raise self.failure(
                state,
                f"the game ended after {moves.by_players} player actions, fewer than "
                f"min_game_length() = {self.shortest_game}",
            )

    def _check_state(self, state: games.State) -> list[int]:
        self._check_returns(state)
        if state.is_terminal():
            return []
        if state.is_chance_node():
            return self._check_chance(state)
        player = state.current_player()
        if player not in range(self.num_players):
            raise self.failure(
                state,
                f"current_player() is {player!r} at a non-terminal, non-chance state; players are "
                f"0..{self.num_players - 1} (chance {games.CHANCE_PLAYER}, terminal {games.TERMINAL_PLAYER})",
            )
        legal = state.legal_actions()
        self._check_action_ids(state, legal)
        self._check_action_texts(state, legal)
        return legal

    def _check_returns(self, state: games.State) -> None:
        returns = list(state.returns())
        if len(returns) != self.num_players:
            raise self.failure(
                state, f"returns() has {len(returns)} entries for a {self.num_players}-player game: {returns}"
            )
        if self.zero_sum and state.is_terminal() and not math.isclose(sum(returns), 0.0, abs_tol=1e-9):
            raise self.failure(
                state,
                f"returns() {returns} sum to {sum(returns)}, but is_zero_sum() is True "
                "(override is_zero_sum() if the game is not zero-sum)",
            )

    def _check_chance(self, state: games.State) -> list[int]:
        outcomes = state.chance_outcomes()
        total = sum(p for _, p in outcomes)
        if not outcomes or not math.isclose(total, 1.0, abs_tol=1e-9) or any(p < 0 for _, p in outcomes):
            raise self.failure(state, f"chance_outcomes() {outcomes} are not a probability distribution")
        return [a for a, _ in outcomes]

    def _check_action_ids(self, state: games.State, legal: list[int]) -> None:
        if not legal:
            raise self.failure(state, "legal_actions() is empty at a non-terminal state")
        outside = [a for a in legal if a not in range(self.num_actions)]
        if outside:
            raise self.failure(
                state,
                f"legal_actions() holds {outside}, outside range(num_distinct_actions()) = range({self.num_actions})",
            )
        if len(set(legal)) != len(legal):
            repeated = sorted({a for a in legal if legal.count(a) > 1})
            raise self.failure(state, f"legal_actions() lists {repeated} more than once: {legal}")

    def _check_action_texts(self, state: games.State, legal: list[int]) -> None:
        """Every legal action must be answerable: readable back, and told apart from the others."""
        named: dict[str, int] = {}
        for action in legal:
            text = state.action_to_string(action)
            key = self._parser_key(text)
            if key is None:
                raise self.failure(
                    state, f"action {action} is rendered as {text!r}, which the answer parser cannot read back"
                )
            if key in named:
                raise self.failure(
                    state,
                    f"legal actions {named[key]} and {action} are rendered as "
                    f"{state.action_to_string(named[key])!r} and {text!r}, which the answer parser "
                    "cannot tell apart (case, whitespace and outer brackets are ignored)",
                )
            named[key] = action

    def _parser_key(self, text: str) -> str | None:
        """What the parser compares for the answer `\\boxed{text}`; None if that is not `text`."""
        if text not in self._readable:
            key = normalize_action_text(text) if isinstance(text, str) else None
            answer = extract_answer(f"\\boxed{{{text}}}")
            readable = key and answer is not None and normalize_action_text(answer) == key
            self._readable[text] = key if readable else None
        return self._readable[text]

    def failure(self, state: games.State, defect: str) -> GameProtocolError:
        history = state.history()
        position = f"after actions {history}" if len(history) <= 20 else (
            f"after {len(history)} actions (the last: {history[-5:]})"
        )
        return GameProtocolError(f"{self.game.name or type(self.game).__name__} {position}: {defect}")


class _Moves(NamedTuple):
    """How many actions led to a state: all of them, and those by players (not chance)."""

    all: int
    by_players: int

    def after(self, chance: bool) -> "_Moves":
        return _Moves(self.all + 1, self.by_players + (not chance))


def _check_game_apis(env_id: str, make_kwargs: dict, cycles: int, report: CheckReport) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from pettingzoo.test import api_test, parallel_api_test, seed_test

    from envs.parallel import GameParallelEnv

    api_test(make(env_id, **make_kwargs), num_cycles=cycles, verbose_progress=False)
    report.passed.append("pettingzoo.api_test")
    seed_test(partial(make, env_id, **make_kwargs), num_cycles=cycles)
    report.passed.append("pettingzoo.seed_test")
    parallel_api_test(GameParallelEnv(make(env_id, **make_kwargs)), num_cycles=cycles)
    report.passed.append("pettingzoo.parallel_api_test")
    gym_check_env(make_gym(env_id, **make_kwargs), skip_render_check=True)
    report.passed.append("gymnasium.check_env(single-agent view)")


def _fuzz_strategy(pieces: list[str]):
    from hypothesis import strategies as st

    piece = st.one_of(st.text(max_size=12), st.sampled_from(_FUZZ_PIECES + pieces))
    return st.one_of(st.text(), st.lists(piece, max_size=8).map("".join))


def _run_fuzz(property_fn, examples: int, pieces: list[str]) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(text=_fuzz_strategy(pieces), seed=st.integers(0, 2**16), moves=st.integers(0, 12))
    def fuzz(text, seed, moves):
        property_fn(text, seed, moves)

    fuzz()


def _action_strings(env, games_to_play: int = 5, limit: int = 40) -> list[str]:
    """Legal action strings seen in a few random games, with case and spacing variants."""
    seen: list[str] = []
    rng = random.Random(0)
    for game in range(games_to_play):
        env.reset(seed=game)
        while env.agents and not env.terminations[env.agent_selection]:
            prompt = env.turn_prompt()
            seen.extend(c for c in prompt.choices if c not in seen)
            env.step(rng.choice(prompt.action_ids))
    seen = seen[:limit]
    return seen + [c.upper() for c in seen] + [c.replace("[", "[ ").replace("]", " ]") for c in seen]


def _fuzz_game(env_id: str, make_kwargs: dict, examples: int, report: CheckReport) -> None:
    env = make(env_id, **make_kwargs)

    def answer_is_handled(text: str, seed: int, moves: int) -> None:
        env.reset(seed=seed)
        rng = random.Random(seed)
        for _ in range(moves):  # reach a mid-game position
            agent = env.agent_selection
            if env.terminations[agent] or env.truncations[agent]:
                break
            env.step(rng.choice(env.turn_prompt().action_ids))
        agent = env.agent_selection
        if env.terminations[agent] or env.truncations[agent]:
            env.reset(seed=seed)
            agent = env.agent_selection
        prompt = env.turn_prompt()
        invalid_before = env.infos[agent]["invalid_actions"]
        history_before = len(env.state.history())
        env.step(text)  # must not raise
        invalid = env.infos[agent]["invalid_actions"] - invalid_before
        advanced = len(env.state.history()) > history_before
        assert invalid in (0, 1), f"{invalid} invalid actions counted for one answer {text!r}"
        if invalid:
            report.fuzz_invalid += 1
            answer = extract_answer(text)
            named = answer is not None and normalize_action_text(answer) in {
                normalize_action_text(c) for c in prompt.choices
            }
            assert not named, f"answer {text!r} names a legal action but was rejected"
        else:
            assert advanced, f"answer {text!r} was neither applied nor counted invalid"
            played = env.state.history()[history_before]
            chosen = prompt.choices[prompt.action_ids.index(played)]
            assert normalize_action_text(extract_answer(text)) == normalize_action_text(chosen), (
                f"answer {text!r} was applied as {chosen!r}"
            )
            report.fuzz_valid += 1
        report.fuzz_examples += 1

    _run_fuzz(answer_is_handled, examples, _action_strings(env))
    report.passed.append("text fuzzing")


def _fuzz_text_game(env_id: str, make_kwargs: dict, examples: int, report: CheckReport) -> None:
    """Every answer to a free-text game is handed on or refused, never both, never neither:
    the move counts as played, or one invalid answer is counted (and the game goes on with
    a retry, or ends by the invalid-action policy)."""
    env = make(env_id, **make_kwargs)

    def answer_is_handled(text: str, seed: int, moves: int) -> None:
        env.reset(seed=seed)
        rng = random.Random(seed)
        for _ in range(moves):
            if env.is_over() or not env.game.moves:
                break
            env.step(rng.randrange(len(env.game.moves)))
        if env.is_over():
            env.reset(seed=seed)
        agent = env.agent_selection
        invalid_before = env.infos[agent]["invalid_actions"]
        played_before = len(env.moves_played)
        env.step(text)  # must not raise
        invalid = env.infos[agent]["invalid_actions"] - invalid_before
        played = len(env.moves_played) - played_before
        assert (invalid, played) in ((0, 1), (1, 0)), (
            f"answer {text!r}: {invalid} invalid answers counted and {played} moves played"
        )
        if invalid:
            report.fuzz_invalid += 1
            assert extract_answer(text) is not None or env.infos[agent]["last_error"] == "unparseable"
        else:
            report.fuzz_valid += 1
        report.fuzz_examples += 1

    _run_fuzz(answer_is_handled, examples, list(make(env_id, **make_kwargs).game.moves))
    report.passed.append("text fuzzing")


def _fuzz_task(env_id: str, make_kwargs: dict, examples: int, report: CheckReport) -> None:
    env = make(env_id, **make_kwargs)

    def answer_is_scored(text: str, seed: int, moves: int) -> None:
        env.reset(seed=seed)
        _, reward, terminated, truncated, info = env.step(text)  # must not raise
        assert terminated or truncated, "a single-turn task must end after one answer"
        assert isinstance(reward, float), f"reward must be a float, got {type(reward).__name__}"
        if reward > 0:
            report.fuzz_valid += 1
        else:
            report.fuzz_invalid += 1
        report.fuzz_examples += 1

    _run_fuzz(answer_is_scored, examples, [])
    report.passed.append("text fuzzing")
