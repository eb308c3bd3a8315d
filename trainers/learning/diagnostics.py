"""Exact-advantage diagnostics: how well does each advantage estimator track the truth?

In a game small enough for exact analysis (single-hand Kuhn Poker: 58 histories, 12
information states), the true advantage of every sampled turn is known. Before a step's
update the model's action distribution at every information state (choice mode, at the
rollout temperature) is one batched model call; with both seats played by that policy
(self-play) and chance by the game, ``games.analysis.action_values`` gives ``Q(I, a)``,
the expected return of playing ``a`` at ``I`` and the policy afterwards, and
``V(I) = sum_a pi(a | I) Q(I, a)``. A turn's true advantage is ``Q(I, a) - V(I)``.

Each estimator the trainer offers is then run on a copy of the same batch (the EMA ones
from a copy of the run's baselines, so the run itself is untouched) and compared, turn by
turn, with the truth: Pearson correlation, sign agreement (the share of turns with a
nonzero true advantage whose estimate has the same sign) and the estimate's variance. A
low correlation says the learner is pushed in directions unrelated to what would improve
play (credit assignment); a high one with a policy that still drifts says the model fails
to act on a correct signal (e.g. it cannot tell two states apart).

``advantage=exact`` trains on the true advantage itself: an oracle that bounds what
better credit assignment could give.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

from trainers.learning.advantages import METHODS, AdvantageState, compute_advantages
from trainers.learning.samples import TurnSample

TRUE_ADVANTAGE_KEY = "true_advantage"
"""``sample.info[TRUE_ADVANTAGE_KEY]``: the turn's exact ``Q(I, a) - V(I)`` (set by `set_true_advantages`)."""

DIAGNOSED_METHODS = tuple(m for m in METHODS if m != "exact")
"""The estimators compared with the truth on every diagnosed step."""


def set_true_advantages(samples: Sequence[TurnSample], tree, policy_table: dict) -> int:
    """Write each sample's exact advantage into ``info[TRUE_ADVANTAGE_KEY]``; returns how many got one.

    `policy_table` is ``{information_state: {action: probability}}`` for every seat (the
    policy the samples were drawn from); `tree` the game's ``analysis.GameTree``. A sample
    needs ``info["state_key"]`` and ``info["action_id"]`` (set by the rollout); one whose
    action is unknown (an invalid answer) or whose state the policy never reaches gets none.
    """
    from games import analysis

    q_values = analysis.action_values(tree, policy_table)
    given = 0
    for sample in samples:
        sample.info.pop(TRUE_ADVANTAGE_KEY, None)
        key, action = sample.info.get("state_key"), sample.info.get("action_id")
        if action is None or key not in q_values:
            continue
        qs = q_values[key]
        value = sum(policy_table[key].get(a, 0.0) * q for a, q in qs.items())
        sample.info[TRUE_ADVANTAGE_KEY] = qs[action] - value
        given += 1
    return given


def estimator_agreement(
    samples: Sequence[TurnSample],
    state: AdvantageState,
    methods: Sequence[str] = DIAGNOSED_METHODS,
    *,
    prefix: str = "advantage_diagnostics",
) -> dict[str, float]:
    """Per estimator: correlation and sign agreement with the true advantage, and variance.

    Metrics ``<prefix>/<method>/{correlation,sign_agreement,variance}``, ``<prefix>/true/variance``
    and ``<prefix>/turns``, over the samples that carry a true advantage. Neither `samples`
    nor `state` is changed: every estimator runs on copies.
    """
    known = [s for s in samples if TRUE_ADVANTAGE_KEY in s.info]
    if len(known) < 2:
        return {}
    truth = [s.info[TRUE_ADVANTAGE_KEY] for s in known]
    metrics = {f"{prefix}/true/variance": _variance(truth), f"{prefix}/turns": float(len(known))}
    for method in methods:
        copies = [_copy_sample(s) for s in known]
        compute_advantages(copies, method, copy.deepcopy(state))
        estimates = [s.advantage for s in copies]
        name = f"{prefix}/{method}"
        metrics[f"{name}/correlation"] = correlation(estimates, truth)
        metrics[f"{name}/sign_agreement"] = sign_agreement(estimates, truth)
        metrics[f"{name}/variance"] = _variance(estimates)
    return metrics


def correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; 0 when either side is constant (it carries no ordering to agree with)."""
    n = len(x)
    mean_x, mean_y = sum(x) / n, sum(y) / n
    cov = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y))
    var_x = sum((a - mean_x) ** 2 for a in x)
    var_y = sum((b - mean_y) ** 2 for b in y)
    if var_x <= 0 or var_y <= 0:
        return 0.0
    return cov / math.sqrt(var_x * var_y)


def sign_agreement(estimates: Sequence[float], truth: Sequence[float], *, tolerance: float = 1e-9) -> float:
    """The share of turns with a nonzero true advantage whose estimate has the same sign (0 counts as wrong)."""
    pairs = [(e, t) for e, t in zip(estimates, truth) if abs(t) > tolerance]
    if not pairs:
        return 0.0
    return sum((e > 0) == (t > 0) and e != 0 for e, t in pairs) / len(pairs)


def _variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


def _copy_sample(sample: TurnSample) -> TurnSample:
    """A copy an estimator may overwrite: the token lists are shared (estimators only read them)."""
    return copy.copy(sample)


def diagnosis_blocker(config, game) -> str | None:
    """Why the true advantages of `game`'s turns cannot be computed in this run (None: they can).

    The truth needs the policy of every seat at every information state: both seats must be
    the model (self-play, ``opponent=none``), its distribution must be exact (choice mode)
    and the tree small enough to enumerate (``analysis.small_game_tree``). The OpenRLHF job
    computes its own advantages on the cluster, so it has no such hook.
    """
    from games import analysis

    if config.backend == "openrlhf":
        return "the OpenRLHF job computes advantages on the cluster (backend=local or ray)"
    if config.opponent != "none":
        return f"the true advantage is defined for self-play (opponent=none; opponent is {config.opponent})"
    if config.reward != "outcome":
        return f"the true advantage is the outcome's, and reward={config.reward} trains on something else"
    if config.mode != "choice":
        return f"it needs the model's exact action distribution, which choice mode has (mode is {config.mode})"
    if analysis.small_game_tree(game) is None:
        return "the game's tree is too large for exact analysis"
    return None


def diagnosed_trees(config, game_envs: dict) -> dict:
    """``{env_id: GameTree}`` of the game envs whose turns get true advantages this run.

    ``advantage_diagnostics=auto``: every game env where it is possible; ``on`` or
    ``advantage=exact``: every game env, and a ValueError naming the key and the reason
    for any that cannot (``off`` with ``advantage=exact`` is refused too: the oracle needs them).
    """
    from games import analysis

    required = config.advantage_diagnostics == "on" or config.advantage == "exact"
    if config.advantage == "exact" and config.advantage_diagnostics == "off":
        raise ValueError("advantage=exact trains on the true advantages that advantage_diagnostics computes; "
                         "leave advantage_diagnostics at auto or on")
    if config.advantage_diagnostics == "off":
        return {}
    if required and not game_envs:
        key = "advantage=exact" if config.advantage == "exact" else "advantage_diagnostics=on"
        raise ValueError(f"{key} needs a game env (tasks have no game tree); env is {','.join(config.env)}")
    trees = {}
    for env_id, env in game_envs.items():
        blocker = diagnosis_blocker(config, env.game)
        if blocker is None:
            trees[env_id] = analysis.small_game_tree(env.game)
        elif required:
            key = "advantage=exact" if config.advantage == "exact" else "advantage_diagnostics=on"
            raise ValueError(f"{key} cannot run on {env_id}: {blocker}")
    return trees
