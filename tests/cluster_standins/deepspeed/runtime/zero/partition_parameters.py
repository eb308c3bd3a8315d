"""`ZeroParamStatus`, which `openrlhf.utils.deepspeed.deepspeed_utils` imports."""

import enum


class ZeroParamStatus(enum.Enum):
    AVAILABLE = 1
    NOT_AVAILABLE = 2
    INFLIGHT = 3
