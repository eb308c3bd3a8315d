"""What game turns are trained on: the outcome (default) or the score margin to the end (reward=margin)."""

import json

import pytest

import envs
import games
from envs.opponents import make_opponent
from trainers.learning.samples import TurnSample
from trainers.rollouts.rewards import MARGIN_KEY, assign_rewards, has_margin
from trainers.run.config import TrainConfig, parse_overrides
from trainers.selfplay import main


@pytest.fixture(scope="module")
def tiny():
    from trainers.generation import TransformersBackend
    from trainers.models import load_model
    from trainers.rollouts.policy import LanguagePolicy

    model, tokenizer = load_model("tiny-random", seed=0)
    return LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode="choice")


def _margins_before_each_turn(game, history):
    """{player: [margin before each of that player's turns, in order]}, replayed from the moves."""
    state, before = game.new_initial_state(), {0: [], 1: []}
    for action in history:
        player = state.current_player()
        before[player].append(state.score_margin(player))
        state.apply_action(action)
    return before, state


def _turn(sample):
    """A turn's key: a chained turn's part samples share one trace; an unchained turn is one sample."""
    from trainers.learning.samples import TRACE_KEY

    return sample.info.get(TRACE_KEY, id(sample))


def _negotiation_setups(max_turns):
    """Two self-play games and four against the rule (which offers trades the model may accept)."""
    from trainers.rollouts.play import GameSetup

    rule = make_opponent("rule_based", games.load("simple_negotiation"))
    return [GameSetup("simple_negotiation", envs.make("simple_negotiation", max_turns=max_turns), seed=s,
                      learner_seats=frozenset({0, 1} if s < 2 else {s % 2}), game_id=s,
                      opponent=None if s < 2 else rule, opponent_name="rule_based") for s in range(6)]


def _turns_of(samples, game_id, player):
    """The keys of `player`'s turns in game `game_id`, in order (a chained turn's part samples share one)."""
    turns = []
    for sample in samples:
        if sample.game_id == game_id and sample.role == player and _turn(sample) not in turns:
            turns.append(_turn(sample))
    return turns


def test_margin_reward_is_each_turns_margin_to_the_end_and_results_keep_the_outcome(tiny):
    from trainers.rollouts.play import play_games

    margin_setups = _negotiation_setups(max_turns=4)
    samples, results, _ = play_games(margin_setups, tiny, seed=1, reward="margin")  # a seed whose games trade
    nonzero = 0
    for setup, result in zip(margin_setups, results):
        before, final = _margins_before_each_turn(setup.env.game, setup.env.state.history())
        assert result.returns == final.returns()  # results report win/draw/loss
        for player in setup.learner_seats:
            # a chained turn is several part samples of one trace; each turn gets its own margin to go
            turns = _turns_of(samples, setup.game_id, player)
            assert len(turns) == len(before[player])
            for turn, margin_before in zip(turns, before[player]):
                for sample in (s for s in samples if _turn(s) == turn):
                    assert sample.info[MARGIN_KEY] == margin_before
                    assert sample.reward == pytest.approx(final.score_margin(player) - margin_before)
                    nonzero += sample.reward != 0
    assert nonzero  # the model accepted some of the rule's offers: trades happened

    # every estimator takes per-turn rewards; the EMA baselines count each turn's reward as a return
    from trainers.learning.advantages import METHODS, AdvantageState, trace_advantages

    for method in METHODS:
        if method != "exact":  # the oracle needs the game tree (refused with reward=margin)
            trace_advantages(samples, method, AdvantageState())
    state = AdvantageState()
    trace_advantages(samples, "rae", state)
    firsts = [s for s in samples if s.info.get("chunk_index", 0) == 0]
    baselines = [state.role_baselines.value(("simple_negotiation", role)) for role in (0, 1)]
    assert baselines != [0.0, 0.0]  # the nonzero margins moved them
    assert len({s.advantage for s in firsts}) > 2  # A = R - b, turn by turn

    for setup, result in zip(margin_setups, results):  # the same games trained on the outcome
        mine = [s for s in samples if s.game_id == setup.game_id]
        assert assign_rewards(setup.env, mine, "outcome") == result.returns
        assert all(s.reward == result.returns[s.role] for s in mine)


def test_turn_margin_credits_each_turn_with_the_change_until_its_players_next_turn(tiny):
    from trainers.rollouts.play import play_games

    setups = _negotiation_setups(max_turns=6)
    samples, results, _ = play_games(setups, tiny, seed=1, reward="turn_margin")
    nonzero = 0
    for setup, result in zip(setups, results):
        before, final = _margins_before_each_turn(setup.env.game, setup.env.state.history())
        assert result.returns == final.returns()
        for player in setup.learner_seats:
            turns = _turns_of(samples, setup.game_id, player)
            assert len(turns) == len(before[player])
            after = before[player][1:] + [final.score_margin(player)]
            rewards = []
            for turn, margin_before, margin_after in zip(turns, before[player], after):
                parts = [s for s in samples if _turn(s) == turn]
                assert all(s.reward == pytest.approx(margin_after - margin_before) for s in parts)
                rewards.append(parts[0].reward)
                nonzero += parts[0].reward != 0
            # the turns' own changes add up to the margin to the end of the first turn (reward=margin's)
            assert sum(rewards) == pytest.approx(final.score_margin(player) - before[player][0])
    assert nonzero  # trades happened, and some turn was credited with one


def test_a_forfeit_keeps_its_penalty_on_top_of_the_margin():
    env = envs.make("simple_negotiation", max_turns=4)
    env.reset(seed=0)
    first = env.turn_prompt()
    sample = TurnSample([1], [2], [0.0], "simple_negotiation", role=0, game_id=0, info={MARGIN_KEY: 0.0})
    env.step(first.choices[0])  # player 0 offers
    reply = TurnSample([1], [2], [0.0], "simple_negotiation", role=1, game_id=0, info={MARGIN_KEY: 0.0})
    env.step("no such move")  # player 1 forfeits (the default invalid-action policy)
    outcome = assign_rewards(env, [sample, reply], "margin")
    assert outcome == [1.0, -1.0]
    # nothing traded (margin 0 to go); the forfeit is the whole outcome
    assert (sample.reward, reply.reward) == (1.0, -1.0)


def test_only_games_with_a_score_margin_have_one():
    assert has_margin(games.load("simple_negotiation"))
    assert not has_margin(games.load("kuhn_poker"))
    assert not has_margin(games.load("tic_tac_toe"))


def test_reward_refusals_name_the_key(tmp_path):
    from trainers.backends.openrlhf.launcher import refuse_unmapped_keys
    from trainers.learning.diagnostics import diagnosis_blocker
    from trainers.run.preflight import preflight

    base = ["model=tiny-random", f"out={tmp_path / 'run'}", "reward=margin"]
    with pytest.raises(ValueError, match=r"reward=margin needs a score margin \(State.score_margin\), which kuhn_poker does not define"):
        preflight(parse_overrides([*base, "env=kuhn_poker"]))
    with pytest.raises(ValueError, match="which tic_tac_toe does not define"):
        preflight(parse_overrides([*base, "env=simple_negotiation,tic_tac_toe"]))
    with pytest.raises(ValueError, match="reward=margin says what game turns are trained on; sat has no game env"):
        preflight(parse_overrides([*base, "env=sat"]))
    with pytest.raises(ValueError, match=r"reward.*outcome.*margin.*turn_margin"):
        parse_overrides(["reward=score"])
    with pytest.raises(ValueError, match="reward='margin'"):
        refuse_unmapped_keys(TrainConfig(backend="openrlhf", env=["simple_negotiation"], reward="margin"))
    blocker = diagnosis_blocker(parse_overrides(["reward=margin"]), games.load("kuhn_poker"))
    assert blocker == "the true advantage is the outcome's, and reward=margin trains on something else"


def test_a_margin_run_trains_and_evaluates_on_the_outcome(tmp_path, monkeypatch):
    import trainers.selfplay as selfplay

    asked = []

    def spy(*args, **kwargs):
        asked.append(kwargs.get("reward", "outcome"))
        return play_games(*args, **kwargs)

    play_games = selfplay.play_games
    monkeypatch.setattr(selfplay, "play_games", spy)
    out = tmp_path / "nego"
    assert main(["model=tiny-random", "env=simple_negotiation", "reward=margin", "advantage=rae", 'env_kwargs={"max_turns": 4, "offer_notes": true}',
                 "steps=1", "samples_per_step=16", "eval_every=1", "eval_games=2", "eval_opponents=random",
                 "threads=1", "progress=false", "tensorboard=false", "save_every=0", f"out={out}"]) == 0
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["phase"] == "rl" and first["samples"] > 0
    assert asked and set(asked) == {"margin"}  # every training rollout (evaluation plays its own games)
    report = json.loads((out / "eval" / "step_00000001.json").read_text())
    assert report["simple_negotiation/random"]["mean_return"] in {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert sum(report["simple_negotiation/acceptance"]["states"]) == 40  # trainers/evaluation/acceptance.py
