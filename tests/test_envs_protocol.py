"""The prompt: rules, observation, legal actions and the answer format per mode."""

import pytest

from envs.protocol import MAX_QUOTED_ANSWER_CHARS, MODES, PromptTemplate, describe_error, render_prompt


def _prompt(mode, feedback=""):
    return render_prompt(
        title="Kuhn Poker",
        rules="Three cards.",
        observation="Your card: K.",
        legal_actions={0: "[check]", 1: "[bet]"},
        mode=mode,
        feedback=feedback,
    )


@pytest.mark.parametrize("mode", MODES)
def test_prompt_holds_rules_observation_and_legal_actions(mode):
    prompt = _prompt(mode)
    for part in ("Kuhn Poker", "Three cards.", "Your card: K.", "Legal actions: [check], [bet]"):
        assert part in prompt.text
    assert prompt.choices == ("[check]", "[bet]")
    assert prompt.action_ids == (0, 1)
    assert prompt.messages() == [{"role": "user", "content": prompt.text}]


def test_modes_ask_for_different_answer_formats():
    assert "Think step by step" in _prompt("think").text
    assert "\\boxed{[check]}" in _prompt("direct").text
    assert "Do not explain" in _prompt("direct").text
    assert "exactly one of the legal actions" in _prompt("choice").text
    assert "\\boxed" not in _prompt("choice").text


def test_feedback_goes_before_the_answer_format():
    text = _prompt("direct", feedback="Your previous answer was illegal.").text
    assert text.index("previous answer") < text.index("Reply with")


@pytest.mark.parametrize("mode", MODES)
def test_the_decision_note_is_the_last_line_after_feedback_and_answer_format(mode):
    template = PromptTemplate(title="Kuhn Poker", rules="Three cards.", mode=mode)
    plain = template.render("Your card: K.", (0, 1), ("[check]", "[bet]"), "Answer again.")
    noted = template.render("Your card: K.", (0, 1), ("[check]", "[bet]"), "Answer again.", "Your card beats a J.")
    assert noted.text == plain.text + "\nYour card beats a J."
    assert noted.choices == plain.choices and noted.action_ids == plain.action_ids


def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(ValueError, match="think, direct, choice"):
        PromptTemplate(title="x", rules="", mode="chatty")


def test_choice_mode_accepts_the_bare_candidate_string():
    prompt = _prompt("choice")
    assert prompt.parse("[bet]").action == 1
    assert prompt.parse("bet").action is None  # no brackets and no box: nothing extracted
    assert prompt.parse("\\boxed{bet}").action == 1


def test_feedback_quotes_a_short_answer_whole():
    parsed = _prompt("direct").parse("\\boxed{[raise]}")
    assert describe_error(parsed, ("[check]", "[bet]")) == (
        "Your previous answer '[raise]' is not a legal action. Choose one of: [check], [bet]."
    )


def test_feedback_cuts_a_huge_answer():
    answer = "a" * MAX_QUOTED_ANSWER_CHARS + "b" * 1_000_000
    parsed = _prompt("direct").parse(f"\\boxed{{{answer}}}")
    assert describe_error(parsed, ("[check]", "[bet]")) == (
        f"Your previous answer '{'a' * MAX_QUOTED_ANSWER_CHARS}'... (cut; {len(answer)} characters in all) "
        "is not a legal action. Choose one of: [check], [bet]."
    )
