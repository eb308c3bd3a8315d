"""Exact best response in perfect-information games, over positions instead of histories.

TicTacToe has 549,946 histories but only 5,478 positions (boards), 4,520 of them with a
player to move. `games.analysis` walks histories, which is right for imperfect information
(what a player knows depends on the path) but too large here. A game whose states declare a
`position_key` promises that the path does not matter: two states with one key have the
same player to move, legal actions, observations and outcomes. Then

* a policy that sees only its player's observation (a language model reading the board) is
  a function of the position, and the table of it has one entry per decision position;
* a best response to such a policy loses nothing by ignoring the path, because the future
  from a position does not depend on it;

so the positions form a DAG on which the best-response value is an expectimax, computed
once per position: `v(s) = max_a v(sa)` where the responder moves, `sum_a pi(a|s) v(sa)`
elsewhere. That equals the best response on the full history tree (checked against
OpenSpiel's in the tests).

A *policy* here maps `{position_key: {action: probability}}`, with the same conventions as
`games.analysis.Policy`: a missing key means uniform play, missing actions probability 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from games.base import Game, State

PositionPolicy = Mapping[str, Mapping[int, float]]
"""`{position_key: {action: probability}}`; missing keys mean uniform."""

DEFAULT_MAX_DECISION_POSITIONS = 10_000
"""Exact analysis of a model's policy costs one model call per decision position: TicTacToe's
4,520 fit; this bound keeps an evaluation's cost to minutes on a small model."""

_PROBABILITY_TOLERANCE = 1e-6


class TooManyPositions(ValueError):
    """The game has more decision positions than the caller allowed."""


@dataclass(frozen=True, eq=False)
class PositionGraph:
    """Every position of a game, numbered children first (so one pass in index order sees
    every position after all the positions it leads to)."""

    game: Game
    num_players: int
    keys: tuple[str, ...]  # position -> position_key
    states: tuple[State, ...]  # position -> one state there (to render what a player sees)
    player: tuple[int, ...]  # position -> player to move, or TERMINAL_PLAYER
    actions: tuple[tuple[int, ...], ...]  # position -> legal actions (empty at the end)
    children: tuple[tuple[int, ...], ...]  # position -> the position after each legal action
    returns: tuple[tuple[float, ...], ...]  # position -> returns (meaningful at the end only)

    @property
    def decision_positions(self) -> list[int]:
        """The positions with a player to move: where a policy needs an entry."""
        return [index for index, actions in enumerate(self.actions) if actions]

    def __repr__(self) -> str:
        return f"PositionGraph({self.game!r}, positions={len(self.keys)}, decisions={len(self.decision_positions)})"


def position_graph(game: Game, *, max_decision_positions: int | None = None) -> PositionGraph:
    """Enumerate every position of `game` once, depth first, merging transpositions.

    Raises ValueError when a state has no `position_key` or the game has chance nodes, and
    `TooManyPositions` as soon as more than `max_decision_positions` are found (when given).
    """
    num_players = game.num_players()
    index_of: dict[str, int] = {}
    keys, states, player, actions, children, returns = [], [], [], [], [], []
    decisions = 0

    def visit(state: State) -> int:
        nonlocal decisions
        key = state.position_key()
        if key is None:
            raise ValueError(f"{game!r} has no position_key: analyse its history tree (games.analysis)")
        if key in index_of:
            return index_of[key]
        if state.is_chance_node():
            raise ValueError(f"{game!r} has chance nodes; positions are for games without chance")
        legal = tuple(state.legal_actions())  # empty at the end
        if legal:
            decisions += 1
            if max_decision_positions is not None and decisions > max_decision_positions:
                raise TooManyPositions(f"{game!r} has more than {max_decision_positions} decision positions")
        after = []
        for action in legal:
            child = state.clone()
            child.apply_action(action)
            after.append(visit(child))
        index_of[key] = len(keys)
        keys.append(key)
        states.append(state)
        player.append(state.current_player())
        actions.append(legal)
        children.append(tuple(after))
        returns.append(tuple(state.returns()) if not legal else (0.0,) * num_players)
        return index_of[key]

    visit(game.new_initial_state())
    return PositionGraph(
        game=game,
        num_players=num_players,
        keys=tuple(keys),
        states=tuple(states),
        player=tuple(player),
        actions=tuple(actions),
        children=tuple(children),
        returns=tuple(returns),
    )


def small_position_graph(
    game: Game, *, max_decision_positions: int = DEFAULT_MAX_DECISION_POSITIONS
) -> PositionGraph | None:
    """The game's position graph if exact analysis of a model's policy over positions is
    affordable (a `Game` whose states have a `position_key`, with at most
    `max_decision_positions` decision positions), else None."""
    if not isinstance(game, Game) or game.new_initial_state().position_key() is None:
        return None
    try:
        return position_graph(game, max_decision_positions=max_decision_positions)
    except TooManyPositions:
        return None


def _rows(graph: PositionGraph, policy: PositionPolicy | None) -> list[list[float]]:
    """The policy's probabilities over each position's legal actions; raises ValueError on a
    malformed entry."""
    rows = []
    for key, actions in zip(graph.keys, graph.actions):
        dist = None if policy is None else policy.get(key)
        if dist is None:
            rows.append([1.0 / len(actions)] * len(actions) if actions else [])
            continue
        row = [float(dist.get(a, 0.0)) for a in actions]
        total = sum(row)
        illegal = [a for a, p in dist.items() if a not in actions and p != 0]
        if illegal or min(row) < 0 or abs(total - 1.0) > _PROBABILITY_TOLERANCE:
            raise ValueError(
                f"policy at {key!r} must be a distribution over the legal actions {list(actions)}; got {dict(dist)}"
            )
        rows.append([p / total for p in row])
    return rows


def expected_returns(graph: PositionGraph, policy: PositionPolicy | None) -> list[float]:
    """Exact expected return of each player when everyone plays `policy`."""
    rows = _rows(graph, policy)
    values: list[tuple[float, ...]] = []
    for index, after in enumerate(graph.children):
        if not after:
            values.append(graph.returns[index])
            continue
        values.append(tuple(
            sum(p * values[c][q] for p, c in zip(rows[index], after)) for q in range(graph.num_players)
        ))
    return list(values[-1])  # the root is numbered last


def best_response(
    graph: PositionGraph, policy: PositionPolicy | None, player: int
) -> tuple[float, dict[str, dict[int, float]]]:
    """Exact best response of `player` when everyone else plays `policy`.

    Returns `(value, br_policy)`: the responder's expected return and a deterministic policy
    at every position where it moves (ties go to the lowest legal action). The responder's
    own entries in `policy` are ignored.
    """
    if not 0 <= player < graph.num_players:
        raise ValueError(f"player must be in 0..{graph.num_players - 1}, got {player!r}")
    rows = _rows(graph, policy)
    values: list[float] = []
    br_policy = {}
    for index, after in enumerate(graph.children):
        if not after:
            values.append(graph.returns[index][player])
        elif graph.player[index] == player:
            options = [values[c] for c in after]
            best = options.index(max(options))
            values.append(options[best])
            br_policy[graph.keys[index]] = {a: float(k == best) for k, a in enumerate(graph.actions[index])}
        else:
            values.append(sum(p * values[c] for p, c in zip(rows[index], after)))
    return values[-1], br_policy


def solved_values(graph: PositionGraph) -> list[tuple[float, ...]]:
    """Every position's returns when each player to move takes the action best for itself
    from there on (ties: the lowest legal action): in a two-player zero-sum game, the game's
    minimax value, what perfect play by both sides gets (TicTacToe: 0 at the start)."""
    values: list[tuple[float, ...]] = []
    for index, after in enumerate(graph.children):
        if not after:
            values.append(graph.returns[index])
        else:
            mover = graph.player[index]
            values.append(max((values[c] for c in after), key=lambda v: v[mover]))
    return values


def exploitability(graph: PositionGraph, policy: PositionPolicy | None) -> float:
    """`NashConv(pi) / num_players`, as `games.analysis.exploitability` defines it, so the two
    compare like with like; in a two-player zero-sum game, the mean of the two best-response
    values."""
    on_policy = expected_returns(graph, policy)
    gains = [best_response(graph, policy, p)[0] - on_policy[p] for p in range(graph.num_players)]
    return sum(gains) / graph.num_players


__all__ = [
    "PositionGraph",
    "PositionPolicy",
    "TooManyPositions",
    "best_response",
    "expected_returns",
    "exploitability",
    "position_graph",
    "small_position_graph",
    "solved_values",
]
