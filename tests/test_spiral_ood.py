"""SPIRAL's evaluation protocol as a preset, the game evaluation's options, one-way imports."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from benchmarks import game_eval
from benchmarks.evaluate import main as evaluate_main
from envs.invalid import InvalidActionPolicy
from trainers.evaluation.out_of_domain import SPIRAL_OOD, Outcome, paired_comparison, sign_test

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------ the game evaluation's env


def made_env(*arguments):
    options = game_eval.parse(list(arguments))
    game_eval.check_options(options)
    return game_eval.env_factory(options)()


def test_env_arguments_reach_any_game():
    env = made_env("env=simple_negotiation", 'env_kwargs={"max_turns": 4}')
    assert env.game.max_turns == 4
    assert made_env("env=openspiel:pig", 'env_kwargs={"winscore": 7}').game.params() == {"winscore": 7}


def test_invalid_action_policy_and_turn_limit_reach_the_env():
    env = made_env("env=tic_tac_toe", "invalid_action_policy=spiral", "turn_limit=5")
    assert env.invalid_action_policy == InvalidActionPolicy.spiral()
    assert env.turn_limit == 5
    assert made_env("env=tic_tac_toe").turn_limit is None


def test_hands_go_to_games_with_hands_and_are_refused_elsewhere():
    assert made_env("env=kuhn_poker", "hands=3").game.params()["hands"] == 3
    with pytest.raises(ValueError, match="hands=3: env 'tic_tac_toe' has no hands"):
        made_env("env=tic_tac_toe", "hands=3")


@pytest.mark.parametrize(
    "argument, message",
    [
        ("invalid_action_policy=lenient", "invalid_action_policy='lenient': valid policies are forfeit, spiral, textarena"),
        ("env_kwargs=[1]", "env_kwargs='[1]': expected a JSON object"),
        ('env_kwargs={"max_turn": 4}', "unknown argument(s) ['max_turn']"),
        ("count=5", "count=5 goes with a preset"),
        ("games=ood", "games='ood': expected a int, or a preset: spiral_ood"),
        ("model=a,b,c", "give one model, or two (before,after)"),
    ],
)
def test_bad_options_are_named(capsys, argument, message):
    assert evaluate_main(["env=simple_negotiation", argument]) == 2
    assert message in capsys.readouterr().err


def test_lists_keep_parenthesised_commas():
    assert game_eval.split_list("openspiel:goofspiel(num_cards=4,points_order=descending), kuhn_poker") == [
        "openspiel:goofspiel(num_cards=4,points_order=descending)",
        "kuhn_poker",
    ]


# ------------------------------------------------------------------- paired comparison


def outcome(index, value):
    return Outcome("g", "random", 0, index, value, False)


def test_paired_comparison_by_hand():
    before = [outcome(i, v) for i, v in enumerate([-1, -1, 0, 1, -1])]
    after = [outcome(i, v) for i, v in enumerate([1, -1, 1, 1, 1])]
    result = paired_comparison(before, after)
    # score differences: 1, 0, 0.5, 0, 1 -> mean 0.5, sample sd 0.5
    assert result["pairs"] == 5 and result["difference"] == pytest.approx(0.5)
    assert result["difference_ci95"] == pytest.approx([0.5 - 1.96 * 0.5 / 5**0.5, 0.5 + 1.96 * 0.5 / 5**0.5])
    assert (result["better"], result["worse"]) == (3, 0)
    assert result["sign_test_p"] == pytest.approx(0.25)  # 2 * (1/2)^3
    assert sign_test(5, 5) == 1.0
    with pytest.raises(ValueError, match="share no game"):
        paired_comparison(before, [Outcome("h", "random", 0, 0, 1, False)])


# ------------------------------------------------------------------------ the preset


def test_spiral_ood_preset_plays_both_seats_and_compares_two_checkpoints(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "report.json"
    code = evaluate_main([
        "games=spiral_ood", "model=tiny-random,tiny-random", "opponent=random,checkpoint:tiny-random",
        "count=1", "max_new_tokens=4", "threads=1", f"out={out}",
    ])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"before", "after"}
    results = report["models"]["after"]
    for env_id in SPIRAL_OOD:
        for opponent in ("random", "checkpoint:tiny-random"):
            summary = results[f"{env_id}/{opponent}"]
            assert summary["games"] == 2 and set(summary["per_seat"]) == {"0", "1"}
            low, high = summary["win_ci95"]
            assert 0 <= low <= summary["win_rate"] <= high <= 1
    assert results["all/random"]["games"] == 2 * len(SPIRAL_OOD)
    # the same checkpoint twice on the same seeds: every pair is identical
    assert report["paired"]["pairs"] == 4 * len(SPIRAL_OOD)
    assert report["paired"]["difference"] == 0.0 and report["paired"]["sign_test_p"] == 1.0


# ------------------------------------------------------------------------ imports


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize(
    "package, modules",
    [
        ("benchmarks", ["evaluate", "game_eval", "outputs"]),
        ("envs", ["registry", "checker", "markovian", "openspiel_env", "textarena_env", "opponents", "game_env"]),
    ],
)
def test_imports_run_one_way(package, modules):
    names = {f"{package}.{m}" for m in modules}
    graph = {name: imported_modules(ROOT / package / f"{name.split('.')[1]}.py") & names for name in names}
    for module, targets in graph.items():
        for target in targets:
            assert module not in graph[target] or target == module, f"{module} and {target} import each other"

    def reaches(start, goal, seen=()):
        return any(t == goal or (t not in seen and reaches(t, goal, (*seen, t))) for t in graph[start])

    cycles = [m for m in names if reaches(m, m)]
    assert not cycles, f"import cycles through {sorted(cycles)}"
