"""The negotiation acceptance report: P(accept) on offers that would put the model ahead or behind."""

import json

import pytest

import envs
import games
from games.simple_negotiation import ACCEPT, DENY
from trainers.evaluation.acceptance import acceptance_report, main, offer_positions


def _raises_margin(state) -> bool:
    player = state.current_player()
    after = state.clone()
    after.apply_action(ACCEPT)
    return after.score_margin(player) > state.score_margin(player)


def test_positions_have_an_offer_pending_to_the_mover_that_changes_its_margin():
    game = games.load("simple_negotiation")
    positions = offer_positions(game, states=30, seed=4)
    assert len(positions) == 30
    for state in positions:
        offerer, _ = state.pending_offer()
        assert not state.is_terminal() and offerer != state.current_player()
        after = state.clone()
        after.apply_action(ACCEPT)
        assert after.score_margin(state.current_player()) != state.score_margin(state.current_player())
    assert {_raises_margin(s) for s in positions} == {True, False}
    again = offer_positions(game, states=30, seed=4)
    assert [s.history() for s in again] == [s.history() for s in positions]  # seeded
    with pytest.raises(ValueError, match="at least 2 turns"):
        offer_positions(games.load("simple_negotiation", max_turns=1), states=1, seed=0)


class _Discerning:
    """Accepts exactly the offers that raise its margin (to check how the report splits them)."""

    mode = "choice"

    def __init__(self, env):
        self.env = env
        self.prompts = []

    def action_probabilities_of(self, prompts, actions, *, temperature):
        """Accepts the good offers; of the bad ones denies a quarter and counter-offers the rest."""
        assert set(actions) <= {ACCEPT, DENY}
        self.prompts = prompts
        good = [_raises_margin(s) for s in offer_positions(self.env.game, states=len(prompts) // 2, seed=7)] * 2
        return [(1.0 if g else 0.0) if a == ACCEPT else (0.0 if g else 0.25) for a, g in zip(actions, good)]


def test_report_splits_by_whether_accepting_puts_the_player_ahead():
    env = envs.make("simple_negotiation", mode="choice", offer_notes=True)
    policy = _Discerning(env)
    report = acceptance_report(policy, env, states=20, seed=7)
    assert report["favourable"] == 1.0 and report["unfavourable"] == 0.0
    assert sum(report["states"]) == 20
    bad = report["states"][1] / 20
    assert report["deny"] == pytest.approx(0.25 * bad) and report["counter_offer"] == pytest.approx(0.75 * bad)
    assert all("If you accept" in p.messages()[-1]["content"] for p in policy.prompts)
    one_turn = envs.make("simple_negotiation", mode="choice", max_turns=1)
    assert acceptance_report(_Discerning(one_turn), one_turn, states=5) is None  # nothing is ever answered


def test_the_cli_reports_a_real_models_acceptance(capsys):
    assert main(["tiny-random", '{"max_turns": 4}', "--states", "6"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sum(report["states"]) == 6
    for key in ("favourable", "unfavourable", "deny"):
        assert report[key] is None or 0.0 < report[key] < 1.0
    # a random model's counter-offers (``[Offer: 3 Wood``, six tokens against [Accept]'s three)
    # carry almost nothing beside the short answers, down to float rounding
    assert 0.0 <= report["counter_offer"] < 1.0
    # the three answers share the probability (accept averaged over both kinds of offer)
    accept = (report["favourable"] or 0.0) * report["states"][0] + (report["unfavourable"] or 0.0) * report["states"][1]
    assert accept / 6 + report["deny"] + report["counter_offer"] == pytest.approx(1.0)


def test_the_cli_refuses_a_one_turn_negotiation_by_name(capsys):
    with pytest.raises(SystemExit):
        main(["tiny-random", '{"max_turns": 1}'])
    assert "one-turn negotiation answers no offer" in capsys.readouterr().err


def test_a_one_turn_negotiation_run_evaluates_without_the_report(tmp_path):
    from trainers.selfplay import main as train

    out = tmp_path / "one_turn"
    assert train(["model=tiny-random", "env=simple_negotiation", 'env_kwargs={"max_turns": 1}', "steps=1", "samples_per_step=4",
                  "eval_games=1", "eval_opponents=random", "threads=1", "progress=false", "tensorboard=false", "save_every=0", f"out={out}"]) == 0
    report = json.loads((out / "eval" / "step_00000001.json").read_text())
    assert "simple_negotiation/random" in report and "simple_negotiation/acceptance" not in report
