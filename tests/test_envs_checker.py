"""Every registered env (and the documented example) passes the one checker."""

import pytest

import envs
import examples.nim  # noqa: F401  (registers "nim")


@pytest.mark.parametrize("env_id", envs.list_envs())
def test_every_registered_env_passes_the_checker(env_id):
    report = envs.check(env_id, fuzz_examples=150)
    assert "text fuzzing" in report.passed
    assert report.fuzz_examples == 150
    assert report.fuzz_invalid > 0
    if report.kind == "game":
        assert {"pettingzoo.api_test", "pettingzoo.seed_test", "pettingzoo.parallel_api_test"} <= set(report.passed)
        assert report.fuzz_valid > 0  # the fuzzer does reach legal answers


def test_multi_hand_kuhn_passes_too():
    assert envs.check("kuhn_poker", hands=3, fuzz_examples=50).fuzz_examples == 50
