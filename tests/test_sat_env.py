"""SatEnv and the pure scorer: strict answers, determinism, Gymnasium's checker."""

from __future__ import annotations

import warnings

import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from curricula.curriculum import saturn_curriculum
from curricula.sat import SatConfig, heldout_instances, sample_instance
from envs.sat import SatEnv, prompt_messages, score_answer, task_prompt_text

INSTANCE = sample_instance(SatConfig(n=3, k=5, l=5, seed=0), 0)


def a_wrong_assignment(instance):
    for value in range(2**instance.k):
        bits = format(value, f"0{instance.k}b")
        if not instance.is_solution(bits):
            return bits
    raise AssertionError("every assignment satisfies the formula")


def test_correct_answer_scores_one():
    reward, info = score_answer(INSTANCE, f"Thinking...\nSo \\boxed{{{INSTANCE.solution}}}")
    assert reward == 1.0
    assert info["correct"] and info["assignment"] == INSTANCE.solution
    assert info["satisfied_clauses"] == info["num_clauses"] == 5


def test_last_boxed_answer_counts():
    wrong = a_wrong_assignment(INSTANCE)
    assert score_answer(INSTANCE, f"\\boxed{{{INSTANCE.solution}}} no, \\boxed{{{wrong}}}")[0] == 0.0
    assert score_answer(INSTANCE, f"\\boxed{{{wrong}}} no, \\boxed{{ {INSTANCE.solution} }}")[0] == 1.0


def test_wrong_assignment_reports_satisfied_clauses():
    wrong = a_wrong_assignment(INSTANCE)
    reward, info = score_answer(INSTANCE, f"\\boxed{{{wrong}}}")
    assert reward == 0.0 and info["assignment"] == wrong
    assert info["satisfied_clauses"] == INSTANCE.count_satisfied(wrong) < 5


@pytest.mark.parametrize("suffix", ["0", "00", "1" * 10])
def test_wrong_length_is_not_correct(suffix):
    # the published checker would accept a satisfying prefix with extra bits
    reward, info = score_answer(INSTANCE, f"\\boxed{{{INSTANCE.solution + suffix}}}")
    assert reward == 0.0 and info["assignment"] is None and "exactly 5" in info["error"]
    assert score_answer(INSTANCE, f"\\boxed{{{INSTANCE.solution[:-1]}}}")[0] == 0.0


@pytest.mark.parametrize("answer", ["1 0 1 0 1", "TFTFT", "1012x", "1,0,1,0,1", ""])
def test_non_binary_is_not_correct(answer):
    reward, info = score_answer(INSTANCE, f"\\boxed{{{answer}}}")
    assert reward == 0.0 and not info["correct"]


@pytest.mark.parametrize("text", ["10101", "the answer is [10101]", "\\boxed 10101", "\\boxed{101", "", None, 42])
def test_no_boxed_answer_scores_minus_one(text):
    reward, info = score_answer(INSTANCE, text)
    assert reward == -1.0 and info["answer"] is None and info["error"]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_scorer_never_raises(text):
    reward, _ = score_answer(INSTANCE, text)
    assert reward in (-1.0, 0.0, 1.0)


def test_prompt_states_format_and_formula():
    prompt = task_prompt_text(INSTANCE)
    assert INSTANCE.formula in prompt and "\\boxed{" in prompt and "exactly 5 bits" in prompt
    assert prompt.isascii()
    assert prompt_messages(INSTANCE) == [{"role": "user", "content": prompt}]


def test_episode():
    env = SatEnv(n=3, k=5, l=5, seed=0)
    prompt, info = env.reset()
    assert info["level"] == (3, 5, 5) and info["formula"] in prompt
    assert env.messages()[0]["content"] == prompt
    _, reward, terminated, truncated, info = env.step(f"\\boxed{{{env.instance.solution}}}")
    assert (reward, terminated, truncated) == (1.0, True, False) and info["correct"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step("\\boxed{00000}")


def test_reset_is_deterministic_for_a_seed():
    a, b = SatEnv(n=4, k=7, l=20), SatEnv(n=4, k=7, l=20, seed=99)
    assert a.reset(seed=5)[0] == b.reset(seed=5)[0]
    assert a.reset(seed=6)[0] != b.reset(seed=5)[0]
    assert SatEnv(seed=1).reset()[0] == SatEnv(seed=1).reset()[0]


def test_default_level_and_constructor_errors():
    assert SatEnv().level == (3, 5, 5)
    with pytest.raises(ValueError, match="all of n, k, l"):
        SatEnv(n=3)
    with pytest.raises(ValueError, match="not both"):
        SatEnv(n=3, k=5, l=5, curriculum=saturn_curriculum())
    with pytest.raises(ValueError, match="only 70"):
        SatEnv(n=3, k=5, l=100)


def test_curriculum_drives_the_level():
    curriculum = saturn_curriculum()
    env = SatEnv(curriculum=curriculum, seed=0)
    assert env.reset()[1]["level"] == (3, 5, 5)
    curriculum.record((3, 5, 5), [1] * 20)
    _, info = env.reset()
    assert info["level"] == (3, 5, 6) and env.instance.l == 6


def test_excluded_formulas_are_never_drawn():
    heldout = heldout_instances((2, 3, 2), size=12)  # 36 formulas exist; exclude a third
    env = SatEnv(n=2, k=3, l=2, exclude=heldout)
    keys = {i.key for i in heldout}
    for seed in range(60):
        env.reset(seed=seed)
        assert env.instance.key not in keys
    assert SatEnv(n=2, k=3, l=2, exclude=[h.formula for h in heldout]).exclude == keys


@pytest.mark.parametrize("kwargs", [dict(n=3, k=5, l=5, seed=0), dict(n=5, k=8, l=40), dict(curriculum=saturn_curriculum(), seed=0),
                                    dict(seed=1, answer_format="counted", variable_notes=True)])
def test_gymnasium_check_env(kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(SatEnv(**kwargs), skip_render_check=True)
    assert not [w for w in caught if "spec" not in str(w.message)], [str(w.message) for w in caught]


def test_named_answers_score_as_their_bits_and_only_in_order():
    named = " ".join(f"{name}={bit}" for name, bit in zip("ABCDE", INSTANCE.solution))
    assert score_answer(INSTANCE, f"\\boxed{{{named}}}")[0] == 1.0
    assert score_answer(INSTANCE, f"\\boxed{{{named.replace(' ', ', ')}}}")[1]["assignment"] == INSTANCE.solution
    wrong = a_wrong_assignment(INSTANCE)
    assert score_answer(INSTANCE, "\\boxed{" + " ".join(f"{n}={b}" for n, b in zip("ABCDE", wrong)) + "}")[0] == 0.0
    for bad in ("A=1 C=0 B=1 D=1 E=0", "A=1 B=0 C=1 D=1", "A=1 B=0 C=1 D=1 E=0 F=1", "A=1 B=2 C=1 D=1 E=0", "A=1 B=0 C=1 D=1 E=0 yes"):
        reward, info = score_answer(INSTANCE, f"\\boxed{{{bad}}}")
        assert reward == 0.0 and info["assignment"] is None and "named in order" in info["error"]


def test_variable_notes_count_each_sign_and_the_named_prompt_asks_for_names():
    from curricula.sat import SatInstance, text_to_clauses

    instance = SatInstance(3, 4, 3, text_to_clauses("A!B!C & !AC!D & AB!D"), None, 0, False)
    prompt = task_prompt_text(instance, answer_format="named", variable_notes=True)
    for line in ("A: 2 times as A, 1 time as !A", "B: 1 time as B, 1 time as !B",
                 "C: 1 time as C, 1 time as !C", "D: 0 times as D, 2 times as !D"):
        assert line + "\n" in prompt
    assert "naming all 4 variables" in prompt and "\\boxed{A=1 B=0 C=1}" in prompt and prompt.isascii()
    plain = task_prompt_text(instance)
    assert "How often" not in plain and "exactly 4 bits" in plain and "\\boxed{101}" in plain
    with pytest.raises(ValueError, match="answer_format must be one of bits, named"):
        task_prompt_text(instance, answer_format="letters")


def test_the_env_asks_in_its_format_everywhere_it_asks():
    from envs.tasks import task_hooks

    env = SatEnv(seed=0, answer_format="named", variable_notes=True)
    prompt, info = env.reset()
    assert prompt == task_prompt_text(env.instance, answer_format="named", variable_notes=True)
    assert env.messages()[0]["content"] == prompt
    hooks = task_hooks(env)
    item = hooks.heldout(env, 3)[0]
    assert hooks.item_messages(item) == prompt_messages(item, answer_format="named", variable_notes=True)
    parts = hooks.answer_parts(info)
    assert parts.next_options([1, 0]) == ("\\boxed{A=1 B=0 C=", ("0", "1"))
    assert parts.spell([1, 0, 1, 1, 0]) == "\\boxed{A=1 B=0 C=1 D=1 E=0}"
    assert env.step(parts.spell([int(b) for b in env.instance.solution]))[1] == 1.0
    assert task_hooks(SatEnv()).answer_parts(info).spell([1, 0, 1, 1, 0]) == "\\boxed{10110}"  # another env keeps its own format
    with pytest.raises(ValueError, match="answer_format"):
        SatEnv(answer_format="json")
    with pytest.raises(ValueError, match="variable_notes must be true or false"):
        SatEnv(variable_notes="yes")


def test_counted_answers_carry_each_variables_sign_counts_where_its_value_is_chosen():
    from curricula.sat import SatInstance, text_to_clauses
    from envs.tasks import task_hooks

    instance = SatInstance(3, 4, 3, text_to_clauses("A!B!C & !AC!D & AB!D"), "1001", 0, False)
    prompt = task_prompt_text(instance, answer_format="counted")
    assert "naming all 4 variables with their counts" in prompt and "\\boxed{A (1 as A, 1 as !A)=1 B (" in prompt
    parts = task_hooks(SatEnv(answer_format="counted")).item_answer_parts(instance)
    assert parts.next_options([1, 0]) == ("\\boxed{A (2 as A, 1 as !A)=1 B (1 as B, 1 as !B)=0 C (1 as C, 1 as !C)=", ("0", "1"))
    assert parts.spell([1, 0, 0, 1]) == "\\boxed{A (2 as A, 1 as !A)=1 B (1 as B, 1 as !B)=0 C (1 as C, 1 as !C)=0 D (0 as D, 2 as !D)=1}"
    # the scorer reads the assignment past any note, right or wrong, and nothing else
    assert score_answer(instance, parts.spell([1, 0, 0, 1]))[1]["assignment"] == "1001"
    assert score_answer(instance, "\\boxed{A (whatever)=1 B=0 C (9 as C)=0 D ()=1}")[1]["assignment"] == "1001"
    for bad in ("A (1 as A=1 B=0 C=0 D=1", "A (x) (y) 1 B=0 C=0 D=1", "(A)=1 B=0 C=0 D=1", "A=1 B (x)=0 C=0"):
        assert score_answer(instance, f"\\boxed{{{bad}}}")[1]["assignment"] is None, bad
    # a drawn env's parts (from its reset info) are its instance's
    env = SatEnv(seed=3, answer_format="counted", variable_notes=True)
    _, info = env.reset()
    hooks = task_hooks(env)
    assert hooks.answer_parts(info) == hooks.item_answer_parts(env.instance)
    assert env.step(hooks.answer_parts(info).spell([int(b) for b in env.instance.solution]))[1] == 1.0


def test_a_long_adversarial_named_answer_is_read_in_linear_time():
    import time

    start = time.perf_counter()
    for text in ("A=1" + " " * 200_000 + "x", "A=1 " * 100_000, "A=" + "1" * 200_000, "A" + " (" * 100_000 + "=1",
                 "A" + "(x)" * 100_000 + "=1 B" + " " * 100_000 + "=1", "A (" + "x" * 200_000):
        assert score_answer(INSTANCE, f"\\boxed{{{text}}}")[0] == 0.0
    assert time.perf_counter() - start < 5.0  # a backtracking pattern took minutes on the first
