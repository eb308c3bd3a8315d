"""The unbiased pass@k estimator and its aggregation per bucket.

With n samples of which c are correct, pass@k = 1 - C(n-c, k) / C(n, k): the chance
that k samples drawn without replacement contain a correct one. The ratio of binomials
is computed as the product prod_{i=n-c+1}^{n} (1 - k/i), which neither overflows nor
loses precision the way the factorials would.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Mapping, Sequence

STANDARD_KS = (1, 3, 5, 7, 10)
"""The k values Saturn reports (with 12 samples per problem)."""


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 - C(n - c, k) / C(n, k)."""
    n, c = num_samples, num_correct
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= correct <= samples, got correct={c}, samples={n}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= samples, got k={k}, samples={n}")
    if n - c < k:
        return 1.0
    remaining = 1.0
    for i in range(n - c + 1, n + 1):
        remaining *= 1.0 - k / i
    return 1.0 - remaining


def usable_ks(num_samples: int, ks: Sequence[int] = STANDARD_KS) -> list[int]:
    """The ks that n samples can estimate (k <= n)."""
    return [k for k in ks if k <= num_samples]


def mean_pass_at_k(counts: Iterable[tuple[int, int]], ks: Sequence[int]) -> dict[int, float]:
    """{k: mean pass@k} over problems given as (samples, correct) pairs."""
    counts = list(counts)
    if not counts:
        raise ValueError("no problems to aggregate")
    return {k: sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in ks}


def pass_at_k_by_bucket(
    results: Mapping[Hashable, Sequence[tuple[int, int]]], ks: Sequence[int]
) -> tuple[dict[Hashable, dict[int, float]], dict[int, float]]:
    """(per-bucket {k: pass@k}, overall {k: pass@k}); overall weighs every problem equally."""
    per_bucket = {bucket: mean_pass_at_k(counts, ks) for bucket, counts in results.items()}
    overall = mean_pass_at_k((pair for counts in results.values() for pair in counts), ks)
    return per_bucket, overall
