"""Evaluation of a language-model policy: match results and exact exploitability.

* `evaluate_against` plays the policy against a fixed opponent from both seats and
  reports win / draw / loss / invalid rates with 95% Wilson intervals and the mean return.
* `policy_table` asks the model for its action distribution at every information state
  of a small game (exact from log-probs in ``choice`` and ``direct`` modes, estimated by
  sampling in ``think`` mode); `model_exploitability` scores that table with
  `games.analysis.exploitability`. Which games are small enough is decided by the size of
  their tree (`games.analysis.small_game_tree`), not by their name. A perfect-information
  game with too many histories but few positions (TicTacToe: 549,946 and 4,520) is scored
  over its positions instead (`games.positions`), one model call per position with a
  choice to make.

Both measure one policy: the one sampled at the evaluation temperature and thinking the
run's way (``trainers.rollouts.thinking``), so the matches, the exploitability and
``checkpoints/best`` describe the same policy, the one that was trained.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

from envs.game_env import GameEnv
from envs.opponents import Opponent, make_opponent
from games import analysis, positions
from trainers.rollouts.policy import LanguagePolicy
from trainers.rollouts.play import GameSetup, ThinkingStrategy, play_games
from trainers.run.seeds import derive_seed
from trainers.rollouts.thinking import PLAIN


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sensible near 0 and 1, unlike +-2 SE)."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(outcomes: list[tuple[float, bool]]) -> dict:
    """Rates with intervals from (learner return, learner answered invalidly) pairs."""
    total = len(outcomes)
    counts = Counter()
    for value, invalid in outcomes:
        counts["win" if value > 0 else "loss" if value < 0 else "draw"] += 1
        counts["invalid"] += int(invalid)
    summary = {"games": total, "mean_return": sum(v for v, _ in outcomes) / total if total else 0.0}
    for key in ("win", "draw", "loss", "invalid"):
        low, high = wilson_interval(counts[key], total)
        summary[f"{key}_rate"] = counts[key] / total if total else 0.0
        summary[f"{key}_ci95"] = [round(low, 4), round(high, 4)]
    return summary


def evaluate_against(
    policy: LanguagePolicy,
    make_env,
    env_id: str,
    opponent: "Opponent | LanguagePolicy | str",
    *,
    games: int,
    seed: int,
    temperature: float | None = None,
    batch_games: int = 64,
    opponent_name: str | None = None,
    thinking: ThinkingStrategy = PLAIN,
) -> dict:
    """`games` games in each seat against `opponent` (a fixed opponent, its name, or a frozen
    model policy such as a league snapshot); results per seat and overall. The policy
    answers through `thinking` (``trainers.rollouts.thinking``), as it does in training."""
    probe = make_env()
    if isinstance(opponent, str):
        opponent_name, opponent = opponent, make_opponent(opponent, probe.game)
    elif opponent_name is None:
        opponent_name = type(opponent).__name__
    per_seat = {}
    overall = []
    for seat in range(probe.game.num_players()):
        outcomes = []
        for start in range(0, games, batch_games):
            count = min(batch_games, games - start)
            setups = [
                GameSetup(env_id, make_env(), derive_seed(seed, seat, start + i), frozenset({seat}), start + i)
                for i in range(count)
            ]
            _, results, _ = play_games(
                setups, policy, seed=derive_seed(seed, seat, start), opponent=opponent, temperature=temperature,
                thinking=thinking,
            )
            outcomes.extend((r.returns[seat], r.invalid[seat] > 0) for r in results)
        per_seat[str(seat)] = summarize(outcomes)
        overall.extend(outcomes)
    return {"opponent": opponent_name, "env": env_id, **summarize(overall), "per_seat": per_seat}


def decision_states(game) -> Iterable:
    """One representative state per (information state of the player to move)."""
    seen = set()
    stack = [game.new_initial_state()]
    while stack:
        state = stack.pop()
        if state.is_terminal():
            continue
        if not state.is_chance_node():
            key = state.information_state_string(state.current_player())
            if key not in seen:
                seen.add(key)
                yield key, state
        for action in state.legal_actions():
            child = state.clone()
            child.apply_action(action)
            stack.append(child)


def policy_table(
    policy: LanguagePolicy,
    env: GameEnv,
    *,
    samples: int = 16,
    seed: int = 0,
    temperature: float = 1.0,
    thinking: ThinkingStrategy = PLAIN,
) -> dict[str, dict[int, float]]:
    """The model's action distribution at every information state of `env`'s game, at `temperature`.

    ``choice`` mode: exact, ``softmax(scores / temperature)``, what the policy samples.
    ``direct`` mode: the softmax of the canonical answers' sequence log-probs divided by the
    temperature (the policy conditioned on answering legally; exact at temperature 1).
    ``think`` mode: estimated from `samples` answers per state, thought through by
    `thinking`; see `sampled_policy_table`.
    """
    return _policy_table(policy, env, samples=samples, seed=seed, temperature=temperature, thinking=thinking)[0]


def _policy_table(policy, env, *, samples, seed, temperature, thinking) -> tuple[dict, float | None]:
    keyed = list(decision_states(env.game))
    prompts = [env.prompt_for(state) for _, state in keyed]
    if policy.mode != "think":
        distributions = policy.action_distributions(prompts, temperature=temperature)
        return {key: dist for (key, _), dist in zip(keyed, distributions)}, None
    return sampled_policy_table(policy, [key for key, _ in keyed], prompts, samples=samples, seed=seed,
                                temperature=temperature, thinking=thinking)


def sampled_policy_table(policy, keys, prompts, *, samples, seed, temperature, thinking) -> tuple[dict, float]:
    """Think mode: `samples` answers per state; returns ``(table, invalid_rate)``.

    The table is the distribution over the legal actions of the answers that named one (the
    policy conditioned on answering legally; uniform where no answer was legal); the
    invalid rate is the share of all answers that named none, reported beside it so that
    selecting a policy by its table does not ignore it (`selection_score`).
    """
    repeated = [p for p in prompts for _ in range(samples)]
    replies = thinking.answer_all(policy, repeated, seed=seed, temperature=temperature)
    table, invalid = {}, 0
    for index, (key, prompt) in enumerate(zip(keys, prompts)):
        counts = Counter()
        for reply in replies[index * samples : (index + 1) * samples]:
            parsed = prompt.parse(reply.text)
            if parsed.action is not None:
                counts[parsed.action] += 1
            else:
                invalid += 1
        total = sum(counts.values())
        table[key] = (
            {a: counts[a] / total for a in prompt.action_ids}
            if total
            else {a: 1 / len(prompt.action_ids) for a in prompt.action_ids}
        )
    return table, invalid / max(1, len(replies))


def model_exploitability(policy: LanguagePolicy, env: GameEnv, **kwargs) -> tuple[float, dict] | None:
    """Exact exploitability of the model's policy in `env`'s game and its policy table,
    or None when the game is too large for exact analysis (`analysis.small_game_tree`).
    Keyword arguments go to `policy_table`."""
    report = exploitability_report(policy, env, **kwargs)
    return None if report is None else (report["exploitability"], report["policy"])


def exploitability_report(
    policy: LanguagePolicy,
    env: GameEnv,
    *,
    max_decision_positions: int = positions.DEFAULT_MAX_DECISION_POSITIONS,
    **kwargs,
) -> dict | None:
    """``{"exploitability", "policy"}`` of the model in `env`'s game (None when the game is too
    large), and in think mode ``policy_invalid_rate`` and ``invalid_cost``. A game whose
    history tree is too large but that has at most `max_decision_positions` positions is
    scored over them instead (`position_exploitability_report`).

    ``invalid_cost = invalid_rate * (2 * max_utility)``: an invalid answer forfeits (the
    offender's worst outcome, where the worst legal play still gets at least that), and the
    game's utility range is the most one answer can change an outcome by. `selection_score`
    adds it to the exploitability of the legal-answer table, so of two policies equally
    exploitable when they answer legally, the one that answers legally more often is kept.
    """
    tree = analysis.small_game_tree(env.game)
    options = {"samples": 16, "seed": 0, "temperature": 1.0, "thinking": PLAIN, **kwargs}
    if tree is None:
        return position_exploitability_report(
            policy, env, temperature=options["temperature"], max_decision_positions=max_decision_positions
        )
    table, invalid_rate = _policy_table(policy, env, **options)
    report = {"exploitability": analysis.exploitability(tree, table), "policy": table}
    if invalid_rate is not None:
        report["policy_invalid_rate"] = invalid_rate
        report["invalid_cost"] = invalid_rate * 2 * env.game.max_utility()
    return report


def position_exploitability_report(
    policy: LanguagePolicy,
    env: GameEnv,
    *,
    temperature: float = 1.0,
    max_decision_positions: int = positions.DEFAULT_MAX_DECISION_POSITIONS,
) -> dict | None:
    """``{"exploitability", "best_response_values", "policy"}`` over the positions of `env`'s game
    (`games.positions`), or None when the game has no position graph with at most
    `max_decision_positions` decision positions, the env cuts games short (`turn_limit`: it
    plays another game) or the policy thinks.

    The prompt shows the player to move its observation and the legal actions, both fixed by
    the position, so the model's policy is a function of the position and the table
    ``{position_key: distribution}`` is exact. ``best_response_values[p]`` is what player p
    gets by best-responding to the model in every other seat (TicTacToe: +1 a sure win, 0 a
    draw). Think mode would need sampled answers at thousands of positions, beyond an
    evaluation's budget: None.
    """
    if policy.mode == "think":
        return None
    graph = positions.small_position_graph(env.game, max_decision_positions=max_decision_positions)
    if graph is None or (env.turn_limit or math.inf) < env.game.max_game_length():
        return None
    # A forced move needs no model call (TicTacToe: X's last move, 222 of the 4,520 positions).
    table = {graph.keys[i]: {graph.actions[i][0]: 1.0} for i in graph.decision_positions if len(graph.actions[i]) == 1}
    asked = [i for i in graph.decision_positions if len(graph.actions[i]) > 1]
    distributions = policy.action_distributions([env.prompt_for(graph.states[i]) for i in asked], temperature=temperature)
    table.update({graph.keys[i]: dist for i, dist in zip(asked, distributions)})
    return {
        "exploitability": positions.exploitability(graph, table),
        "best_response_values": [positions.best_response(graph, table, p)[0] for p in range(graph.num_players)],
        "policy": table,
    }


def selection_score(results: dict, player: str) -> tuple[str, float] | None:
    """What `checkpoints/best` optimises, from one evaluation: ("exploitability", mean over
    small games, each plus its ``invalid_cost`` in think mode), else ("rating", the policy's
    Elo), else ("pass_at_1", mean over tasks)."""
    exploitability = [
        v + results.get(k.removesuffix("/exploitability") + "/invalid_cost", 0.0)
        for k, v in results.items()
        if k.endswith("/exploitability")
    ]
    if exploitability:
        return "exploitability", sum(exploitability) / len(exploitability)
    if player in results.get("ratings", {}):
        return "rating", results["ratings"][player]
    passes = [v["pass_at_1"] for v in results.values() if isinstance(v, dict) and "pass_at_1" in v]
    if passes:
        return "pass_at_1", sum(passes) / len(passes)
    return None


def match_score(value: float) -> float:
    """A game's result for ratings and league scores: win 1, draw 0.5, loss 0."""
    return 1.0 if value > 0 else 0.0 if value < 0 else 0.5
