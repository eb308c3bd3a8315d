"""Answer parsing on hostile input: `python -m benchmarks.parse_adversarial` prints one JSON line.

A model's output is untrusted: a policy early in training, or one gaming the parser,
can emit a megabyte of `\\boxed{` or of nested braces. Parsing must stay linear in the
answer's length, or one such answer stalls every env step that reads it (a quadratic
parser took about 50 s on 20,000 repeated `\\boxed{`). The benchmark times
`TurnPrompt.parse` on each shape of `adversarial_answers` (1 MB each by default) and on
the same shapes at a tenth of the size: for a linear parser the ratio of the two times
is about 10, for a quadratic one about 100. No peer parses these shapes to compare with.
"""

from __future__ import annotations

import argparse
import json
import time

from envs.protocol import TurnPrompt

KUHN_OPENING = TurnPrompt("", ("[check]", "[bet]"), (0, 1))
"""The first decision of Kuhn Poker: the legal answers are [check] and [bet]."""


def adversarial_answers(size: int = 1_000_000) -> dict[str, str]:
    """Answers of at least `size` characters, each a worst case for a naive parser.

    `nested_text` and `legal_answer` name [bet]; `nested_braces` boxes the braces
    themselves (an illegal answer); the others hold no complete answer.
    """
    half = size // 2
    text_depth = -(-size // len("\\text{}"))
    return {
        "boxed_openers": _repeated("\\boxed{", size),
        "nested_braces": "\\boxed{" + "{" * half + "[bet]" + "}" * half + "}",
        "nested_text": "\\boxed{" + "\\text{" * text_depth + "[bet]" + "}" * text_depth + "}",
        "text_openers": "\\boxed{" + _repeated("\\text{", size),
        "open_brackets": "[" * size,
        "legal_answer": _repeated("Let me think. ", size) + "\\boxed{[bet]}",
    }


def _repeated(piece: str, size: int) -> str:
    """`piece` repeated to at least `size` characters."""
    return piece * -(-size // len(piece))


def parse_seconds(answer: str, repeats: int = 3) -> float:
    """The fastest of `repeats` parses (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        KUHN_OPENING.parse(answer)
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.parse_adversarial", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--size", type=int, default=1_000_000, help="characters per answer")
    args = parser.parse_args(argv)
    small = adversarial_answers(args.size // 10)
    shapes = {}
    for name, answer in adversarial_answers(args.size).items():
        seconds = parse_seconds(answer)
        shapes[name] = {
            "chars": len(answer),
            "parse_s": round(seconds, 4),
            "tenfold_ratio": round(seconds / max(parse_seconds(small[name]), 1e-9), 1),
        }
    result = {
        "benchmark": "parse_adversarial",
        "size": args.size,
        "shapes": shapes,
        "max_parse_s": max(shape["parse_s"] for shape in shapes.values()),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
