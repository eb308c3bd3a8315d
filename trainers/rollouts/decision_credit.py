"""Counterfactual credit for a game choice whose options settle the mover's margin at once.

Answering a pending trade in Simple Negotiation is such a choice: accepting moves the
mover's score margin (`State.score_margin`) by the trade's worth the moment it is played,
denying or making an offer instead moves it by nothing. With credit from the game's
reward, the choice learns from whichever option was sampled: a model that accepts 1% of
offers sees about one accept a step, and every deny carries its game's noise, so the runs
recorded in docs/learning_runs moved the accept rate as a whole, never with the offer's
worth. Here (``game_credit=counterfactual``, choice mode) such a choice instead gets

    gap = Q(chosen) - sum_o pi(o) Q(o),   Q(o) = the mover's margin change if o is played now,

computed from the game itself (a clone of the state plays each legal action) and from the
distribution the choice was sampled with: a deny of a good trade gets ``-pi(accept) * worth``,
of a bad trade ``+pi(accept) * |worth|``, whichever is sampled, so every answer says which
way the verdict should move. The learner divides the gaps by their std over the step
(``trainers.learning.advantages.part_gap_advantages``), as ``task_credit=counterfactual``
does for task parts (COMA's counterfactual baseline, Foerster et al., 2018).

What it ignores: the value of what comes later (a denied trade may be followed by a better
one), so it is the answer's immediate worth only, as ``reward=turn_margin`` credits a turn
with what it and the reply to it did. A choice qualifies when every option leads only to
actions with one and the same margin change (a chained turn's ``[Offer:`` option: every
offer changes nothing yet) and the options differ; every other choice (making an offer,
a game without such moments) keeps the credit of its turn's reward.

In the runs recorded (docs/learning_runs) it has not taught the verdict either: the accept
rate moved as a whole, down where the untrained model accepted 1% of offers, up where it
accepted 60%, never apart for good and bad offers. ``game_credit=counterfactual_centered``
removes that common part: each option's credits are centred over the step's choices that
took it, so the accepts of the step sum to zero credit and so do the denies, and what is
left says only "this answer is better here than it is on average elsewhere", which the
policy can follow only by telling good offers from bad ones (what ``action_centered`` does
for Kuhn Poker's cards). In the three runs recorded, against random with the offer notes,
the rate first moved as a whole (down to 0.03 and 0.23 by step 10, or up to 0.92), then
came apart: by step 20 each accepted 56-91% of the offers that put it ahead and under 3%
of the others, and beat random by +0.675 to +0.925.

``game_credit=solved`` takes ``Q(o)`` from the whole game instead of the next move: in a game
small enough to solve over its positions (TicTacToe's 5,478 boards, `games.positions`), Q(o)
is what the mover gets after o when both sides play perfectly from there (+1 a forced win, 0
a draw, -1 a forced loss). Every TicTacToe move whose options differ in that value (a blunder
among them, a win to take) is credited with its exact gap under the policy's own
distribution, whatever the rest of its game did; a move among equally valued options keeps
its turn's credit. The values come from the game's rules alone, searched to the end, so it
is credit assignment, not an outside teacher; it is also a bound: it says what exact
per-state credit would give a run whose turn credit is too noisy to learn from. In the run
recorded (docs/learning_runs) it taught TicTacToe not to blunder (regret 0.86 -> 0.67,
28% draws against rule_based) and still lost what beat random: perfect play's values are
0 for nearly every move of an even position, blind to the forks a random player walks into.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import NamedTuple

from envs.action_chain import ActionChain
from games.positions import DEFAULT_MAX_DECISION_POSITIONS, small_position_graph, solved_values

GAME_CREDITS = ("turn", "counterfactual", "counterfactual_centered", "solved")
COUNTERFACTUAL_CREDITS = ("counterfactual", "counterfactual_centered", "solved")
"""The ``game_credit`` values that write each qualifying choice's gap (``counterfactual_centered``
then centres the gaps per option taken: ``trainers.learning.advantages.option_centered_gaps``)."""
MARGIN_CREDITS = ("counterfactual", "counterfactual_centered")
"""The ``game_credit`` values whose option values are margin changes (games with a `score_margin`)."""
DECISION_GAP_KEY = "decision_gap"
"""``sample.info`` key of a choice's counterfactual advantage (``game_credit=counterfactual``)."""
DECISION_REGRET_KEY = "decision_regret"
"""``sample.info`` key: the best option's margin change minus the policy's expected one at
that choice (0 for a policy that always takes the best option; logged as ``credit/regret``)."""


class ChoiceCredit(NamedTuple):
    gap: float
    regret: float


def immediate_margin_changes(state, player: int, action_ids: Sequence[int]) -> list[float]:
    """How much each action, played now, moves `player`'s score margin (the game's rules
    play it on a clone; `state` is left as it is)."""
    before = float(state.score_margin(player))
    changes = []
    for action in action_ids:
        twin = state.clone()
        twin.apply_action(action)
        changes.append(float(twin.score_margin(player)) - before)
    return changes


class SolvedGame:
    """A game solved over its positions (`games.positions.solved_values`): what each legal
    action is worth to the mover under perfect play from there on (``game_credit=solved``)."""

    def __init__(self, game):
        graph = small_position_graph(game)
        if graph is None:
            raise ValueError(f"{game!r} cannot be solved over its positions: it needs a position_key, no chance "
                             f"and at most {DEFAULT_MAX_DECISION_POSITIONS:,} positions to move from")
        self._graph, self._values = graph, solved_values(graph)
        self._index = {key: i for i, key in enumerate(graph.keys)}

    def action_values(self, state, player: int, action_ids: Sequence[int]) -> list[float]:
        position = self._index[state.position_key()]
        child = dict(zip(self._graph.actions[position], self._graph.children[position]))
        return [self._values[child[action]][player] for action in action_ids]


_SOLVED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def solved_game(game) -> SolvedGame:
    """`SolvedGame(game)`, built once per game object (TicTacToe: some 0.1 s)."""
    solved = _SOLVED.get(game)
    if solved is None:
        solved = _SOLVED[game] = SolvedGame(game)
    return solved


def option_values(credit: str, state, player: int, action_ids: Sequence[int]) -> list[float]:
    """The values ``Q(o)`` that `credit` (one of `COUNTERFACTUAL_CREDITS`) gives `player`'s legal actions."""
    if credit == "solved":
        return solved_game(state.game).action_values(state, player, action_ids)
    return immediate_margin_changes(state, player, action_ids)


def decision_gaps(decision, choices: Sequence[str], chained: bool, changes: Sequence[float]) -> list[ChoiceCredit | None]:
    """Per choice of `decision` (one, or one per part of a chained turn): its gap and
    regret, or None where the choice does not qualify (see the module docstring).

    `choices` are the turn's legal action strings, `changes` their margin changes
    (`immediate_margin_changes`), `chained` whether the policy answered along
    ``ActionChain(choices)``.
    """
    if not chained:
        return [_gap(decision.choice_index, decision.choice_probs, [{change} for change in changes])]
    chain = ActionChain(choices)
    paths = [chain.picks_of(action) for action in choices]
    picks = [part.choice_index for part in decision.parts]
    gaps = []
    for depth, part in enumerate(decision.parts):
        prefix = tuple(picks[:depth])
        reached: list[set[float]] = [set() for _ in part.choice_probs]
        for path, change in zip(paths, changes):
            if len(path) > depth and path[:depth] == prefix:
                reached[path[depth]].add(change)
        gaps.append(_gap(part.choice_index, part.choice_probs, reached))
    return gaps


def _gap(chosen: int, probabilities: Sequence[float], reached: list[set[float]]) -> ChoiceCredit | None:
    """``Q(chosen) - E_pi[Q]`` and ``max Q - E_pi[Q]`` when every option's actions share one
    margin change and the options do not all share the same one; else None."""
    if any(len(values) != 1 for values in reached):
        return None
    values = [next(iter(v)) for v in reached]
    if len(set(values)) == 1:
        return None
    expected = sum(p * q for p, q in zip(probabilities, values))
    return ChoiceCredit(values[chosen] - expected, max(values) - expected)


def decision_credit_metrics(samples: Sequence) -> dict[str, float]:
    """``credit/choices`` (how many choices of the step were credited counterfactually) and
    ``credit/regret`` (their mean regret: how much margin the policy's own distribution
    leaves on the table at them; it falls as the verdict is learned)."""
    regrets = [sample.info[DECISION_REGRET_KEY] for sample in samples]
    return {"credit/choices": float(len(regrets)), "credit/regret": sum(regrets) / len(regrets) if regrets else 0.0}
