"""Rollouts and evaluation on the tiny random model: samples, rewards, invalid flags, reports."""


import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import envs
from games import analysis
from envs.opponents import RandomOpponent, make_opponent
from trainers.evaluation.evaluate import (
    evaluate_against,
    exploitability_report,
    model_exploitability,
    policy_table,
    position_exploitability_report,
    summarize,
    wilson_interval,
)
from trainers.generation import TransformersBackend
from trainers.models import load_model
from trainers.rollouts.policy import LanguagePolicy
from trainers.rollouts.play import GameSetup, RolloutTiming, play_games, run_tasks
from trainers.run.seeds import derive_seed

KUHN_INFORMATION_STATES = {
    f"{player}|{card}?:{history}"
    for card in "JQK"
    for player, histories in ((0, ("", "pb")), (1, ("p", "b")))
    for history in histories
}


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_model("tiny-random", seed=0)


def make_policy(tiny, mode, **kwargs):
    model, tokenizer = tiny
    return LanguagePolicy(TransformersBackend(model, tokenizer), tokenizer, mode=mode, **kwargs)


class CountingOpponent(RandomOpponent):
    def __init__(self):
        self.moves = 0

    def act(self, state, player, rng):
        self.moves += 1
        return super().act(state, player, rng)


def kuhn_setups(count, mode, *, seats=None, **env_kwargs):
    """Kuhn Poker games; the learner alternates seats unless `seats` is given."""
    return [
        GameSetup(
            "kuhn_poker",
            envs.make("kuhn_poker", mode=mode, **env_kwargs),
            derive_seed(5, i),
            frozenset({i % 2}) if seats is None else frozenset(seats),
            100 + i,
        )
        for i in range(count)
    ]


def test_learner_seats_against_an_opponent(tiny):
    policy = make_policy(tiny, "choice")
    setups = kuhn_setups(8, "choice")
    opponent = CountingOpponent()
    samples, results, timing = play_games(setups, policy, seed=1, opponent=opponent)
    assert [r.game_id for r in results] == [100 + i for i in range(8)]
    assert {s.game_id for s in samples} == {100 + i for i in range(8)}  # every game had a learner turn
    by_game = {r.game_id: r for r in results}
    for sample in samples:
        result = by_game[sample.game_id]
        assert sample.role in result.learner_seats
        assert sample.reward == result.returns[sample.role]
        assert sample.env_id == "kuhn_poker"
        assert sample.invalid is False
        assert sample.is_choice and sample.info["text"] in ("[check]", "[bet]", "[call]", "[fold]")
        assert sample.info["state_key"] in KUHN_INFORMATION_STATES
        assert sample.info["state_key"].startswith(f"{sample.role}|")
    for result in results:
        assert sum(result.returns) == 0  # Kuhn Poker is zero-sum
        assert result.returns[0] in (-2, -1, 1, 2)
        assert result.invalid == [0, 0] and result.unparseable == [0, 0]
        assert not result.truncated
    # every action of every game was either a learner sample or an opponent move
    assert len(samples) + opponent.moves == sum(r.turns for r in results)
    assert opponent.moves > 0
    assert timing.rounds >= 1 and timing.generation_s > 0


def test_a_frozen_model_opponent_plays_the_other_seats_without_samples(tiny):
    learner = make_policy(tiny, "choice")
    frozen = make_policy(tiny, "choice", temperature=0.0)
    setups = kuhn_setups(6, "choice")
    samples, results, _ = play_games(setups, learner, seed=3, opponent=frozen)
    assert {s.game_id for s in samples} == {r.game_id for r in results}
    for result in results:
        (seat,) = result.learner_seats
        game_samples = [s for s in samples if s.game_id == result.game_id]
        assert all(s.role == seat and s.reward == result.returns[seat] for s in game_samples)
        assert sum(result.returns) == 0 and not result.truncated
        # the opponent moved too (Kuhn Poker alternates), but its turns are not samples
        assert 0 < len(game_samples) < result.turns


def test_same_seed_same_games(tiny):
    policy = make_policy(tiny, "choice")
    opponent = make_opponent("random", envs.make("kuhn_poker").game)
    runs = [play_games(kuhn_setups(6, "choice"), policy, seed=seed, opponent=opponent) for seed in (4, 4, 9)]
    key = lambda run: [(s.game_id, s.role, s.info["text"], s.reward, s.old_logprobs) for s in run[0]]
    assert key(runs[0]) == key(runs[1])
    assert key(runs[0]) != key(runs[2])


@pytest.mark.parametrize(
    "policy_name, answers_per_game, offender",
    [("forfeit", 1, -2.0), ("textarena", 2, -2.0), ("spiral", 1, -1.5)],
)
def test_invalid_flags_match_env_infos(tiny, policy_name, answers_per_game, offender):
    """An untrained model never answers legally in direct mode: each invalid answer is flagged."""
    policy = make_policy(tiny, "direct", max_new_tokens=4)
    setups = kuhn_setups(4, "direct", invalid_action_policy=policy_name)
    samples, results, _ = play_games(setups, policy, seed=0, opponent=make_opponent("random", setups[0].env.game))
    for result in results:
        (seat,) = result.learner_seats
        game_samples = [s for s in samples if s.game_id == result.game_id]
        assert len(game_samples) == answers_per_game  # the retry (textarena) is a second sample
        assert all(s.invalid for s in game_samples)
        assert result.invalid[seat] == sum(s.invalid for s in game_samples)
        assert result.invalid[1 - seat] == 0
        assert result.unparseable[seat] <= result.invalid[seat]
        assert result.returns[seat] == offender
        assert all(s.reward == offender for s in game_samples)
        assert all(len(s.old_logprobs) == len(s.response_ids) <= 4 for s in game_samples)


def test_self_play_of_every_seat_needs_no_opponent(tiny):
    policy = make_policy(tiny, "choice")
    setups = kuhn_setups(3, "choice", seats={0, 1})
    samples, results, _ = play_games(setups, policy, seed=2)
    for result in results:
        roles = [s.role for s in samples if s.game_id == result.game_id]
        assert len(roles) == result.turns
        assert roles[:2] == [0, 1]  # players alternate, player 0 first


def test_a_seat_without_a_player_is_an_error(tiny):
    policy = make_policy(tiny, "choice")
    with pytest.raises(ValueError, match=r"seats \[1\] need an opponent"):
        play_games(kuhn_setups(2, "choice", seats={0}), policy, seed=0)


def test_run_tasks_groups_answers_per_prompt(tiny):
    policy = make_policy(tiny, "direct", max_new_tokens=6)
    env = envs.make("sat")
    samples, results, timing = run_tasks("sat", env, policy, prompts=3, group_size=2, seed=7)
    assert len(samples) == 6
    assert [s.game_id for s in samples] == [0, 0, 1, 1, 2, 2]
    assert [r.group_id for r in results] == [0, 1, 2]
    for group, result in enumerate(results):
        group_samples = samples[2 * group : 2 * group + 2]
        assert group_samples[0].prompt_ids == group_samples[1].prompt_ids
        assert [s.reward for s in group_samples] == result.rewards
        assert result.info["level"] == env.level
        assert all(s.env_id == "sat" and s.role == 0 and not s.is_choice for s in group_samples)
        assert all(len(s.old_logprobs) == len(s.response_ids) for s in group_samples)
    assert samples[0].prompt_ids != samples[2].prompt_ids  # different instances per group
    assert timing.rounds == 1
    again, _, _ = run_tasks("sat", envs.make("sat"), policy, prompts=3, group_size=2, seed=7)
    assert [s.response_ids for s in again] == [s.response_ids for s in samples]


def test_wilson_interval_against_hand_computed_values():
    # z = 1.96: n = 10 gives z^2/n = 0.38416
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277540), abs=1e-6)
    assert wilson_interval(5, 10) == pytest.approx((0.236590, 0.763410), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((0.722460, 1.0), abs=1e-6)
    assert wilson_interval(1, 4) == pytest.approx((0.045586, 0.699364), abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(1 - high) and high - low < wilson_interval(5, 10)[1] - wilson_interval(5, 10)[0]


def test_summarize_counts_outcomes():
    summary = summarize([(1.0, False), (-1.0, True), (0.0, False), (2.0, False)])
    assert summary["games"] == 4
    assert summary["mean_return"] == 0.5
    assert (summary["win_rate"], summary["draw_rate"], summary["loss_rate"], summary["invalid_rate"]) == (
        0.5,
        0.25,
        0.25,
        0.25,
    )
    assert summary["win_ci95"] == [round(v, 4) for v in wilson_interval(2, 4)]
    assert summary["invalid_ci95"] == [round(v, 4) for v in wilson_interval(1, 4)]
    empty = summarize([])
    assert empty["games"] == 0 and empty["mean_return"] == 0.0 and empty["win_ci95"] == [0.0, 1.0]


def test_evaluate_against_reports_per_seat(tiny):
    policy = make_policy(tiny, "choice")
    make_env = lambda: envs.make("kuhn_poker", mode="choice")
    report = evaluate_against(policy, make_env, "kuhn_poker", "random", games=3, seed=0, batch_games=2)
    assert report["opponent"] == "random" and report["env"] == "kuhn_poker"
    assert set(report["per_seat"]) == {"0", "1"}
    assert [seat["games"] for seat in report["per_seat"].values()] == [3, 3]
    assert report["games"] == 6
    seat_means = [seat["mean_return"] for seat in report["per_seat"].values()]
    assert report["mean_return"] == pytest.approx(sum(seat_means) / 2)
    for summary in [report, *report["per_seat"].values()]:
        assert summary["win_rate"] + summary["draw_rate"] + summary["loss_rate"] == pytest.approx(1.0)
        assert summary["invalid_rate"] == 0.0
        assert summary["draw_rate"] == 0.0  # a Kuhn Poker hand always has a winner
    again = evaluate_against(policy, make_env, "kuhn_poker", RandomOpponent(), games=3, seed=0, batch_games=2)
    assert again["opponent"] == "RandomOpponent"
    assert again["per_seat"] == report["per_seat"]  # the batching and the seed fix the games
    with pytest.raises(ValueError):
        evaluate_against(policy, make_env, "kuhn_poker", "grandmaster", games=1, seed=0)


def test_policy_table_covers_the_kuhn_information_states(tiny):
    env = envs.make("kuhn_poker", mode="choice")
    policy = make_policy(tiny, "choice")
    table = policy_table(policy, env)
    assert set(table) == KUHN_INFORMATION_STATES
    for key, distribution in table.items():
        assert len(distribution) == 2
        assert sum(distribution.values()) == pytest.approx(1.0)
        assert all(0 < p < 1 for p in distribution.values())
    value, same_table = model_exploitability(policy, env)
    assert same_table == table
    assert value == analysis.exploitability(env.game, table)
    assert value > 0.01  # a random model is not an equilibrium
    # exact analysis over histories is chosen by the tree's size: TicTacToe's is too large, so
    # it is scored over its 4,520 positions, when the bound allows that many model calls
    ttt = envs.make("tic_tac_toe", mode="choice")
    assert exploitability_report(policy, ttt, max_decision_positions=4519) is None
    # think mode estimates by sampling; a random model's answers are never legal, so the
    # estimate falls back to uniform at every state
    think_env = envs.make("kuhn_poker", mode="think")
    think = make_policy(tiny, "think", max_new_tokens=3)
    estimated = policy_table(think, think_env, samples=2, seed=0)
    assert set(estimated) == KUHN_INFORMATION_STATES
    assert all(list(d.values()) == [0.5, 0.5] for d in estimated.values())


def test_positions_are_not_scored_where_the_table_would_not_be_exact_or_affordable(tiny):
    # think mode would sample answers at 4,520 positions; an env cut short plays another game
    assert exploitability_report(make_policy(tiny, "think"), envs.make("tic_tac_toe", mode="think")) is None
    short = envs.make("tic_tac_toe", mode="choice", turn_limit=5)
    assert position_exploitability_report(make_policy(tiny, "choice"), short) is None
    kuhn = envs.make("kuhn_poker", mode="choice")  # no position key: imperfect information
    assert position_exploitability_report(make_policy(tiny, "choice"), kuhn) is None


def test_derive_seed_is_stable_and_spreads():
    assert derive_seed(0, 1, 2) == 7554093677315287228  # computed once; must never change
    assert derive_seed(7) == 1251987612425021771
    seeds = {derive_seed(a, b) for a in range(20) for b in range(20)}
    assert len(seeds) == 400
    assert derive_seed(1, 2) != derive_seed(2, 1)
    assert derive_seed(0) != derive_seed(0, 0)
    assert all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(-1) == derive_seed(2**64 - 1)  # negative parts wrap like uint64


def test_rollout_timing_adds_each_block_to_its_kind(monkeypatch):
    clock = iter([10.0, 10.5, 20.0, 22.0, 30.0, 30.25])
    monkeypatch.setattr("trainers.rollouts.play.time.perf_counter", lambda: next(clock))
    timing = RolloutTiming()
    with timing.measure("env"):
        pass
    with timing.measure("generation"):
        pass
    with pytest.raises(KeyError):
        with timing.measure("env"):
            raise KeyError("a failing block is timed too")
    assert (timing.env_s, timing.generation_s) == (0.75, 2.0)


def test_derive_seed_names_streams_apart_from_numbers():
    assert derive_seed(0, "rollout", 3) != derive_seed(0, "evaluation", 3)
    assert derive_seed(0, "ab", "c") != derive_seed(0, "a", "bc")
    assert derive_seed(0, "rollout") == 2029813664794136852  # computed once; must never change
