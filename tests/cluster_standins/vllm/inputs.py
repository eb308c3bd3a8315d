"""`TokensPrompt`: a dict with the prompt's token ids, as in vLLM."""

from typing import TypedDict


class TokensPrompt(TypedDict, total=False):
    prompt_token_ids: list[int]
    multi_modal_data: dict
