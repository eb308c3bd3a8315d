"""opponent=league end to end on the tiny model: snapshots, opponents, ratings, best policy, exact resume."""

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from trainers.selfplay import main

LEAGUE = [
    "model=tiny-random",
    "tensorboard=false",
    "progress=false",
    "env=kuhn_poker",
    "games_per_step=8",
    "eval_games=2",
    "eval_opponents=random",
    "eval_every=2",
    "threads=1",
    "lr=1e-3",
    "advantage=rae",
    "opponent=league",
    "league_every=1",
    "league_size=2",
    "league_latest_prob=0.25",
    "league_sampling=prioritized",
    "save_every=2",
]


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def without_time(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not (k.startswith("time/") or k.endswith("time_s"))} for m in metrics]


def test_league_run_plays_snapshots_rates_them_and_resumes_exactly(tmp_path, kill_at_step):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*LEAGUE, "steps=5", f"out={straight}"]) == 0
    metrics = lines(straight)
    assert [m["league/size"] for m in metrics] == [1, 2, 2, 2, 2]
    # the pool holds the two newest snapshots; a dropped one stays on disk while a kept
    # checkpoint's pool names it (step 4's pool: 3 and 4), and no longer
    extra = json.loads((straight / "checkpoints" / "step_00000005" / "extra_state.json").read_text())
    assert [s["folder"] for s in extra["league"]["snapshots"]] == ["snapshot_00000004", "snapshot_00000005"]
    assert sorted(p.name for p in (straight / "league").iterdir()) == [f"snapshot_0000000{i}" for i in (3, 4, 5)]
    # with a snapshot in the pool some games are against it: one learner seat per such game
    assert any(m["turns"] < 2 * m["games"] * 2 for m in metrics[1:])
    final = json.loads((straight / "eval" / "final.json").read_text())
    # evaluation plays the snapshots too, and rates every player
    assert {"kuhn_poker/step_00000004", "kuhn_poker/random"} <= set(final)
    ratings = json.loads((straight / "eval" / "ratings.json").read_text())
    assert {"random", "step_00000000", "step_00000002", "step_00000004", "step_00000005"} <= set(ratings)
    assert ratings["random"] == pytest.approx(1000.0)
    assert "eval/rating" in metrics[1]  # the step-2 evaluation's rating is in metrics.jsonl
    best = json.loads((straight / "checkpoints" / "best" / "meta.json").read_text())
    evaluated = {json.loads(p.read_text())["step"]: json.loads(p.read_text()) for p in (straight / "eval").glob("step_*.json")}
    lowest = min(evaluated, key=lambda step: (evaluated[step]["kuhn_poker/exploitability"], step))
    assert best["step"] == lowest and best["exploitability"] == evaluated[lowest]["kuhn_poker/exploitability"]

    # killed after the step-4 checkpoint, with a snapshot written after it: resume equals the straight run
    kill_at_step(4)
    with pytest.raises(kill_at_step.error):
        main([*LEAGUE, "steps=5", f"out={resumed}"])
    kill_at_step.disarm()
    (resumed / "league" / "snapshot_00000005").mkdir()  # as if written by the killed step
    assert main([*LEAGUE, "steps=5", "resume=true", f"out={resumed}"]) == 0
    assert without_time(lines(resumed)) == without_time(metrics)
    assert json.loads((resumed / "eval" / "final.json").read_text()) == final
    assert json.loads((resumed / "eval" / "ratings.json").read_text()) == ratings
