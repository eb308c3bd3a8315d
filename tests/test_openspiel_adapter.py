"""OpenSpiel games through the adapter: the same game as ours, the checker, analysis, training."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("pyspiel")

import envs
import games
from envs import openspiel_env
from envs.opponents import make_opponent
from games import analysis

NAMED_GAMES = [
    "openspiel:leduc_poker",
    "openspiel:liars_dice(numdice=1)",
    "openspiel:connect_four",
    "openspiel:pig(winscore=10)",
    "openspiel:goofspiel(num_cards=4)",
]


def lockstep(ours: games.State, theirs: games.State, keys: dict, terminals: list) -> None:
    """Walk both trees together, asserting the same players, actions, chance and returns;
    record our information-state key -> theirs, and every terminal history with its returns."""
    assert ours.current_player() == theirs.current_player(), ours.history()
    assert ours.history() == theirs.history()
    if ours.is_terminal():
        assert ours.returns() == theirs.returns()
        terminals.append((tuple(ours.history()), tuple(ours.returns())))
        return
    if ours.is_chance_node():
        assert [a for a, _ in ours.chance_outcomes()] == [a for a, _ in theirs.chance_outcomes()]
        assert [p for _, p in ours.chance_outcomes()] == pytest.approx([p for _, p in theirs.chance_outcomes()])
    else:
        player = ours.current_player()
        keys[ours.information_state_string(player)] = theirs.information_state_string(player)
    assert ours.legal_actions() == theirs.legal_actions()
    for action in ours.legal_actions():
        a, b = ours.clone(), theirs.clone()
        a.apply_action(action)
        b.apply_action(action)
        lockstep(a, b, keys, terminals)


def test_openspiel_kuhn_poker_is_our_kuhn_poker():
    ours, theirs = games.load("kuhn_poker"), openspiel_env.load("kuhn_poker")
    keys, terminals = {}, []
    lockstep(ours.new_initial_state(), theirs.new_initial_state(), keys, terminals)
    assert len(terminals) == 30 and len(keys) == 12 and len(set(keys.values())) == 12

    policy = analysis.cfr(ours, 30)  # any non-uniform policy; mapped key by key
    mapped = {keys[k]: dist for k, dist in policy.items()}
    value = analysis.exploitability(ours, policy)
    assert value > 0.01
    assert analysis.exploitability(theirs, mapped) == pytest.approx(value, abs=1e-12)
    assert openspiel_env.openspiel_exploitability(theirs, mapped) == pytest.approx(value, abs=1e-12)
    assert analysis.exploitability(theirs, None) == pytest.approx(0.458333, abs=1e-6)


def test_exact_exploitability_beyond_kuhn_agrees_with_openspiel():
    leduc = openspiel_env.load("leduc_poker")
    tree = analysis.game_tree(leduc)
    assert len(tree.infoset_keys) == 936
    assert analysis.nash_conv(tree, None) == pytest.approx(4.747222, abs=1e-6)  # OpenSpiel's figure
    policy = analysis.cfr(tree, 5, plus=True)
    assert analysis.exploitability(tree, policy) == pytest.approx(
        openspiel_env.openspiel_exploitability(leduc, policy), abs=1e-9
    )


@pytest.mark.parametrize("env_id", NAMED_GAMES)
def test_named_games_pass_the_checker(env_id):
    report = envs.check(env_id, fuzz_examples=60, cycles=20)
    assert report.passed == [
        "game protocol",
        "pettingzoo.api_test",
        "pettingzoo.seed_test",
        "pettingzoo.parallel_api_test",
        "gymnasium.check_env(single-agent view)",
        "text fuzzing",
    ]
    assert report.fuzz_valid > 0 and report.fuzz_invalid > 0


def test_prompts_show_the_players_view_and_openspiel_actions():
    env = envs.make("openspiel:liars_dice(numdice=1)", mode="direct")
    env.reset(seed=3)
    prompt = env.turn_prompt()
    assert prompt.text.startswith("You are playing Liars Dice.\nLiar's Dice:")
    assert "You are Player 0." in prompt.text
    assert prompt.choices[:2] == ("[1-1]", "[1-2]") and "[Liar]" not in prompt.choices
    env.step("I bid two sixes \\boxed{2-6}")
    assert env.state.history()[-1] == prompt.action_ids[prompt.choices.index("[2-6]")]
    # brackets inside OpenSpiel's action strings are made readable: goofspiel's "[P0]Bid: 1"
    goofspiel = envs.make("openspiel:goofspiel(num_cards=3,points_order=descending)")
    goofspiel.reset(seed=0)
    assert goofspiel.turn_prompt().choices == ("[(P0)Bid: 1]", "[(P0)Bid: 2]", "[(P0)Bid: 3]")


def test_parameters_from_the_id_and_from_keywords():
    assert envs.make("openspiel:pig", winscore=7).game.params() == {"winscore": 7}
    assert envs.make("openspiel:pig(winscore=7)").game.game_string() == "pig(winscore=7)"
    assert "numdice" in envs.registry.parameters("openspiel:liars_dice")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['sides'\]; .*game parameters: bidding_rule, dice_sides"):
        envs.make("openspiel:liars_dice", sides=3)
    with pytest.raises(ValueError, match=r"winscore=.*must be a int"):
        envs.make("openspiel:pig", winscore="ten")


def test_unsupported_and_unknown_games_are_refused_by_name():
    with pytest.raises(ValueError, match="'2048' is not supported: a single-player game"):
        envs.make("openspiel:2048")
    with pytest.raises(ValueError, match="'mfg_garnet' is not supported: a mean-field game"):
        envs.make("openspiel:mfg_garnet")
    with pytest.raises(ValueError, match="unknown OpenSpiel game 'pigs'; supported: .*leduc_poker"):
        envs.make("openspiel:pigs")
    with pytest.raises(ValueError, match="unknown env 'chess'; registered envs: .*or a library game: openspiel:<game>"):
        envs.make("chess")


def test_list_envs_lists_the_library_on_request():
    supported = envs.list_envs("openspiel")
    assert {"openspiel:leduc_poker", "openspiel:goofspiel", "openspiel:pig", "openspiel:kuhn_poker"} <= set(supported)
    assert "openspiel:2048" not in supported and "openspiel:mfg_garnet" not in supported
    assert not any(e.startswith("openspiel:") for e in envs.list_envs())
    with pytest.raises(ValueError, match="unknown library 'gym'; choose one of: openspiel, textarena, all"):
        envs.list_envs("gym")


def test_mcts_opponent_is_a_seeded_fixed_policy_and_beats_random():
    game = openspiel_env.load("connect_four")
    mcts = make_opponent("mcts", game, simulations=100)
    state = game.new_initial_state()
    assert mcts.action_probabilities(state, 0) == mcts.action_probabilities(state, 0)
    wins = 0
    for seed in range(6):
        rng, state = random.Random(seed), game.new_initial_state()
        seats = [mcts, make_opponent("random", game)] if seed % 2 == 0 else [make_opponent("random", game), mcts]
        while not state.is_terminal():
            state.apply_action(seats[state.current_player()].act(state, state.current_player(), rng))
        wins += state.returns()[seed % 2] > 0
    assert wins >= 5
    with pytest.raises(ValueError, match="perfect-information OpenSpiel games"):
        make_opponent("mcts", openspiel_env.load("leduc_poker"))


@pytest.mark.parametrize("env_id", NAMED_GAMES)
def test_named_games_play_through_the_trainer(tmp_path, env_id):
    pytest.importorskip("torch")
    from trainers.selfplay import main

    out = tmp_path / "run"
    code = main([
        "model=tiny-random", "tensorboard=false", "progress=false", "steps=1", "games_per_step=4",
        "eval_games=2", "save_every=1", "threads=1", f"env={env_id}", f"out={out}",
    ])
    assert code == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["samples"] > 0
    final = json.loads((out / "eval" / "step_00000001.json").read_text())
    assert final[f"{env_id}/random"]["games"] == 4
