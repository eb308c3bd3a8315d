"""Answer extraction: forgiving about form, strict about content, never raises."""

from hypothesis import given, settings
from hypothesis import strategies as st

from envs.parsing import extract_answer, extract_boxed, match_action, legal_action_index, normalize_action_text
from benchmarks.parse_adversarial import KUHN_OPENING, adversarial_answers
from envs.protocol import ParsedAction, parse_action


def test_last_boxed_wins_and_braces_are_matched():
    text = "first \\boxed{[check]} then \\boxed{\\text{[bet]}} and {stray"
    assert extract_boxed(text) == "[bet]"
    assert extract_boxed("\\boxed{ {a}{b} }") == "{a}{b}"
    assert extract_boxed("\\boxed {0101}") == "0101"


def test_unbalanced_last_boxed_falls_back_to_an_earlier_complete_one():
    assert extract_boxed("\\boxed{[bet]} ... \\boxed{[call]") == "[bet]"
    assert extract_boxed("\\boxed{") is None
    assert extract_boxed("no answer") is None


def test_nested_text_wrappers_are_unwrapped():
    assert extract_boxed("\\boxed{\\textbf{\\text{[fold]}}}") == "[fold]"


def test_a_box_inside_a_box_wins_and_a_wrapper_holding_braces_stays():
    assert extract_boxed("\\boxed{\\boxed{[bet]} or not}") == "[bet]"
    assert extract_boxed("\\boxed{\\text{a{b}}}") == "\\text{a{b}}"
    assert extract_boxed("\\boxed{\\mathrm {[call]} }") == "[call]"
    assert extract_boxed("\\boxed{\\textit{[call]}}") == "\\textit{[call]}"  # not a wrapper we remove


def test_megabyte_answers_are_read_in_one_pass():
    # A parser that rescans per `\\boxed` or per nesting level takes hours on these;
    # a linear one takes well under a second each.
    expected = {
        "boxed_openers": ParsedAction(None, None, "unparseable"),
        "nested_braces": ParsedAction(None, "{" * 500_000 + "[bet]" + "}" * 500_000, "illegal"),
        "nested_text": ParsedAction(1, "[bet]", None),
        "text_openers": ParsedAction(None, None, "unparseable"),
        "open_brackets": ParsedAction(None, None, "unparseable"),
        "legal_answer": ParsedAction(1, "[bet]", None),
    }
    answers = adversarial_answers(1_000_000)
    assert answers.keys() == expected.keys()
    for name, answer in answers.items():
        assert len(answer) >= 1_000_000
        assert KUHN_OPENING.parse(answer) == expected[name], name


def test_brackets_are_the_fallback_when_nothing_is_boxed():
    assert extract_answer("I think [check] is weak, so [bet]") == "bet"
    assert extract_answer("\\boxed{[call]} but also [fold]") == "[call]"
    assert extract_answer("nothing here") is None


def test_normalization_ignores_case_whitespace_and_outer_brackets():
    assert normalize_action_text(" [ Offer: 3 Wood -> 2 Gold ] ") == "offer:3wood->2gold"
    assert normalize_action_text("BET") == "bet"


def test_match_action_is_strict_about_legality():
    legal = legal_action_index({0: "[check]", 1: "[bet]"})
    assert match_action("\\boxed{[BET]}", legal) == 1
    assert match_action("[ check ]", legal) == 0
    assert match_action("\\boxed{[call]}", legal) is None
    assert match_action("\\boxed{bet or check}", legal) is None


def test_parse_action_reports_why():
    legal = {0: "[check]", 1: "[bet]"}
    assert parse_action("\\boxed{[bet]}", legal) == (1, "[bet]", None)
    assert parse_action("hmm", legal) == (None, None, "unparseable")
    assert parse_action("\\boxed{[raise]}", legal) == (None, "[raise]", "illegal")
    assert parse_action(None, legal).error == "unparseable"
    assert parse_action(b"[bet]", legal).error == "unparseable"


@settings(max_examples=300, derandomize=True, database=None)
@given(st.text())
def test_parsing_never_raises(text):
    extract_boxed(text)
    extract_answer(text)
    result = parse_action(text, {0: "[check]", 1: "[bet]"})
    assert result.action in (None, 0, 1)
    assert (result.action is None) == (result.error is not None)
