"""Advantages: turn each sample's return into the signal the policy-gradient loss weighs it by.

Methods (``compute_advantages(samples, method, state)``):

* ``rae`` (SPIRAL's role-conditioned advantage estimation): ``A = R - b[env, role]``, where
  ``b[env, role]`` is an exponential moving average of the returns that role has received
  in that env, ``b <- alpha * b + (1 - alpha) * R`` with ``alpha = 0.95``, starting at 0.
  It removes each seat's mean return (first-mover advantage, invalid-move penalties), which
  is what keeps self-play from collapsing.
* ``state_baseline``: the same EMA, keyed by ``(env, role, state)``, where the state is
  ``sample.info["state_key"]`` (e.g. the information-state string) when the rollout sets
  it, else the prompt ids. A per-role baseline cannot remove a component of the return
  shared by all states (a card-blind "always bet" bias in Kuhn Poker); a per-state one does,
  leaving only what the action taken in that state changed.
* ``prompt_norm``: the per-state baseline taken from the batch itself: samples are grouped
  by ``(env, role, state)`` and ``A = (R - mean) / (std + eps)`` within each group (GRPO's
  normalisation applied per prompt instead of per task group). Needs several samples of
  each state per batch, which self-play on a small game has (12 information states in Kuhn).
* ``batch_q``: ``A = (Q(s, a) - V(s)) / (std_s + eps)`` with ``Q(s, a)`` the batch's mean
  return of the samples that played action ``a`` at state ``s`` and ``V(s)``, ``std_s`` the
  mean and std of all returns at ``s``. Every turn of a (state, action) cell gets the
  cell's advantage, so the noise of single games (a King that bets and then loses to
  a lucky call) averages out within the batch, where ``prompt_norm`` keeps each game's
  own return. Needs revisited states (small games, many games a step); a state visited
  once gets 0, as under ``prompt_norm``.
* ``grpo``: group normalisation for single-agent tasks, the group being ``(env, game_id)``
  (the G answers to one prompt): ``A = (R - mean) / (std + eps)``.
* ``dr_grpo``: Dr. GRPO's unbiased variant, ``A = R - mean`` (no division by the std).
* ``none``: ``A = R``, the paper's "no RAE" ablation (plain REINFORCE).
* ``exact``: the true advantage ``Q(I, a) - V(I)`` under the current policy, from exact
  analysis of the game tree (``trainers.learning.diagnostics``; small games in self-play,
  choice mode): an oracle that bounds what better credit assignment could give.

Baseline order (``rae``, ``state_baseline``): we follow SPIRAL's published code, not the
paper's equation: the advantage uses the baseline as it was BEFORE the current return
updates it. The baseline then depends only on earlier games, so it is independent of the
current return and ``E[A]`` has no term from the return itself (unbiased). The paper's
update-then-subtract shrinks every advantage by a factor ``alpha``.

Baseline granularity: a return belongs to a (game, role), not to a turn. Every turn of a
player in a game gets the same advantage, and the baseline is updated once per
(game, role), whatever the number of turns, so long games do not weigh more in the
average. Games are processed in the order they first appear in ``samples`` and each reads
the baseline as left by the games before it.

Population std (ddof 0) is used for the group normalisations: it is defined for any group
size; with the sample std (ddof 1, TRL's choice) advantages differ by the constant factor
``sqrt((G-1)/G)`` for a group of G, which a learning rate absorbs.

These functions set ``sample.advantage`` in place and return the same list, so calls chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from trainers.learning.samples import TRACE_KEY, TURN_KEY, TurnSample

METHODS = ("rae", "state_baseline", "prompt_norm", "action_centered", "batch_q", "grpo", "dr_grpo", "none", "exact")
DEFAULT_ALPHA = 0.95
DEFAULT_EPS = 1e-6


class EmaBaselines:
    """A table of exponential moving averages of returns, ``b[key] <- alpha*b[key] + (1-alpha)*R``.

    Every baseline starts at 0 (SPIRAL's choice: no return has been seen yet). Keys are
    tuples of strings, ints and tuples of ints, so the table serialises to JSON.
    """

    def __init__(self, alpha: float = DEFAULT_ALPHA):
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha = alpha
        self.values: dict[tuple, float] = {}
        self.counts: dict[tuple, int] = {}

    def value(self, key: tuple) -> float:
        """The current baseline of ``key`` (0 before its first return)."""
        return self.values.get(key, 0.0)

    def update(self, key: tuple, ret: float) -> None:
        """Fold one return into ``key``'s average."""
        self.values[key] = self.alpha * self.value(key) + (1.0 - self.alpha) * ret
        self.counts[key] = self.counts.get(key, 0) + 1

    def state_dict(self) -> dict:
        """JSON-able state: alpha and ``[key, value, count]`` rows (tuples become lists)."""
        return {
            "alpha": self.alpha,
            "entries": [[_listify(key), self.values[key], self.counts[key]] for key in self.values],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned (lists in keys become tuples again)."""
        self.alpha = state["alpha"]
        self.values = {_tuplify(key): value for key, value, _ in state["entries"]}
        self.counts = {_tuplify(key): count for key, _, count in state["entries"]}


class RoleBaselines(EmaBaselines):
    """RAE's baselines, one per ``(env_id, role)``."""

    def as_metrics(self, prefix: str = "baseline") -> dict[str, float]:
        """``{"baseline/kuhn_poker/0": b, ...}`` for logging."""
        return {f"{prefix}/{env_id}/{role}": value for (env_id, role), value in sorted(self.values.items())}


class StateBaselines(EmaBaselines):
    """Per-state baselines, one per ``(env_id, role, state_key)``.

    Too many to log one by one (a state is a prompt), so the metrics summarise each
    (env, role): how many states have a baseline and their mean.
    """

    def as_metrics(self, prefix: str = "state_baseline") -> dict[str, float]:
        """``{"state_baseline/kuhn_poker/0/states": n, ".../mean": m, ...}``."""
        groups: dict[tuple[str, int], list[float]] = {}
        for (env_id, role, _), value in self.values.items():
            groups.setdefault((env_id, role), []).append(value)
        metrics = {}
        for (env_id, role), values in sorted(groups.items()):
            metrics[f"{prefix}/{env_id}/{role}/states"] = float(len(values))
            metrics[f"{prefix}/{env_id}/{role}/mean"] = sum(values) / len(values)
        return metrics


@dataclass
class AdvantageState:
    """Everything the advantage methods carry from step to step; part of every checkpoint."""

    role_baselines: RoleBaselines = field(default_factory=RoleBaselines)
    state_baselines: StateBaselines = field(default_factory=StateBaselines)

    @classmethod
    def with_alpha(cls, alpha: float) -> AdvantageState:
        return cls(RoleBaselines(alpha), StateBaselines(alpha))

    def state_dict(self) -> dict:
        return {"role": self.role_baselines.state_dict(), "state": self.state_baselines.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.role_baselines.load_state_dict(state["role"])
        self.state_baselines.load_state_dict(state["state"])

    def as_metrics(self) -> dict[str, float]:
        return {**self.role_baselines.as_metrics(), **self.state_baselines.as_metrics()}


def compute_rae(samples: list[TurnSample], baselines: RoleBaselines) -> list[TurnSample]:
    """RAE: ``A = R - b[env, role]`` with ``b`` read before the game's return updates it.

    One update per (env, game, role) return; every turn of that player gets the same A
    (with ``reward=margin`` each turn has its own return: one update and one A per turn).
    """
    return _ema_advantages(samples, baselines, lambda s: (s.env_id, s.role))


def compute_state_baseline(samples: list[TurnSample], baselines: StateBaselines) -> list[TurnSample]:
    """``A = R - b[env, role, state]``, read before update, one update per (game, role, state)."""
    return _ema_advantages(samples, baselines, lambda s: (s.env_id, s.role, state_key(s)))


def state_key(sample: TurnSample) -> Hashable:
    """What identifies a sample's decision point: ``info["state_key"]`` if set, else the prompt ids.

    The information-state string is the better key: two prompts that differ only in
    wording the player cannot act on (e.g. a sampled chat history) still share a baseline.
    """
    if "state_key" in sample.info:
        return sample.info["state_key"]
    return tuple(sample.prompt_ids)


def prompt_normalized_advantages(
    samples: list[TurnSample], *, normalize_std: bool = True, eps: float = DEFAULT_EPS
) -> list[TurnSample]:
    """Group by ``(env, role, state)`` within the batch: ``A = (R - mean) / (std + eps)``."""
    return _group_normalize(samples, lambda s: (s.env_id, s.role, state_key(s)), normalize_std, eps)


def action_centered_advantages(samples: list[TurnSample], *, eps: float = DEFAULT_EPS) -> list[TurnSample]:
    """Per-state normalised advantages with their card-blind part removed.

    First ``prompt_norm``; then, for every ``(env, role, action text)``, subtract the
    mean advantage of that action over all states in the batch. What is left says only
    "this action is better here than it is on average elsewhere", which a policy can use
    only by telling its states apart (in Kuhn Poker: by its card). A shared network
    otherwise learns the common part first ("always bet, always call", whatever the
    card) and settles there. Samples are centred on the action they played
    (``info["action"]``, set by the rollout: free-text answers that name the same legal
    action in different words are one action), else on their response text.
    """
    prompt_normalized_advantages(samples, eps=eps)
    groups: dict[tuple, list[TurnSample]] = {}
    for sample in samples:
        groups.setdefault((sample.env_id, sample.role, _action_of(sample)), []).append(sample)
    for group in groups.values():
        mean = sum(s.advantage for s in group) / len(group)
        for sample in group:
            sample.advantage -= mean
    return samples


def batch_q_advantages(samples: list[TurnSample], *, eps: float = DEFAULT_EPS) -> list[TurnSample]:
    """Per (env, role, state): each action's mean return minus the state's, over the state's std.

    ``prompt_norm`` first, then every (state, action) cell gets its mean: the normalisation
    is linear in the return, so that is ``(Q(s, a) - V(s)) / (std_s + eps)``. The action is
    ``info["action"]`` (the legal action played, whatever its wording), else the response
    text; a state whose returns are all equal keeps exactly 0.
    """
    prompt_normalized_advantages(samples, eps=eps)
    cells: dict[tuple, list[TurnSample]] = {}
    for sample in samples:
        cells.setdefault((sample.env_id, sample.role, state_key(sample), _action_of(sample)), []).append(sample)
    for cell in cells.values():
        mean = sum(s.advantage for s in cell) / len(cell)
        for sample in cell:
            sample.advantage = mean
    return samples


def _action_of(sample: TurnSample) -> Hashable:
    """The action a sample played: the legal action it named, else its response."""
    return sample.info.get("action") or sample.info.get("text", tuple(sample.response_ids))


def grpo_advantages(
    samples: list[TurnSample], *, normalize_std: bool = True, eps: float = DEFAULT_EPS
) -> list[TurnSample]:
    """GRPO: group by ``(env, game_id)``; ``A = (R - mean) / (std + eps)``, or ``R - mean`` (Dr. GRPO)."""
    return _group_normalize(samples, lambda s: (s.env_id, s.game_id), normalize_std, eps)


def return_as_advantage(samples: list[TurnSample]) -> list[TurnSample]:
    """No baseline: ``A = R`` (the "no RAE" ablation)."""
    for sample in samples:
        sample.advantage = float(sample.reward)
    return samples


def exact_advantages(samples: list[TurnSample]) -> list[TurnSample]:
    """``A = Q(I, a) - V(I)``, read from ``info["true_advantage"]`` (``trainers.learning.diagnostics``).

    A sample without one (an invalid answer, whose action has no value in the tree) gets 0.
    """
    for sample in samples:
        sample.advantage = float(sample.info.get("true_advantage", 0.0))
    return samples


def part_gap_advantages(samples: list[TurnSample], key: str, *, eps: float = DEFAULT_EPS) -> list[TurnSample]:
    """``A = info[key] / (std + eps)``: each part of an answer its own counterfactual advantage
    (``task_credit=counterfactual``, ``trainers.rollouts.parts``), divided by the population
    std of those values over `samples` (the step's task parts). A confident part's value is
    small (it is scaled by the probability of the options not taken), so unscaled it would
    learn far more slowly than GRPO's unit-std advantages at the same learning rate; a
    step-wide scale keeps the learning rates comparable and keeps every part's sign and
    relative size."""
    gaps = [float(sample.info[key]) for sample in samples]
    mean = sum(gaps) / len(gaps) if gaps else 0.0
    std = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) if gaps else 0.0
    for sample, gap in zip(samples, gaps):
        sample.advantage = gap / (std + eps)
    return samples


def option_centered_gaps(samples: list[TurnSample], key: str, *, eps: float = DEFAULT_EPS) -> list[TurnSample]:
    """`part_gap_advantages`, then for every ``(env, role, option taken)`` the mean of those
    advantages subtracted (``game_credit=counterfactual_centered``).

    Centred so, the step's accepts carry zero credit in sum, and so do its denies: the push
    that would move an option's rate at every state alike (what the uncentred credit did in
    every recorded negotiation run, docs/learning_runs) is gone, and what is left moves an
    option only where it does better than it does on average, which a policy can follow
    only by telling its states apart. An option taken once in the step gets 0."""
    part_gap_advantages(samples, key, eps=eps)
    groups: dict[tuple, list[TurnSample]] = {}
    for sample in samples:
        taken = tuple(sample.choice_ids[sample.choice_index]) if sample.is_choice else _action_of(sample)
        groups.setdefault((sample.env_id, sample.role, taken), []).append(sample)
    for group in groups.values():
        mean = sum(s.advantage for s in group) / len(group)
        for sample in group:
            sample.advantage -= mean
    return samples


def compute_advantages(
    samples: list[TurnSample], method: str, state: AdvantageState | None = None, *, eps: float = DEFAULT_EPS
) -> list[TurnSample]:
    """Set ``sample.advantage`` by ``method`` (one of ``METHODS``); ``state`` holds the EMA baselines.

    ``state`` is required by ``rae`` and ``state_baseline`` (which update it) and ignored
    by the batch-only methods.
    """
    if method not in METHODS:
        raise ValueError(f"unknown advantage method {method!r}; valid methods: {', '.join(METHODS)}")
    if method in ("rae", "state_baseline") and state is None:
        raise ValueError(f"advantage method {method!r} needs an AdvantageState with its baselines")
    if method == "rae":
        return compute_rae(samples, state.role_baselines)
    if method == "state_baseline":
        return compute_state_baseline(samples, state.state_baselines)
    if method == "prompt_norm":
        return prompt_normalized_advantages(samples, eps=eps)
    if method == "action_centered":
        return action_centered_advantages(samples, eps=eps)
    if method == "batch_q":
        return batch_q_advantages(samples, eps=eps)
    if method == "grpo":
        return grpo_advantages(samples, normalize_std=True, eps=eps)
    if method == "dr_grpo":
        return grpo_advantages(samples, normalize_std=False)
    if method == "exact":
        return exact_advantages(samples)
    return return_as_advantage(samples)


STATE_WEIGHTINGS = ("visits", "uniform")
MAX_STATE_WEIGHT = 20.0


def equalize_state_weights(samples: list[TurnSample], *, cap: float = MAX_STATE_WEIGHT) -> list[TurnSample]:
    """Scale advantages so that every visited state weighs the same in the loss (``state_weighting=uniform``).

    Sampled self-play weighs a state by how often it is reached. Once play sharpens, some
    states are almost never reached (Kuhn Poker: the second player holding the King facing
    a bet, when the first player bets only with the King), so their own gradient vanishes
    while a shared network drags them along with the frequent states; they drift to bad
    play, and a best response exploits exactly them. Like CFR, which updates every
    information set whatever its reach, this rescales each state's samples by
    ``N / (S * n_s)`` (N samples over S distinct states of an (env, role), n_s of state s),
    so each state's advantages sum to the same total weight. The factor is capped at `cap`
    so that a state seen once or twice cannot dominate a batch with its noise.
    """
    groups: dict[tuple, dict] = {}
    for sample in samples:
        groups.setdefault((sample.env_id, sample.role), {}).setdefault(state_key(sample), []).append(sample)
    for states in groups.values():
        total = sum(len(members) for members in states.values())
        for members in states.values():
            factor = min(total / (len(states) * len(members)), cap)
            for sample in members:
                sample.advantage *= factor
    return samples


def drop_zero_advantage(samples: Sequence[TurnSample]) -> list[TurnSample]:
    """Keep only samples with ``A != 0`` (SPIRAL drops them).

    Their surrogate has zero gradient (only a KL-to-reference term would still act on them),
    so they mostly cost compute; dropping them removes them from the loss's sample count, so
    the remaining samples get the whole step.
    """
    return [sample for sample in samples if sample.advantage != 0.0]


def advantage_metrics(samples: Sequence[TurnSample]) -> dict[str, float]:
    """Mean, std and zero fraction of the advantages, for logging."""
    if not samples:
        return {"advantage/mean": 0.0, "advantage/std": 0.0, "advantage/zero_fraction": 0.0}
    values = [sample.advantage for sample in samples]
    mean = sum(values) / len(values)
    return {
        "advantage/mean": mean,
        "advantage/std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)),
        "advantage/zero_fraction": sum(v == 0.0 for v in values) / len(values),
    }


def _ema_advantages(samples, baselines: EmaBaselines, key_of) -> list[TurnSample]:
    """Shared body of the EMA methods: read ``b[key]``, set ``A = R - b``, then update once per return."""
    returns: dict[tuple, list[TurnSample]] = {}
    for sample in samples:
        # A return is identified by its game and player (and state, for per-state keys), and
        # by its turn where each turn has its own (reward=margin, trainers.rollouts.rewards).
        returns.setdefault((sample.game_id, sample.info.get(TURN_KEY), *key_of(sample)), []).append(sample)
    for (_, _, *key), group in returns.items():
        key = tuple(key)
        ret = _single_return(group)
        advantage = ret - baselines.value(key)
        for sample in group:
            sample.advantage = advantage
        baselines.update(key, ret)
    return samples


def _group_normalize(samples, key_of, normalize_std: bool, eps: float) -> list[TurnSample]:
    groups: dict[tuple, list[TurnSample]] = {}
    for sample in samples:
        groups.setdefault(key_of(sample), []).append(sample)
    for group in groups.values():
        rewards = [float(sample.reward) for sample in group]
        if min(rewards) == max(rewards):
            # Exactly 0, not float residue (3 x 0.1 does not average to 0.1), so that
            # drop_zero_advantage removes groups with nothing to learn.
            for sample in group:
                sample.advantage = 0.0
            continue
        mean = sum(rewards) / len(rewards)
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
        for sample, reward in zip(group, rewards):
            sample.advantage = (reward - mean) / (std + eps) if normalize_std else reward - mean
    return samples


def _single_return(group: list[TurnSample]) -> float:
    """The one return shared by every turn of a player in a game; differing values are a rollout bug."""
    rewards = {float(sample.reward) for sample in group}
    if len(rewards) != 1:
        first = group[0]
        raise ValueError(
            f"turns of role {first.role} in game {first.game_id} of {first.env_id!r} carry different "
            f"returns {sorted(rewards)}; a baseline method needs one return per (game, role). "
            f"For single-agent tasks where game_id names a group of answers, use 'grpo' or 'dr_grpo'."
        )
    return rewards.pop()


def _listify(value):
    return [_listify(v) for v in value] if isinstance(value, tuple) else value


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


def trace_advantages(
    samples: list[TurnSample],
    method: str,
    state: AdvantageState | None = None,
    *,
    adjust: Callable[[list[TurnSample]], object] | None = None,
) -> list[TurnSample]:
    """``compute_advantages`` once per trace; every chunk of a trace gets its trace's advantage.

    The estimator sees one sample per trace (its first chunk), so a Markovian trace that
    used more chunks does not weigh more in a group's mean and std. A sample without
    ``info[TRACE_KEY]`` is a trace of its own, so plain samples get exactly what
    ``compute_advantages`` gives them. `adjust` (e.g. `equalize_state_weights`) rescales the
    per-trace advantages before they are handed to the chunks, so it too counts traces.
    Sets ``advantage`` in place and returns `samples`.
    """
    traces: dict[Hashable, list[TurnSample]] = {}
    for position, sample in enumerate(samples):
        traces.setdefault(sample.info.get(TRACE_KEY, ("sample", position)), []).append(sample)
    representatives = [chunks[0] for chunks in traces.values()]
    compute_advantages(representatives, method, state)
    if adjust is not None:
        adjust(representatives)
    for chunks in traces.values():
        for sample in chunks[1:]:
            sample.advantage = chunks[0].advantage
    return samples
