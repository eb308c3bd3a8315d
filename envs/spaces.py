"""The text space of every env, defined once.

Prompts and model answers flow through Gymnasium `Text` spaces (a game env's
observation, the SAT task's observation and action). One character set serves them all,
so that what one env accepts the others accept too.
"""

from __future__ import annotations

import string

from gymnasium import spaces

TEXT_CHARSET = string.printable + "".join(chr(c) for c in range(0xA0, 0x3000))
"""Printable ASCII plus most of the BMP below CJK: wide enough for any prompt we write
and for typical model output, so each space accepts what actually flows through it."""


def text_space(max_length: int) -> spaces.Text:
    """A `Text` space of 0 to `max_length` characters of `TEXT_CHARSET`.

    Building one takes tens of milliseconds (Gymnasium indexes every character of the
    set), so envs that are made by the hundred build theirs on first use.
    """
    return spaces.Text(max_length=max_length, min_length=0, charset=TEXT_CHARSET)
