"""Log-probs of given continuations under a transformers model, with gradients when wanted.

The training-side counterpart of generation: ``sequence_logprobs`` recomputes the raw
per-token log-probs of sampled responses (the new log-probs of a PPO ratio), and
``candidate_logprobs`` scores every legal action string of choice mode with the prompt run
once. Both follow the log-prob convention of ``trainers.generation.base``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Padding positions are masked out of attention and of every result, so any valid id works.
_FILLER_ID = 0

def sequence_logprobs(model, prompt_ids_batch, response_ids_batch, *, prefix: "PrefixRun | None" = None) -> list[torch.Tensor]:
    """Per-token raw log-probs of each response given its prompt, in one forward pass.

    Returns one 1-D float32 tensor per row, of the response's length. Under
    ``torch.inference_mode`` it is a pure evaluation; otherwise the tensors carry gradients
    to the model's weights (the new log-probs of a PPO ratio). Padding is masked out of
    attention, so a row's values do not depend on the other rows (up to float rounding).
    The prompts' common prefix is run once for the batch (see `shared_prefix`), or taken
    from `prefix` (a `PrefixRun` every prompt starts with, shared by several passes).
    """
    if len(prompt_ids_batch) != len(response_ids_batch):
        raise ValueError("prompt_ids_batch and response_ids_batch must have the same length")
    response_width = max((len(r) for r in response_ids_batch), default=0)
    if response_width == 0:
        return [torch.zeros(0) for _ in response_ids_batch]
    if any(len(p) == 0 for p in prompt_ids_batch):
        raise ValueError("every prompt needs at least one token to condition the response on")
    device = model.device
    shared, past = (prefix.length, prefix.past(len(prompt_ids_batch))) if prefix else shared_prefix(model, prompt_ids_batch)
    input_ids, attention_mask = left_pad([p[shared:] for p in prompt_ids_batch], extra_columns=response_width, device=device)
    prompt_width = input_ids.shape[1] - response_width
    for row, response in enumerate(response_ids_batch):
        input_ids[row, prompt_width:prompt_width + len(response)] = torch.tensor(response, dtype=torch.long)
        attention_mask[row, prompt_width:prompt_width + len(response)] = 1
    targets = input_ids[:, prompt_width:]
    # The last response token is only a target, so it is not fed; the logits at the last
    # prompt position and every response position but the last predict the response.
    positions = shared + (attention_mask.cumsum(1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids[:, :-1],
        attention_mask=_with_prefix(attention_mask[:, :-1], shared),
        position_ids=positions[:, :-1],
        use_cache=bool(past),
        logits_to_keep=response_width,
        **past,
    ).logits.float()
    token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
    return [token_logprobs[row, : len(response)] for row, response in enumerate(response_ids_batch)]


def candidate_logprobs(
    model, prompt_ids_batch: Sequence[Sequence[int]], candidates_batch: Sequence[Sequence[Sequence[int]]],
    *, prefix: "PrefixRun | None" = None,
) -> list[torch.Tensor]:
    """Summed raw log-prob of each candidate continuation of each prompt, prompt run once.

    Returns one 1-D tensor per prompt (one value per candidate), with gradients unless
    called under ``torch.inference_mode``. A prompt's candidates are packed behind it in its
    own row as a token trie (`CandidateTree`): every distinct proper prefix of a candidate
    is fed once, attends to the prompt and to its own ancestors only, and its position
    continues the prompt's, so the row costs one prompt forward plus the trie's tokens. The
    parts of a chained answer repeat the answer so far in every candidate
    (``"[Offer: 3 Gold -> " + "5"``); the trie feeds it once. Nothing is copied per
    candidate (a batch of one KV-cache copy per candidate makes memory and backward time
    grow with prompts x candidates). A prompt with many candidates spreads them over rows of
    at most `MAX_PACKED_TOKENS` fed tokens, and rows go through the model in forwards of at
    most `MAX_SCORED_POSITIONS` scored positions, which bounds the logits a forward holds.
    The rows' common prefix (a game's rules, the chat template) is run once for the whole
    batch (see `shared_prefix`), or taken from `prefix` (a `PrefixRun` every prompt starts
    with, shared by several passes). Equal, up to float rounding, to summing
    `sequence_logprobs` over each (prompt, candidate) pair, gradients included.
    """
    if len(prompt_ids_batch) != len(candidates_batch):
        raise ValueError("prompt_ids_batch and candidates_batch must have the same length")
    if any(len(p) == 0 for p in prompt_ids_batch):
        raise ValueError("every prompt needs at least one token to condition the response on")
    if any(len(c) == 0 for candidates in candidates_batch for c in candidates):
        raise ValueError("every candidate needs at least one token")
    device = model.device
    rows = _candidate_rows(candidates_batch)
    shared, layers = (prefix.length, prefix.layers) if prefix else _prefix_layers(model, [prompt_ids_batch[row.prompt] for row in rows])
    values: list[torch.Tensor | None] = [None] * sum(len(c) for c in candidates_batch)
    for chunk in _forward_chunks(rows):
        packed = _packed_rows([prompt_ids_batch[row.prompt][shared:] for row in chunk], [row.tree for row in chunk], shared)
        mask = torch.zeros(packed.allowed.shape, dtype=model.dtype).masked_fill(~packed.allowed, torch.finfo(model.dtype).min)
        logits = model(
            input_ids=packed.input_ids.to(device),
            attention_mask=mask[:, None].to(device),
            position_ids=packed.positions.to(device),
            use_cache=bool(layers),
            logits_to_keep=packed.scored_columns,
            **_expanded(layers, len(chunk)),
        ).logits
        kept = logits.reshape(-1, logits.shape[-1])  # (row, kept column) flattened
        # only the positions that predict a candidate token go through the log-softmax
        first = _token_logprobs(kept, packed.first_index, packed.first_token, device)
        later = _token_logprobs(kept, packed.later_index, packed.later_token, device)
        sums = first.index_add(0, packed.later_owner.to(device), later)
        for i, value in zip((i for row in chunk for i in row.members), sums):
            values[i] = value
    result, start = [], 0
    for candidates in candidates_batch:
        result.append(torch.stack(values[start : start + len(candidates)]))
        start += len(candidates)
    return result


@dataclass
class PromptStates:
    """Prompts run once (`run_prompts`), to score several rounds of candidates behind them
    (`candidate_logprobs_after`): a chained answer asks its prompt once per part.

    ``layers``: per layer, (keys, values) of shape (prompts, kv heads, width, head dim):
    the prompts' common prefix (``shared`` columns, run once), then each prompt's rest
    left-padded to the widest; ``lengths``: each prompt's full length; ``next_logprobs``:
    (prompts, vocabulary) log-softmax of the token after each prompt, in float32.
    """

    layers: list
    lengths: list[int]
    next_logprobs: torch.Tensor
    shared: int = 0

    def key_columns(self, prompt: int) -> list[slice]:
        """The cache columns that hold prompt `prompt`'s tokens."""
        width = self.layers[0][0].shape[2]
        return [slice(0, self.shared), slice(width - (self.lengths[prompt] - self.shared), width)]


@torch.inference_mode()
def run_prompts(model, prompt_ids_batch: Sequence[Sequence[int]], *, prefix: "PrefixRun | None" = None) -> PromptStates:
    """Run every prompt once (no gradients) and keep what scoring after it needs: the
    prompts' common prefix once (`shared_prefix`, or `prefix`: a `PrefixRun` every prompt
    starts with, which a session runs once for all its batches), then their rests,
    left-padded.
    """
    if not prompt_ids_batch or any(len(p) == 0 for p in prompt_ids_batch):
        raise ValueError("run_prompts needs at least one prompt, each of at least one token")
    shared, past = (prefix.length, prefix.past(len(prompt_ids_batch))) if prefix else shared_prefix(model, prompt_ids_batch)
    input_ids, attention_mask = left_pad([p[shared:] for p in prompt_ids_batch], extra_columns=0, device=model.device)
    positions = shared + (attention_mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=_with_prefix(attention_mask, shared), position_ids=positions,
                use_cache=True, logits_to_keep=1, **past)
    cache = out["cache" if "cache" in out else "past_key_values"]
    return PromptStates(
        [(layer.keys, layer.values) for layer in cache.layers],
        [len(p) for p in prompt_ids_batch],
        torch.log_softmax(out.logits[:, -1].float(), dim=-1),
        shared,
    )


@torch.inference_mode()
def candidate_logprobs_after(model, states: PromptStates, rows: Sequence[int], candidates_batch) -> list[torch.Tensor]:
    """`candidate_logprobs` of ``candidates_batch[i]`` after the prompt ``rows[i]`` of
    `states`, without running the prompts again (no gradients: rollout scoring).

    A candidate's first token is read off the prompt's next-token log-probs; the rest of
    its trie (`CandidateTree`) is fed behind the prompt's cached keys and values, as
    `candidate_logprobs` packs it (each node attends to its prompt and its own ancestors,
    positions continue the prompt's), so a round costs the trie's tokens only. Equal to
    `candidate_logprobs` up to float rounding.
    """
    if len(rows) != len(candidates_batch):
        raise ValueError("every row needs its candidates")
    if any(len(c) == 0 for candidates in candidates_batch for c in candidates):
        raise ValueError("every candidate needs at least one token")
    device = model.device
    flat = [list(c) for candidates in candidates_batch for c in candidates]
    owner = [rows[b] for b, candidates in enumerate(candidates_batch) for _ in candidates]
    values = states.next_logprobs[torch.tensor(owner, dtype=torch.long, device=device), torch.tensor([c[0] for c in flat], dtype=torch.long, device=device)]
    packed = [row for row in _candidate_rows(candidates_batch) if row.tree.tokens]
    width = states.layers[0][0].shape[2]
    for chunk in _forward_chunks(packed) if packed else []:
        prompts = [rows[row.prompt] for row in chunk]
        columns = max(len(row.tree.tokens) for row in chunk)
        input_ids = torch.full((len(chunk), columns), _FILLER_ID, dtype=torch.long)
        positions = torch.zeros((len(chunk), columns), dtype=torch.long)
        allowed = torch.zeros((len(chunk), columns, width + columns), dtype=torch.bool)
        diagonal = torch.arange(columns)
        allowed[:, diagonal, width + diagonal] = True  # padding attends to itself: no empty softmax
        index, tokens, owners = [], [], []
        for r, (row, prompt) in enumerate(zip(chunk, prompts)):
            length, tree = states.lengths[prompt], row.tree
            for columns_of_prompt in states.key_columns(prompt):
                allowed[r, :len(tree.tokens), columns_of_prompt] = True
            _place_tree(tree, input_ids[r], positions[r], allowed[r], column=0, key_column=width, position=length)
            for member, path, candidate in zip(row.members, tree.predictors, tree.candidates):
                index += [r * columns + node for node in path]
                tokens += candidate[1:]
                owners += [member] * len(path)
        mask = torch.zeros(allowed.shape, dtype=model.dtype).masked_fill(~allowed, torch.finfo(model.dtype).min)
        if prompts == list(range(states.layers[0][0].shape[0])):  # every cached prompt, in order: no copy
            past = _expanded(states.layers, len(chunk))
        else:
            picked = torch.tensor(prompts, dtype=torch.long, device=device)
            past = _expanded([(keys[picked], values_[picked]) for keys, values_ in states.layers], len(chunk))
        logits = model(input_ids=input_ids.to(device), attention_mask=mask[:, None].to(device),
                       position_ids=positions.to(device), use_cache=True, **past).logits
        later = _token_logprobs(logits.reshape(-1, logits.shape[-1]), torch.tensor(index, dtype=torch.long),
                                torch.tensor(tokens, dtype=torch.long), device)
        values = values.index_add(0, torch.tensor(owners, dtype=torch.long, device=device), later)
    result, start = [], 0
    for candidates in candidates_batch:
        result.append(values[start:start + len(candidates)])
        start += len(candidates)
    return result


MAX_PACKED_TOKENS = 256
"""Candidate tokens packed behind one copy of a prompt at most (a longer candidate gets a row alone)."""

MAX_SCORED_POSITIONS = 1024
"""Rows x scored columns of one candidate forward at most: its logits hold that many vocabulary rows."""


class CandidateTree:
    """A prompt's candidates as a token trie: each distinct proper prefix of a candidate is
    one fed node (its last token), so text the candidates share is fed once.

    ``tokens[n]``, ``parents[n]`` (-1: right after the prompt) and ``depths[n]`` describe
    node n, parents before children. A candidate's first token is predicted at the prompt's
    last position; its token j >= 1 at node ``predictors[i][j - 1]`` (the node of its first
    j tokens).
    """

    __slots__ = ("candidates", "tokens", "parents", "depths", "predictors", "_nodes")

    def __init__(self):
        self.candidates: list[list[int]] = []
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.depths: list[int] = []
        self.predictors: list[list[int]] = []
        self._nodes: dict[tuple[int, int], int] = {}

    @classmethod
    def of(cls, candidates: Sequence[Sequence[int]]) -> "CandidateTree":
        tree = cls()
        for candidate in candidates:
            tree.add(candidate)
        return tree

    def new_tokens(self, candidate: Sequence[int]) -> int:
        """How many fed tokens adding `candidate` would cost."""
        parent = -1
        for depth, token in enumerate(candidate[:-1]):
            node = self._nodes.get((parent, token))
            if node is None:
                return len(candidate) - 1 - depth
            parent = node
        return 0

    def add(self, candidate: Sequence[int]) -> None:
        path, parent = [], -1
        for depth, token in enumerate(candidate[:-1]):
            node = self._nodes.get((parent, token))
            if node is None:
                node = self._nodes[(parent, token)] = len(self.tokens)
                self.tokens.append(token)
                self.parents.append(parent)
                self.depths.append(depth)
            path.append(node)
            parent = node
        self.candidates.append(list(candidate))
        self.predictors.append(path)


def fed_tokens(candidates: Sequence[Sequence[int]]) -> int:
    """Tokens fed behind a prompt to score `candidates` (`CandidateTree`): their distinct proper prefixes."""
    return len(CandidateTree.of(candidates).tokens)


@dataclass
class _Row:
    """Candidates ``members`` (numbered across the batch) of prompt ``prompt``, packed in one row."""

    prompt: int
    members: list[int]
    tree: CandidateTree


def _candidate_rows(candidates_batch) -> list[_Row]:
    """The packed rows: each prompt's candidates in order, a new row whenever its trie would
    pass `MAX_PACKED_TOKENS` fed tokens; candidates numbered across prompts."""
    rows, number = [], 0
    for prompt, candidates in enumerate(candidates_batch):
        row = _Row(prompt, [], CandidateTree())
        for candidate in candidates:
            if row.members and len(row.tree.tokens) + row.tree.new_tokens(candidate) > MAX_PACKED_TOKENS:
                rows.append(row)
                row = _Row(prompt, [], CandidateTree())
            row.members.append(number)
            row.tree.add(candidate)
            number += 1
        rows.append(row)
    return rows


def _forward_chunks(rows: list[_Row]) -> list[list[_Row]]:
    """Consecutive rows per forward, at most `MAX_SCORED_POSITIONS` scored positions each (a row alone may pass it)."""
    chunks, current, widest = [], [], 0
    for row in rows:
        width = 1 + len(row.tree.tokens)
        if current and (len(current) + 1) * max(widest, width) > MAX_SCORED_POSITIONS:
            chunks.append(current)
            current, widest = [], 0
        current.append(row)
        widest = max(widest, width)
    chunks.append(current)
    return chunks


def _place_tree(tree: CandidateTree, input_ids, positions, allowed, *, column: int, key_column: int, position: int) -> None:
    """Write `tree`'s nodes into one row from query column `column` (key column
    `key_column`), at positions from `position`: each node attends to itself and its
    ancestors (the caller lets it see the prompt)."""
    for node, (token, parent, depth) in enumerate(zip(tree.tokens, tree.parents, tree.depths)):
        input_ids[column + node] = token
        positions[column + node] = position + depth
        allowed[column + node, key_column + node] = True
        while parent >= 0:
            allowed[column + node, key_column + parent] = True
            parent = tree.parents[parent]


def _token_logprobs(logits: torch.Tensor, index: torch.Tensor, tokens: torch.Tensor, device) -> torch.Tensor:
    """``log_softmax(logits[index])[token]`` for each (index, token) pair, in float32."""
    if not len(index):
        return torch.zeros(0, device=device)
    chosen = torch.log_softmax(logits[index.to(device)].float(), dim=-1)
    return chosen.gather(1, tokens.to(device)[:, None])[:, 0]


@dataclass
class _PackedRows:
    """One row per prompt: [left padding][prompt suffix][its candidates' trie nodes].

    ``allowed[b, q, k]``: may query column q attend key column k (the shared prefix's
    columns first). The forward keeps the logits of the last ``scored_columns`` columns of
    every row; an index below counts (row, kept column) pairs in row-major order. Candidate
    i (numbered across the batch) has its first token ``first_token[i]`` predicted at
    ``first_index[i]`` (its prompt's last column); every later token ``later_token[j]`` of
    candidate ``later_owner[j]`` is predicted at ``later_index[j]``.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    allowed: torch.Tensor
    scored_columns: int
    first_index: torch.Tensor
    first_token: torch.Tensor
    later_index: torch.Tensor
    later_token: torch.Tensor
    later_owner: torch.Tensor


def _packed_rows(suffixes, trees: Sequence[CandidateTree], shared: int) -> _PackedRows:
    """Lay out prompts and their candidate tries for one forward pass (see `candidate_logprobs`)."""
    batch = len(suffixes)
    prompt_width = max(len(s) for s in suffixes)
    fed = max(len(tree.tokens) for tree in trees)
    width = prompt_width + fed
    scored = 1 + fed  # the prompts' last column, then every trie column
    input_ids = torch.full((batch, width), _FILLER_ID, dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    allowed = torch.zeros((batch, width, shared + width), dtype=torch.bool)
    allowed[:, :, :shared] = True
    diagonal = torch.arange(width)
    allowed[:, diagonal, shared + diagonal] = True  # padding attends to itself: no empty softmax
    first_index, first_token, later_index, later_token, later_owner = [], [], [], [], []
    for b, (suffix, tree) in enumerate(zip(suffixes, trees)):
        start = prompt_width - len(suffix)
        input_ids[b, start:prompt_width] = torch.tensor(list(suffix), dtype=torch.long)
        positions[b, start:prompt_width] = shared + torch.arange(len(suffix))
        allowed[b, start:prompt_width, shared + start:shared + prompt_width] = torch.ones(len(suffix), len(suffix), dtype=torch.bool).tril()
        allowed[b, prompt_width:prompt_width + len(tree.tokens), shared + start:shared + prompt_width] = True
        _place_tree(tree, input_ids[b], positions[b], allowed[b], column=prompt_width, key_column=shared + prompt_width, position=shared + len(suffix))
        kept_start = b * scored + 1  # the kept column of trie node 0
        for path, candidate in zip(tree.predictors, tree.candidates):
            first_index.append(b * scored)
            first_token.append(candidate[0])
            later_index += [kept_start + node for node in path]
            later_token += candidate[1:]
            later_owner += [len(first_token) - 1] * len(path)
    as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    return _PackedRows(input_ids, positions, allowed, scored, as_long(first_index), as_long(first_token),
                       as_long(later_index), as_long(later_token), as_long(later_owner))


MIN_SHARED_PREFIX = 8
"""Shortest common prefix worth a separate forward pass."""


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence shares."""
    first, length = sequences[0], min(len(s) for s in sequences)
    for other in sequences[1:]:
        position = 0
        while position < length and other[position] == first[position]:
            position += 1
        length = position
    return length


def shared_prefix(model, prompt_ids_batch) -> tuple[int, dict]:
    """Run the prompts' common prefix once; return its length and the model kwargs that pass
    its KV cache (expanded to every row) to the next forward ({} when not worth it).

    Prompts of one game share a long prefix (the chat template and the rules). Gradients
    flow through the expanded cache into the shared forward, so values and gradients are
    the same as running every prompt whole. At least one token of each prompt is left out
    of the prefix, so every row's next-token logits come from its own forward.
    """
    shared, layers = _prefix_layers(model, prompt_ids_batch)
    return shared, _expanded(layers, len(prompt_ids_batch))


def shared_prefix_length(prompt_ids_batch: Sequence[Sequence[int]]) -> int:
    """How many leading tokens a pass over these prompts runs once for all of them: their
    common prefix, less at least one token of each prompt, or 0 when shorter than
    `MIN_SHARED_PREFIX` (or when there is one prompt)."""
    if len(prompt_ids_batch) < 2:
        return 0
    shared = min(common_prefix_length(prompt_ids_batch), min(len(p) for p in prompt_ids_batch) - 1)
    return shared if shared >= MIN_SHARED_PREFIX else 0


class PrefixRun:
    """The common prefix of every prompt of several forwards, run once.

    A learner update scores its samples in several passes (micro-batches), and a rollout's
    choice session runs its prompts in several batches, whose prompts all start with the
    same chat template and rules. Each forward continues this run's keys and values
    (`sequence_logprobs`, `candidate_logprobs` and `run_prompts` with ``prefix=``). With
    gradients on, the keys and values are leaves of their own: a pass's backward stops at
    them and adds its gradient there, and `backward` then sends the summed gradient through
    the prefix's forward once, so the gradients are those of running the prefix in every
    pass, for one prefix forward and backward. Build one with `prefix_run`.
    """

    def __init__(self, length: int, layers: list):
        self.length = length
        self._outputs = [tensor for pair in layers for tensor in pair]
        leaves = [tensor.detach().requires_grad_(tensor.requires_grad) for tensor in self._outputs]
        self.layers = list(zip(leaves[0::2], leaves[1::2]))
        self._leaves = leaves

    def past(self, rows: int) -> dict:
        """Model kwargs that continue this prefix in `rows` rows."""
        return _expanded(self.layers, rows)

    def backward(self) -> None:
        """Send the gradients the passes left on the prefix's keys and values through its forward."""
        pairs = [(output, leaf.grad) for output, leaf in zip(self._outputs, self._leaves) if leaf.grad is not None]
        if pairs:
            torch.autograd.backward([output for output, _ in pairs], [grad for _, grad in pairs])


def prefix_run(model, prompt_ids_batch: Sequence[Sequence[int]]) -> PrefixRun | None:
    """The prompts' common prefix run once (`PrefixRun`), or None when they share none worth
    a forward of its own (`shared_prefix_length`)."""
    shared, layers = _prefix_layers(model, prompt_ids_batch)
    return PrefixRun(shared, layers) if shared else None


@dataclass
class PrefixView:
    """A prefix's keys and values as one forward continues them (``length``, ``layers``,
    ``past``, as `PrefixRun` offers); built by `extended_prefix`. With gradients on, the
    layers carry the graph of the run that extended them, back to the `PrefixRun` below."""

    length: int
    layers: list

    def past(self, rows: int) -> dict:
        """Model kwargs that continue this prefix in `rows` rows."""
        return _expanded(self.layers, rows)


def truncated_prefix(prefix: "PrefixRun | PrefixView", length: int) -> PrefixView:
    """The first `length` tokens of `prefix`: a causal model's keys and values of a prefix's
    first tokens depend on those tokens only, so they are a slice of the longer run's."""
    if not 0 < length <= prefix.length:
        raise ValueError(f"a prefix of {prefix.length} tokens has no first {length}")
    return PrefixView(length, [(keys[:, :, :length], values[:, :, :length]) for keys, values in prefix.layers])


def extended_prefix(model, prefix: "PrefixRun | PrefixView", prompt_ids_batch: Sequence[Sequence[int]]) -> "PrefixRun | PrefixView":
    """`prefix` continued to the longer common prefix of one pass's prompts, or `prefix`
    itself when they share fewer than `MIN_SHARED_PREFIX` tokens more.

    A round of a game puts prompts into one pass that agree far beyond the rules (the same
    turn, inventories and pending offer, up to the offer's amounts), but one traded
    inventory anywhere cuts the common prefix of the whole batch short. Running each pass's
    own common prefix once, behind the batch's, makes those tokens cost one row, not one per
    prompt. The extension is one forward of the extra tokens behind `prefix`'s cache; with
    gradients on it stays in the pass's graph, so the pass's backward reaches the weights
    through it and adds to `prefix`'s gradient as a row continuing `prefix` would.
    """
    shared = shared_prefix_length(prompt_ids_batch)
    if shared - prefix.length < MIN_SHARED_PREFIX:
        return prefix
    return PrefixView(shared, _run_cached(model, prompt_ids_batch[0][prefix.length:shared], start=prefix.length, past=prefix.past(1)))


def prefix_groups(
    prompt_ids_batch: Sequence[Sequence[int]],
    *,
    max_rows: int,
    base: int = 0,
    answers: Sequence[int] | None = None,
    max_tokens: int | None = None,
    pass_cost: int = 0,
) -> list[list[int]]:
    """The prompts' indices cut into forward passes that put the fewest tokens through the
    model, each pass of at most `max_rows` prompts and (unless it holds one prompt alone)
    at most `max_tokens` tokens.

    A pass runs its prompts' common prefix once beyond the `base` tokens every prompt
    shares and already run (`extended_prefix`), then one row per prompt padded to the
    widest, each with its `answers[i]` tokens fed behind (0 by default): its tokens are
    ``base + extra prefix + rows x widest rest``. Prompts sharing long prefixes are
    neighbours in sorted order, so the passes are runs of the sorted prompts, chosen by
    dynamic programming with `pass_cost` tokens charged per pass (a pass's fixed cost).
    Passes and the prompts in them are returned in sorted order.
    """
    count = len(prompt_ids_batch)
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    answers = [0] * count if answers is None else list(answers)
    order = sorted(range(count), key=lambda i: list(prompt_ids_batch[i]))
    prompts = [prompt_ids_batch[i] for i in order]
    neighbours = [common_prefix_length([prompts[k - 1], prompts[k]]) for k in range(1, count)]
    best = [0.0] + [float("inf")] * count  # best[j]: the cheapest passes over the first j sorted prompts
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        agreed = shortest = widest = None
        for start in range(end - 1, max(end - max_rows, 0) - 1, -1):
            length, width = len(prompts[start]), len(prompts[start]) + answers[order[start]]
            shortest = length if shortest is None else min(shortest, length)
            widest = width if widest is None else max(widest, width)
            if start < end - 1:
                agreed = neighbours[start] if agreed is None else min(agreed, neighbours[start])
            shared = base
            if agreed is not None:
                own = min(agreed, shortest - 1)
                shared = own if own - base >= MIN_SHARED_PREFIX else base
            tokens = (shared - base) + (end - start) * (widest - shared)
            if max_tokens is not None and base + tokens > max_tokens and end - start > 1:
                break
            if best[start] + tokens + pass_cost < best[end]:
                best[end], cut[end] = best[start] + tokens + pass_cost, start
    passes, end = [], count
    while end:
        passes.append(order[cut[end]:end])
        end = cut[end]
    return passes[::-1]


def _prefix_layers(model, prompt_ids_batch) -> tuple[int, list]:
    """The common prefix's length and its KV cache, one (keys, values) per layer ([] when not worth a forward)."""
    shared = shared_prefix_length(prompt_ids_batch)
    if not shared:
        return 0, []
    return shared, _run_cached(model, prompt_ids_batch[0][:shared])


def _run_cached(model, tokens: Sequence[int], *, start: int = 0, past: dict | None = None) -> list:
    """The KV cache, one (keys, values) per layer, of running `tokens` as one row from
    position `start`, behind `past` (model kwargs of a cache holding the first `start`)."""
    device = model.device
    out = model(input_ids=torch.tensor([list(tokens)], dtype=torch.long, device=device),
                position_ids=torch.arange(start, start + len(tokens), device=device)[None],
                use_cache=True, logits_to_keep=1, **(past or {}))
    cache = out["cache" if "cache" in out else "past_key_values"]
    return [(layer.keys, layer.values) for layer in cache.layers]


def _expanded(layers: list, rows: int) -> dict:
    """Model kwargs passing the cache `layers` (one (keys, values) per layer) to `rows` rows.

    Nothing is copied: each cache layer holds the tensors themselves, expanded to `rows`
    (a view when they have one row). transformers' `DynamicCache` copies what it is built
    from (it concatenates the data onto an empty tensor), and its forward concatenates the
    new keys onto the cache again; a candidate round over a batch's cached prompts paid the
    first copy for every layer, each about as long as the round's own compute on a 2-core
    CPU. So the cache is built empty and its layers are pointed at the tensors; the forward's
    concatenation is the one copy left. Values and gradients are those of the copying form.
    """
    if not layers:
        return {}
    from transformers import DynamicCache

    expanded = [(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1)) for keys, values in layers]
    cache = DynamicCache([(keys[..., :0, :], values[..., :0, :]) for keys, values in expanded])
    for layer, (keys, values) in zip(cache.layers, expanded):
        layer.keys, layer.values = keys, values
    return {"past_key_values": cache}


def _with_prefix(attention_mask: torch.Tensor, shared: int) -> torch.Tensor:
    """The attention mask of rows that continue a shared prefix of `shared` tokens."""
    if not shared:
        return attention_mask
    ones = torch.ones(attention_mask.shape[0], shared, dtype=attention_mask.dtype, device=attention_mask.device)
    return torch.cat([ones, attention_mask], dim=1)


def left_pad(sequences, *, extra_columns: int, device):
    """Left-padded ids and attention mask, with ``extra_columns`` empty columns on the right."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full(
        (len(sequences), width + extra_columns), _FILLER_ID, dtype=torch.long
    )
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(sequences):
        input_ids[row, width - len(ids) : width] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) : width] = 1
    return input_ids.to(device), attention_mask.to(device)
