"""Exact analysis of small games: expected returns, action values, best response, NashConv, CFR.

Everything here works on any game that follows the protocol of `games.base` (explicit
chance nodes, `information_state_string`), by enumerating its tree once.

A *policy* is a mapping `{information_state_string: {action: probability}}`. An
information state missing from the mapping (or `policy=None`) means uniform play over
the legal actions there; actions missing from a listed distribution have probability 0.
One mapping holds the policies of all players, because the keys of different players
never coincide.

Notation used in the docstrings: `h` a history (a node of the tree), `I` an information
set, `pi_p(h)` the product of player p's action probabilities on the path to `h`
(`p = c` for chance), `pi_-p(h)` the product over everyone but p, chance included (the
*counterfactual* reach), `u_p(h)` p's expected return from `h` on.

Why a tree enumerated once: CFR and best response visit every history many times, and
cloning states on every visit costs far more than the arithmetic. `game_tree(game)`
stores the histories breadth-first in flat numpy arrays, so that one pass over the tree
is a handful of vector operations per depth. Every function accepts either a `Game` or a
`GameTree`; pass the tree to reuse it across calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from games.base import Game, State

Policy = Mapping[str, Mapping[int, float]]
"""`{information_state_string: {action: probability}}`; missing keys mean uniform."""

_PROBABILITY_TOLERANCE = 1e-6


@dataclass(frozen=True)
class _Level:
    """The nodes at one depth (>= 1) and how they hang from the depth above."""

    nodes: slice  # the nodes at this depth (contiguous in breadth-first order)
    parents: np.ndarray  # the nodes one level up that have children, in order
    starts: np.ndarray  # offset (within `nodes`) of each parent's first child


@dataclass(frozen=True, eq=False)
class GameTree:
    """Every history of a game, numbered breadth-first, as flat arrays.

    Node 0 is the initial state. The children of a node are contiguous and follow its
    legal actions (or chance outcomes) in order; a node's incoming edge is stored on
    the node itself. A *slot* is one (information set, legal action) pair; the slots of
    an information set are contiguous, in legal-action order.
    """

    game: Game
    num_players: int
    player: np.ndarray  # node -> player to move, CHANCE_PLAYER or TERMINAL_PLAYER
    parent: np.ndarray  # node -> parent node (-1 at the root)
    first_child: np.ndarray  # node -> its first child (meaningless without children)
    num_children: np.ndarray  # node -> number of children
    infoset: np.ndarray  # node -> information set of the player to move, or -1
    edge_owner: np.ndarray  # node -> who chose the incoming edge (num_players = chance)
    chance_prob: np.ndarray  # node -> probability of the incoming chance edge, else 1
    slot: np.ndarray  # node -> slot of the incoming player edge, or -1
    returns: np.ndarray  # node x player: returns at terminal nodes, 0 elsewhere
    levels: tuple[_Level, ...]  # depth 1, 2, ...
    infoset_keys: tuple[str, ...]  # information set -> information_state_string
    infoset_player: np.ndarray  # information set -> the player who acts there
    infoset_actions: tuple[tuple[int, ...], ...]  # information set -> legal actions
    infoset_first_slot: np.ndarray  # information set -> its first slot
    infoset_nodes: tuple[tuple[int, ...], ...]  # information set -> its histories
    slot_infoset: np.ndarray  # slot -> information set

    @property
    def num_nodes(self) -> int:
        return len(self.player)

    @property
    def num_slots(self) -> int:
        return len(self.slot_infoset)

    def __repr__(self) -> str:
        return (
            f"GameTree({self.game!r}, nodes={self.num_nodes}, "
            f"information_states={len(self.infoset_keys)})"
        )


class TreeTooLarge(ValueError):
    """The game has more histories than the caller allowed (see `game_tree(max_nodes=...)`)."""


DEFAULT_MAX_NODES = 100_000
DEFAULT_MAX_INFORMATION_STATES = 256


def small_game_tree(
    game: Game, *, max_nodes: int = DEFAULT_MAX_NODES, max_information_states: int = DEFAULT_MAX_INFORMATION_STATES
) -> GameTree | None:
    """The game's tree if exact analysis of a model's policy is affordable, else None.

    Exact exploitability needs the model's action distribution at every information state
    (one model call each) and one pass over the tree, so "small" is judged by both counts,
    not by the game's name: single-hand Kuhn Poker (58 histories, 12 information states)
    qualifies, TicTacToe (549,946 histories) does not. A game that is not a `Game` tree
    (a free-text TextArena game) has no tree to analyse: None.
    """
    if not isinstance(game, Game):
        return None
    try:
        tree = game_tree(game, max_nodes=max_nodes)
    except TreeTooLarge:
        return None
    return tree if len(tree.infoset_keys) <= max_information_states else None


def game_tree(game: Game, *, max_nodes: int | None = None) -> GameTree:
    """Enumerate every history of `game` once, breadth-first (see `GameTree`).

    Raises ValueError when the game breaks an assumption the analysis relies on: chance
    probabilities that do not sum to 1, histories of one information set with
    different legal actions, or one information_state_string used by two players; and
    `TreeTooLarge` as soon as more than `max_nodes` histories are found (when given), so
    asking whether a large game is small costs little.
    """
    num_players = game.num_players()
    player, parent, first_child, num_children = [], [], [], []
    infoset, edge_owner, chance_prob, slot, terminal_returns = [], [], [], [], {}
    keys: dict[str, int] = {}
    infoset_player, infoset_actions, infoset_first_slot, infoset_nodes = [], [], [], []
    slot_infoset: list[int] = []
    level_starts = [0]

    # Each frontier entry: (state, parent node, edge owner, chance probability, action).
    frontier: list[tuple[State, int, int, float, int]] = [
        (game.new_initial_state(), -1, num_players, 1.0, -1)
    ]
    while frontier:
        next_frontier: list[tuple[State, int, int, float, int]] = []
        next_start = level_starts[-1] + len(frontier)
        if max_nodes is not None and next_start > max_nodes:
            raise TreeTooLarge(f"{game!r} has more than {max_nodes} histories")
        for state, up, owner, prob, action in frontier:
            node = len(player)
            to_move = state.current_player()
            player.append(to_move)
            parent.append(up)
            edge_owner.append(owner)
            chance_prob.append(prob)
            if owner == num_players:
                slot.append(-1)
            else:  # the parent's information set was numbered one level up
                index = infoset[up]
                slot.append(infoset_first_slot[index] + infoset_actions[index].index(action))
            first_child.append(next_start + len(next_frontier))
            infoset.append(-1)
            if state.is_terminal():
                num_children.append(0)
                terminal_returns[node] = state.returns()
                continue
            if state.is_chance_node():
                outcomes = state.chance_outcomes()
                total = math.fsum(p for _, p in outcomes)
                if abs(total - 1.0) > _PROBABILITY_TOLERANCE:
                    raise ValueError(
                        f"chance probabilities sum to {total}, not 1, at history {state.history()}"
                    )
                children = [(a, num_players, p) for a, p in outcomes]
            else:
                key = state.information_state_string(to_move)
                actions = tuple(state.legal_actions())
                index = keys.get(key)
                if index is None:
                    index = keys[key] = len(infoset_player)
                    infoset_player.append(to_move)
                    infoset_actions.append(actions)
                    infoset_first_slot.append(len(slot_infoset))
                    infoset_nodes.append([])
                    slot_infoset.extend([index] * len(actions))
                elif infoset_player[index] != to_move:
                    raise ValueError(
                        f"players {infoset_player[index]} and {to_move} share "
                        f"the information state {key!r}"
                    )
                elif infoset_actions[index] != actions:
                    raise ValueError(
                        f"information state {key!r} has legal actions {list(infoset_actions[index])} "
                        f"in one history and {list(actions)} in another"
                    )
                infoset[node] = index
                infoset_nodes[index].append(node)
                children = [(a, to_move, 1.0) for a in actions]
            num_children.append(len(children))
            if max_nodes is not None and next_start + len(next_frontier) + len(children) > max_nodes:
                # stop before the level is built: the next one of a 200-action game is millions
                raise TreeTooLarge(f"{game!r} has more than {max_nodes} histories")
            for a, who, p in children:
                child = state.clone()
                child.apply_action(a)
                next_frontier.append((child, node, who, p, a))
        frontier = next_frontier
        level_starts.append(next_start)

    n = len(player)
    returns = np.zeros((n, num_players))
    for node, values in terminal_returns.items():
        returns[node] = values
    first_child_arr = np.asarray(first_child, dtype=np.int64)
    num_children_arr = np.asarray(num_children, dtype=np.int64)
    levels = []
    for depth in range(1, len(level_starts) - 1):
        above = np.arange(level_starts[depth - 1], level_starts[depth])
        parents = above[num_children_arr[above] > 0]
        levels.append(_Level(
            nodes=slice(level_starts[depth], level_starts[depth + 1]),
            parents=parents,
            starts=first_child_arr[parents] - level_starts[depth],
        ))
    return GameTree(
        game=game,
        num_players=num_players,
        player=np.asarray(player, dtype=np.int64),
        parent=np.asarray(parent, dtype=np.int64),
        first_child=first_child_arr,
        num_children=num_children_arr,
        infoset=np.asarray(infoset, dtype=np.int64),
        edge_owner=np.asarray(edge_owner, dtype=np.int64),
        chance_prob=np.asarray(chance_prob, dtype=np.float64),
        slot=np.asarray(slot, dtype=np.int64),
        returns=returns,
        levels=tuple(levels),
        infoset_keys=tuple(keys),
        infoset_player=np.asarray(infoset_player, dtype=np.int64),
        infoset_actions=tuple(infoset_actions),
        infoset_first_slot=np.asarray(infoset_first_slot, dtype=np.int64),
        infoset_nodes=tuple(tuple(nodes) for nodes in infoset_nodes),
        slot_infoset=np.asarray(slot_infoset, dtype=np.int64),
    )


def _as_tree(game: Game | GameTree) -> GameTree:
    return game if isinstance(game, GameTree) else game_tree(game)


# -- policies as slot vectors ------------------------------------------------------------

def _uniform_slots(tree: GameTree) -> np.ndarray:
    sizes = np.array([len(a) for a in tree.infoset_actions], dtype=np.float64)
    return 1.0 / sizes[tree.slot_infoset]


def _policy_slots(tree: GameTree, policy: Policy | None) -> np.ndarray:
    """The policy as one probability per slot; raises ValueError on a malformed entry."""
    probs = _uniform_slots(tree)
    if policy is None:
        return probs
    for index, key in enumerate(tree.infoset_keys):
        dist = policy.get(key)
        if dist is None:
            continue
        actions = tree.infoset_actions[index]
        illegal = [a for a, p in dist.items() if a not in actions and p != 0]
        row = np.array([float(dist.get(a, 0.0)) for a in actions])
        total = row.sum()
        if illegal or (row < 0).any() or abs(total - 1.0) > _PROBABILITY_TOLERANCE:
            raise ValueError(
                f"policy at {key!r} must be a distribution over the legal actions "
                f"{list(actions)}; got {dict(dist)}"
            )
        start = tree.infoset_first_slot[index]
        probs[start:start + len(actions)] = row / total
    return probs


def _slots_to_policy(tree: GameTree, probs: np.ndarray) -> dict[str, dict[int, float]]:
    policy = {}
    for index, key in enumerate(tree.infoset_keys):
        start = int(tree.infoset_first_slot[index])
        actions = tree.infoset_actions[index]
        policy[key] = {a: float(probs[start + k]) for k, a in enumerate(actions)}
    return policy


def _normalize_per_infoset(tree: GameTree, weights: np.ndarray) -> np.ndarray:
    """`weights` divided by their information set's total; uniform where that is 0."""
    totals = np.bincount(tree.slot_infoset, weights=weights, minlength=len(tree.infoset_keys))
    totals = totals[tree.slot_infoset]
    safe = np.where(totals > 0, totals, 1.0)
    return np.where(totals > 0, weights / safe, _uniform_slots(tree))


def uniform_policy(game: Game | GameTree) -> dict[str, dict[int, float]]:
    """The uniform random policy, listed explicitly for every information state."""
    tree = _as_tree(game)
    return _slots_to_policy(tree, _uniform_slots(tree))


def tabular_policy(
    game: Game | GameTree, action_probabilities: Callable[[State, int], Mapping[int, float]]
) -> dict[str, dict[int, float]]:
    """Tabulate a state-based policy: `action_probabilities(state, player)` is called
    once per information state (at one of its histories) and must return a distribution
    over the legal actions. This turns any agent that can state its action
    probabilities (an opponent, a rule) into a policy that the exact analysis accepts.
    """
    tree = _as_tree(game)
    policy: dict[str, dict[int, float]] = {}
    pending = [(tree.game.new_initial_state(), 0)]
    remaining = set(tree.infoset_keys)
    while pending and remaining:
        state, node = pending.pop()
        if state.is_terminal():
            continue
        index = int(tree.infoset[node])
        if index >= 0 and tree.infoset_keys[index] in remaining:
            key = tree.infoset_keys[index]
            distribution = action_probabilities(state, int(tree.player[node]))
            policy[key] = {int(a): float(p) for a, p in distribution.items()}
            remaining.discard(key)
        for k, a in enumerate(state.legal_actions()):
            child = state.clone()
            child.apply_action(a)
            pending.append((child, int(tree.first_child[node]) + k))
    _policy_slots(tree, policy)  # validates every distribution
    return policy


# -- passes over the tree ----------------------------------------------------------------

def _edge_probs(tree: GameTree, slot_probs: np.ndarray) -> np.ndarray:
    """Probability of each node's incoming edge: chance probability or policy."""
    probs = tree.chance_prob.copy()
    chosen = tree.slot >= 0
    probs[chosen] = slot_probs[tree.slot[chosen]]
    return probs


def _reach(tree: GameTree, edge_probs: np.ndarray) -> np.ndarray:
    """`reach[p, h] = pi_p(h)`, one row per player and a last row for chance."""
    reach = np.ones((tree.num_players + 1, tree.num_nodes))
    for level in tree.levels:
        nodes = np.arange(level.nodes.start, level.nodes.stop)
        reach[:, nodes] = reach[:, tree.parent[nodes]]
        reach[tree.edge_owner[nodes], nodes] *= edge_probs[nodes]
    return reach


def _values(tree: GameTree, edge_probs: np.ndarray) -> np.ndarray:
    """`values[h, p] = u_p(h) = sum_a P(a | h) u_p(ha)`, computed bottom-up by depth."""
    values = tree.returns.copy()
    for level in reversed(tree.levels):
        weighted = edge_probs[level.nodes, None] * values[level.nodes]
        values[level.parents] = np.add.reduceat(weighted, level.starts, axis=0)
    return values


def _counterfactual_reach(reach: np.ndarray, player: int) -> np.ndarray:
    """`pi_-p(h)`: the reach of everyone but `player`, chance included."""
    return np.prod(np.delete(reach, player, axis=0), axis=0)


# -- public analysis ---------------------------------------------------------------------

def expected_returns(game: Game | GameTree, policy: Policy | None) -> list[float]:
    """Exact expected return of each player when everyone plays `policy`.

    `u_p(root)`, with `u_p(z)` the returns at a terminal `z` and
    `u_p(h) = sum_a P(a | h) u_p(ha)`, where `P` is the chance probability or the policy.
    """
    tree = _as_tree(game)
    values = _values(tree, _edge_probs(tree, _policy_slots(tree, policy)))
    return [float(v) for v in values[0]]


def action_values(game: Game | GameTree, policy: Policy | None) -> dict[str, dict[int, float]]:
    """`Q(I, a)` at every information set reached with positive probability, everyone playing `policy`.

    `Q(I, a) = sum_{h in I} pi_-p(h) u_p(ha) / sum_{h in I} pi_-p(h)` for the player p who
    acts at I: the return of playing `a` at I and `policy` afterwards, averaged over the
    histories of I as p believes them (weighted by chance's and the others' reach). The
    true advantage of a turn is `Q(I, a) - V(I)` with `V(I) = sum_a policy(a | I) Q(I, a)`
    (`state_values`); an estimator's advantages can be compared with it turn by turn.
    Information sets the others and chance never reach are left out.
    """
    tree = _as_tree(game)
    slot_probs = _policy_slots(tree, policy)
    edge_probs = _edge_probs(tree, slot_probs)
    reach = _reach(tree, edge_probs)
    values = _values(tree, edge_probs)
    chosen = np.flatnonzero(tree.slot >= 0)
    owners = tree.edge_owner[chosen]
    parents = tree.parent[chosen]
    belief = np.empty(len(chosen))
    for player in range(tree.num_players):
        mine = owners == player
        belief[mine] = _counterfactual_reach(reach, player)[parents[mine]]
    weighted = np.zeros(tree.num_slots)
    total = np.zeros(tree.num_slots)
    np.add.at(weighted, tree.slot[chosen], belief * values[chosen, owners])
    np.add.at(total, tree.slot[chosen], belief)
    result = {}
    for index, key in enumerate(tree.infoset_keys):
        first = tree.infoset_first_slot[index]
        actions = tree.infoset_actions[index]
        if total[first] > 0:
            result[key] = {a: float(weighted[first + k] / total[first + k]) for k, a in enumerate(actions)}
    return result


def state_values(game: Game | GameTree, policy: Policy | None) -> dict[str, float]:
    """`V(I) = sum_a policy(a | I) Q(I, a)` for every information set `action_values` lists."""
    tree = _as_tree(game)
    probs = _slots_to_policy(tree, _policy_slots(tree, policy))
    return {key: sum(probs[key][a] * q for a, q in qs.items()) for key, qs in action_values(tree, policy).items()}


def best_response(
    game: Game | GameTree, policy: Policy | None, player: int
) -> tuple[float, dict[str, dict[int, float]]]:
    """Exact best response of `player` when everyone else plays `policy`.

    Returns `(value, br_policy)`: the responder's expected return and a deterministic
    policy for every one of its information states. At each information set `I` the
    responder picks

        a*(I) = argmax_a  sum_{h in I}  pi_-p(h) * v(ha),

    where `v` is the responder's value when it plays `a*` at the information sets that
    follow. The responder's own entries in `policy` are ignored. Because histories of
    one information set may lie at different depths, decisions are made on demand,
    depth-first and memoised (each information set once, after all the information sets
    below it), not level by level. That needs perfect recall; a responder that can
    return to an information set it is deciding raises ValueError. Ties go to the
    lowest legal action.
    """
    tree = _as_tree(game)
    if not 0 <= player < tree.num_players:
        raise ValueError(f"player must be in 0..{tree.num_players - 1}, got {player!r}")
    edge_probs = _edge_probs(tree, _policy_slots(tree, policy))
    others = _counterfactual_reach(_reach(tree, edge_probs), player).tolist()
    probs = edge_probs.tolist()
    returns = tree.returns[:, player].tolist()
    to_move = tree.player.tolist()
    infoset = tree.infoset.tolist()
    first = tree.first_child.tolist()
    count = tree.num_children.tolist()
    node_value: dict[int, float] = {}
    choice: dict[int, int] = {}  # information set -> index of the chosen legal action
    deciding: set[int] = set()

    def value(node: int) -> float:
        if node in node_value:
            return node_value[node]
        if count[node] == 0:
            result = returns[node]
        elif to_move[node] == player:
            result = value(first[node] + decide(infoset[node]))
        else:
            result = sum(probs[c] * value(c) for c in range(first[node], first[node] + count[node]))
        node_value[node] = result
        return result

    def decide(index: int) -> int:
        if index in choice:
            return choice[index]
        if index in deciding:
            raise ValueError(
                f"player {player} can reach its information state {tree.infoset_keys[index]!r} again "
                "while deciding it: best response needs perfect recall"
            )
        deciding.add(index)
        q = [0.0] * len(tree.infoset_actions[index])
        for h in tree.infoset_nodes[index]:
            for k in range(len(q)):
                q[k] += others[h] * value(first[h] + k)
        deciding.discard(index)
        choice[index] = q.index(max(q))
        return choice[index]

    root_value = value(0)
    br_policy = {}
    for index, key in enumerate(tree.infoset_keys):
        if tree.infoset_player[index] == player:
            best = tree.infoset_actions[index][decide(index)]
            br_policy[key] = {a: float(a == best) for a in tree.infoset_actions[index]}
    return root_value, br_policy


def nash_conv(game: Game | GameTree, policy: Policy | None) -> float:
    """`NashConv(pi) = sum_p [ max_{pi'_p} u_p(pi'_p, pi_-p) - u_p(pi) ]`; 0 exactly at a Nash
    equilibrium, and the sum of what each player could gain by deviating alone."""
    tree = _as_tree(game)
    on_policy = expected_returns(tree, policy)
    return float(sum(best_response(tree, policy, p)[0] - on_policy[p] for p in range(tree.num_players)))


def exploitability(game: Game | GameTree, policy: Policy | None) -> float:
    """`NashConv(pi) / num_players` (OpenSpiel's definition); in a two-player zero-sum
    game, the mean of the two best-response values."""
    tree = _as_tree(game)
    return nash_conv(tree, policy) / tree.num_players


def cfr(
    game: Game | GameTree,
    iterations: int,
    *,
    plus: bool = False,
    alternating: bool | None = None,
) -> dict[str, dict[int, float]]:
    """Counterfactual regret minimisation; returns the average policy.

    Each iteration `t` plays the current policy `sigma^t`, obtained by regret matching,

        sigma^t(I, a) = R+(I, a) / sum_b R+(I, b)   (uniform when the sum is 0),

    and adds the counterfactual regrets of the acting player `p` at each `I`:

        R(I, a) += sum_{h in I} pi_-p(h) * (u_p(ha) - u_p(h)),

    while the average policy accumulates `w_t * pi_p(h) * sigma^t(I, a)` and is
    normalised per information set at the end. In two-player zero-sum games the
    average policy converges to a Nash equilibrium (exploitability O(1/sqrt(T))).

    plus: CFR+ (Tammelin 2014): cumulative regrets are clipped at 0 after every
        update, updates alternate between players and the average is weighted by
        `w_t = t`; converges much faster in practice.
    alternating: update one player at a time, each seeing the others' latest policy.
        Defaults to `plus`; vanilla CFR (the default) updates all players at once from
        the same `sigma^t` with `w_t = 1`.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    tree = _as_tree(game)
    if alternating is None:
        alternating = plus
    groups = [[p] for p in range(tree.num_players)] if alternating else [list(range(tree.num_players))]
    # The player edges of each player: child nodes, their parents and their slots.
    moves = []
    for p in range(tree.num_players):
        children = np.flatnonzero((tree.slot >= 0) & (tree.edge_owner == p))
        moves.append((children, tree.parent[children], tree.slot[children]))
    regrets = np.zeros(tree.num_slots)
    average = np.zeros(tree.num_slots)
    for t in range(1, iterations + 1):
        weight = float(t) if plus else 1.0
        for group in groups:
            sigma = _normalize_per_infoset(tree, np.maximum(regrets, 0.0))
            edge_probs = _edge_probs(tree, sigma)
            reach = _reach(tree, edge_probs)
            values = _values(tree, edge_probs)
            for p in group:
                children, parents, slots = moves[p]
                gain = values[children, p] - values[parents, p]
                counterfactual = _counterfactual_reach(reach, p)[parents]
                regrets += np.bincount(slots, weights=counterfactual * gain, minlength=tree.num_slots)
                own_reach = reach[p, parents] * sigma[slots]
                average += weight * np.bincount(slots, weights=own_reach, minlength=tree.num_slots)
            if plus:
                np.maximum(regrets, 0.0, out=regrets)
    return _slots_to_policy(tree, _normalize_per_infoset(tree, average))


__all__ = [
    "GameTree",
    "Policy",
    "best_response",
    "cfr",
    "expected_returns",
    "exploitability",
    "game_tree",
    "nash_conv",
    "tabular_policy",
    "uniform_policy",
]
