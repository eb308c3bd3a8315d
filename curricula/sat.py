"""SAT instances with a difficulty knob: Saturn's (n, k, l) generator, and random k-SAT.

Saturn ("SATURN: SAT-based Reinforcement Learning to Unleash Language Model Reasoning",
arXiv:2505.16368) builds CNF formulas around a planted assignment, so every instance is
satisfiable, and measures difficulty with
`D(n, k, l) = log2(k) + 2*log2(l) - n + k/n`, where n = literals per clause,
k = variables and l = clauses (note the order). The published generator is unseeded,
never consults a solver and may repeat formulas; this one is seeded per instance,
counts models exactly with python-sat (up to a cap) and deduplicates.

Two families:
- `planted`: every clause is drawn uniformly among the clauses true under a hidden
  random assignment (Saturn's construction);
- `random`: uniform random n-SAT (hardest near l/k = 4.26 for 3-SAT), kept only when
  python-sat finds it satisfiable.

Item `index` of a stream is built from its own `random.Random`, seeded from a sha256 of
(family, stream, seed, n, k, l, index), so it is the same whatever else is generated.
Only `getrandbits`, `randrange` and `sample` are used, whose outputs for a given seed
CPython keeps stable across versions.

Notation: variables are A, B, C, ... (variable A is integer 1); clauses are joined by
" & ", the literals of a clause are concatenated (OR) and "!" negates, e.g.
`!B!C!D & A!B!D & AB!D`. An assignment is a string of k bits in variable order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import re
from typing import Iterator, Mapping, Sequence

from pysat.solvers import Solver

HELDOUT_SIZE = 20
"""Held-out instances per level: Saturn's 20 per stage, and every task's default (``envs.tasks``)."""

GENERATOR_VERSION = "sat-1"
"""Bumped whenever the same (config, index) would give a different instance."""

VARIABLE_NAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_VARIABLES = len(VARIABLE_NAMES)
FAMILIES = ("planted", "random")
DEFAULT_SOLVER = "minisat22"
DEFAULT_COUNT_CAP = 1000

SATURN_TEST_BUCKETS: tuple[tuple[int, int, int], ...] = (
    (6, 7, 40), (4, 7, 20), (3, 5, 20), (3, 6, 20), (5, 8, 40),
    (3, 5, 25), (3, 7, 20), (4, 7, 40), (4, 8, 40), (3, 7, 40),
)
"""The ten Saturn-2.6k test buckets, in the published order (increasing D)."""

SATURN_TRAIN_STAGES: tuple[tuple[int, int, int], ...] = ((3, 5, 5), (3, 5, 6), (3, 5, 13), (3, 5, 15))
"""Published curriculum stages: (3,5,5) -> (3,5,6) for 1.5B, (3,5,13) -> (3,5,15) for 7B."""

Clause = tuple[int, ...]
Level = tuple[int, int, int]


def difficulty(n: int, k: int, l: int) -> float:
    """Saturn's D(n, k, l) = log2(k) + 2*log2(l) - n + k/n; pass@3 falls about linearly in D."""
    return math.log2(k) + 2 * math.log2(l) - n + k / n


def _levels_by_difficulty(levels: Sequence[Level]) -> list[Level]:
    return sorted(set(levels), key=lambda level: (difficulty(*level), level))


SATURN_LEVELS: list[Level] = _levels_by_difficulty(
    [(3, 5, l) for l in range(5, 16)] + list(SATURN_TEST_BUCKETS)
)
"""Difficulty levels for a curriculum, ordered by D: the (3,5,l) ladder through the
published stages (3,5,5)..(3,5,15), then the test-bucket shapes. Starts at (3,5,5)."""


def max_clauses(n: int, k: int, family: str = "planted") -> int:
    """How many distinct clauses exist: C(k, n) variable sets times the sign patterns
    (all 2^n for random n-SAT; 2^n - 1 when the planted assignment must satisfy it)."""
    patterns = 2**n - 1 if family == "planted" else 2**n
    return math.comb(k, n) * patterns


def check_parameters(n: int, k: int, l: int, family: str = "planted") -> None:
    """Raise ValueError, saying what is allowed, if (n, k, l) cannot give an instance."""
    for name, value in (("n (literals per clause)", n), ("k (variables)", k), ("l (clauses)", l)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if family not in FAMILIES:
        raise ValueError(f"unknown SAT family {family!r}; expected one of {FAMILIES}")
    if k > MAX_VARIABLES:
        raise ValueError(f"k={k} variables, but the notation names at most {MAX_VARIABLES} (A-Z)")
    if n > k:
        raise ValueError(f"n={n} literals per clause needs at least n distinct variables, but k={k}")
    available = max_clauses(n, k, family)
    if l > available:
        raise ValueError(
            f"l={l} distinct clauses requested, but only {available} {family} clauses exist "
            f"with n={n} literals over k={k} variables"
        )


# ---------------------------------------------------------------------------- notation


def clauses_to_text(clauses: Sequence[Sequence[int]]) -> str:
    """Saturn's text form of integer clauses, literal order kept: [[1,-2],[3]] -> "A!B & C"."""
    parts = []
    for clause in clauses:
        if not clause:
            raise ValueError("an empty clause has no text form")
        literals = []
        for literal in clause:
            if not isinstance(literal, int) or literal == 0 or abs(literal) > MAX_VARIABLES:
                raise ValueError(f"literal {literal!r} is not a non-zero integer within ±{MAX_VARIABLES}")
            literals.append(("!" if literal < 0 else "") + VARIABLE_NAMES[abs(literal) - 1])
        parts.append("".join(literals))
    return " & ".join(parts)


_CLAUSE_TEXT = re.compile(r"(?:!?[A-Z])+")
_LITERAL_TEXT = re.compile(r"(!?)([A-Z])")


def text_to_clauses(text: str) -> tuple[Clause, ...]:
    """Integer clauses of Saturn's text form, literal order kept: "A!B & C" -> ((1,-2),(3,))."""
    clauses = []
    for part in text.split("&"):
        part = part.strip()
        if not _CLAUSE_TEXT.fullmatch(part):
            raise ValueError(
                f"clause {part!r} in {text!r} is not a run of literals like A, !B (variables A-Z)"
            )
        clauses.append(
            tuple((-1 if bang else 1) * (ord(name) - ord("A") + 1) for bang, name in _LITERAL_TEXT.findall(part))
        )
    return tuple(clauses)


def canonical_key(clauses: Sequence[Sequence[int]]) -> tuple[Clause, ...]:
    """Order-free identity of a formula: two formulas with the same key are the same CNF."""
    return tuple(sorted({tuple(sorted(set(clause), key=lambda x: (abs(x), x))) for clause in clauses}))


# -------------------------------------------------------------------------- checking


def count_satisfied(clauses: Sequence[Sequence[int]], assignment: str) -> int:
    """Number of clauses true under `assignment` (bit i is variable i+1, "1" = true)."""
    return sum(
        any((assignment[abs(literal) - 1] == "1") == (literal > 0) for literal in clause)
        for clause in clauses
    )


def parse_assignment(text: str | None, k: int) -> str | None:
    """`text` if it is exactly k characters of 0/1, else None (no trimming, no guessing)."""
    if text is None or len(text) != k or set(text) - {"0", "1"}:
        return None
    return text


def check_assignment(clauses: Sequence[Sequence[int]], assignment: str, k: int) -> bool:
    """True iff `assignment` is exactly k bits and satisfies every clause."""
    bits = parse_assignment(assignment, k)
    return bits is not None and count_satisfied(clauses, bits) == len(clauses)


# --------------------------------------------------------------------- model counting


def count_models(
    clauses: Sequence[Sequence[int]], k: int, *, cap: int = DEFAULT_COUNT_CAP, solver: str = DEFAULT_SOLVER
) -> tuple[int, bool, str | None]:
    """(count, capped, one model as bits) over all k variables, counting up to `cap`.

    Enumerates models of the variables that occur in a clause with blocking clauses and
    multiplies by 2 per variable that occurs nowhere (those are free). When the count
    exceeds `cap`, returns (cap, True, model): "at least cap". The model is None when
    the formula is unsatisfiable.
    """
    if cap < 1:
        raise ValueError(f"count cap must be at least 1, got {cap}")
    used = sorted({abs(literal) for clause in clauses for literal in clause})
    if used and used[-1] > k:
        raise ValueError(f"a clause mentions variable {used[-1]}, but k={k}")
    free = k - len(used)
    limit = -(-(cap + 1) // 2**free)  # projected models needed to pass the cap
    count = 0
    first = None
    with Solver(name=solver, bootstrap_with=[list(clause) for clause in clauses]) as sat:
        while count < limit and sat.solve():
            model = sat.get_model()
            if first is None:
                values = {abs(literal): literal > 0 for literal in model}
                first = "".join("1" if values.get(v, False) else "0" for v in range(1, k + 1))
            count += 1
            sat.add_clause([-model[v - 1] for v in used])
    total = count * 2**free
    return (cap, True, first) if total > cap else (total, False, first)


# -------------------------------------------------------------------------- instances


@dataclasses.dataclass(frozen=True)
class SatInstance:
    """One CNF formula with its (n, k, l), how it was made, a known model and its model count."""

    n: int
    k: int
    l: int
    clauses: tuple[Clause, ...]
    solution: str | None
    """A satisfying assignment as k bits (the planted one, or a solver model); None if UNSAT."""
    num_solutions: int
    num_solutions_capped: bool
    """True when the formula has more than `num_solutions` (= the cap) models."""
    family: str = "planted"
    seed: int = 0
    index: int = 0
    stream: str = "train"

    @property
    def formula(self) -> str:
        """Saturn's text form."""
        return clauses_to_text(self.clauses)

    @property
    def difficulty(self) -> float:
        """Saturn's D(n, k, l)."""
        return difficulty(self.n, self.k, self.l)

    @property
    def level(self) -> Level:
        return (self.n, self.k, self.l)

    @property
    def key(self) -> tuple[Clause, ...]:
        """Order-free identity used for deduplication."""
        return canonical_key(self.clauses)

    def count_satisfied(self, assignment: str) -> int:
        return count_satisfied(self.clauses, assignment)

    def is_solution(self, assignment: str) -> bool:
        """True iff `assignment` is exactly k bits that satisfy every clause."""
        return check_assignment(self.clauses, assignment, self.k)

    def to_record(self) -> dict:
        """JSON-ready dict with a fixed key order (benchmark files rely on it)."""
        return {
            "n": self.n,
            "k": self.k,
            "l": self.l,
            "difficulty": self.difficulty,
            "formula": self.formula,
            "clauses": [list(clause) for clause in self.clauses],
            "num_solutions": self.num_solutions,
            "num_solutions_capped": self.num_solutions_capped,
            "solution": self.solution,
            "family": self.family,
            "seed": self.seed,
            "index": self.index,
            "stream": self.stream,
        }

    @classmethod
    def from_record(cls, record: Mapping) -> "SatInstance":
        """Inverse of `to_record`; ValueError, saying what is wrong, unless the record is
        one consistent formula: evaluation files are edited and merged by hand, and a
        clause that silently disagrees with (n, k, l) would corrupt a whole bucket.

        Checked: n, k, l are valid parameters (`check_parameters`); there are exactly l
        clauses, each of exactly n integer literals on distinct variables 1..k; the
        formula text, when present, spells the same clauses. Only n, k, l and clauses
        are required; a missing `num_solutions` reads as -1 (unknown)."""
        if not isinstance(record, Mapping):
            raise ValueError(f"a SAT record is a JSON object, got {type(record).__name__}")
        missing = [name for name in ("n", "k", "l", "clauses") if name not in record]
        if missing:
            raise ValueError(f"SAT record lacks field(s) {missing}; has {sorted(record)}")
        family = record.get("family", "planted")
        n, k, l = record["n"], record["k"], record["l"]
        check_parameters(n, k, l, family=family)
        clauses = _record_clauses(record["clauses"], n, k)
        if len(clauses) != l:
            raise ValueError(f"record has l={l} but {len(clauses)} clauses")
        if "formula" in record:
            formula = record["formula"]
            if not isinstance(formula, str) or text_to_clauses(formula) != clauses:
                raise ValueError(f"record's formula {formula!r} does not match its clauses")
        return cls(
            n=n, k=k, l=l, clauses=clauses,
            solution=record.get("solution"),
            num_solutions=_record_integer(record, "num_solutions", -1),
            num_solutions_capped=bool(record.get("num_solutions_capped", False)),
            family=family,
            seed=_record_integer(record, "seed", 0),
            index=_record_integer(record, "index", 0),
            stream=str(record.get("stream", "train")),
        )


def _record_clauses(clauses, n: int, k: int) -> tuple[Clause, ...]:
    """A record's clauses as tuples, each exactly n integer literals on distinct variables 1..k."""
    if not isinstance(clauses, (list, tuple)):
        raise ValueError(f"clauses must be a list of lists of integers, got {clauses!r}")
    checked = []
    for number, clause in enumerate(clauses, start=1):
        if not isinstance(clause, (list, tuple)) or any(not isinstance(x, int) or isinstance(x, bool) for x in clause):
            raise ValueError(f"clause {number} {clause!r} is not a list of integer literals")
        if len(clause) != n:
            raise ValueError(f"clause {number} {clause!r} has {len(clause)} literals, but n={n}")
        if any(x == 0 or abs(x) > k for x in clause):
            raise ValueError(f"clause {number} {clause!r} has a literal outside ±1..{k} (k={k})")
        if len({abs(x) for x in clause}) != n:
            raise ValueError(f"clause {number} {clause!r} mentions a variable twice")
        checked.append(tuple(clause))
    return tuple(checked)


def _record_integer(record: Mapping, name: str, default: int) -> int:
    value = record.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"record field {name!r} must be an integer, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class SatConfig:
    """Everything that determines a stream of instances.

    family: "planted" (Saturn) or "random" (uniform random n-SAT, kept only if SAT).
    stream: a name that separates independent streams with the same seed (e.g. "test",
        "heldout", "train"), so that splits never share RNG draws.
    unique_solution: keep only instances with exactly one model.
    count_cap: model counting stops above this; `num_solutions_capped` then says so.
    max_rejections: consecutive rejected draws (duplicate, UNSAT, not unique) before
        giving up with an error instead of looping forever.
    """

    n: int = 3
    k: int = 5
    l: int = 5
    seed: int = 0
    family: str = "planted"
    stream: str = "train"
    unique_solution: bool = False
    count_cap: int = DEFAULT_COUNT_CAP
    solver: str = DEFAULT_SOLVER
    max_rejections: int = 10_000

    def validate(self) -> "SatConfig":
        """Raise ValueError with what is expected if this config cannot produce instances."""
        check_parameters(self.n, self.k, self.l, self.family)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.count_cap < (2 if self.unique_solution else 1):
            raise ValueError(f"count_cap={self.count_cap} is too small (unique_solution needs >= 2)")
        if self.max_rejections < 1:
            raise ValueError(f"max_rejections must be positive, got {self.max_rejections}")
        return self

    @property
    def level(self) -> Level:
        return (self.n, self.k, self.l)

    def with_level(self, level: Sequence[int]) -> "SatConfig":
        n, k, l = level
        return dataclasses.replace(self, n=n, k=k, l=l)


def clauses_for_ratio(k: int, ratio: float) -> int:
    """Clause count l for a clause/variable ratio (e.g. 4.26 for hard random 3-SAT)."""
    if ratio <= 0:
        raise ValueError(f"clause/variable ratio must be positive, got {ratio}")
    return max(1, round(ratio * k))


def instance_rng(config: SatConfig, index: int) -> random.Random:
    """The private RNG of item `index`: a sha256 of everything that identifies it."""
    name = f"{GENERATOR_VERSION}/{config.family}/{config.stream}/{config.seed}/{config.n}/{config.k}/{config.l}/{index}"
    return random.Random(int.from_bytes(hashlib.sha256(name.encode()).digest(), "big"))


def _random_clause(rng: random.Random, n: int, k: int) -> Clause:
    variables = sorted(rng.sample(range(1, k + 1), n))
    signs = rng.getrandbits(n)
    return tuple(v if signs >> i & 1 else -v for i, v in enumerate(variables))


def _planted_clause(rng: random.Random, n: int, k: int, planted: str) -> Clause:
    """Uniform among clauses true under `planted`: redraw the signs if all literals are false."""
    variables = sorted(rng.sample(range(1, k + 1), n))
    while True:
        signs = rng.getrandbits(n)
        clause = tuple(v if signs >> i & 1 else -v for i, v in enumerate(variables))
        if any((planted[abs(x) - 1] == "1") == (x > 0) for x in clause):
            return clause


def sample_instance(config: SatConfig, index: int) -> SatInstance:
    """Item `index` of the stream `config` describes; a pure function of its arguments.

    The result may be rejected by `accepts` (an UNSAT random formula, a non-unique one).
    """
    rng = instance_rng(config, index)
    n, k, l = config.level
    planted = None
    if config.family == "planted":
        planted = format(rng.getrandbits(k), f"0{k}b")
    clauses: list[Clause] = []
    seen: set[Clause] = set()
    while len(clauses) < l:
        clause = _planted_clause(rng, n, k, planted) if planted else _random_clause(rng, n, k)
        if clause not in seen:
            seen.add(clause)
            clauses.append(clause)
    count, capped, model = count_models(clauses, k, cap=config.count_cap, solver=config.solver)
    return SatInstance(
        n=n, k=k, l=l, clauses=tuple(clauses),
        solution=planted or model,
        num_solutions=count, num_solutions_capped=capped,
        family=config.family, seed=config.seed, index=index, stream=config.stream,
    )


def accepts(config: SatConfig, instance: SatInstance) -> bool:
    """Whether the stream keeps `instance`: satisfiable, and unique when asked."""
    if instance.num_solutions == 0:
        return False
    return not config.unique_solution or (instance.num_solutions == 1 and not instance.num_solutions_capped)


def generate_instances(
    config: SatConfig, count: int, *, seen: set | None = None, start: int = 0
) -> Iterator[SatInstance]:
    """The first `count` accepted, not-yet-seen instances of the stream, in index order.

    `seen` holds `SatInstance.key`s; it is updated, so passing one set to several calls
    deduplicates across them. Raises RuntimeError after `config.max_rejections`
    consecutive rejections (parameters that cannot yield `count` distinct instances).
    """
    config.validate()
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    seen = set() if seen is None else seen
    made = rejections = 0
    index = start
    while made < count:
        instance = sample_instance(config, index)
        index += 1
        if accepts(config, instance) and instance.key not in seen:
            seen.add(instance.key)
            made += 1
            rejections = 0
            yield instance
            continue
        rejections += 1
        if rejections >= config.max_rejections:
            raise RuntimeError(
                f"only {made} of {count} instances for {config.family} (n,k,l)={config.level}"
                f"{' with a unique solution' if config.unique_solution else ''}: "
                f"{rejections} consecutive draws were duplicates or rejected; "
                "ask for fewer instances or change the parameters"
            )


def heldout_instances(level: Sequence[int], *, size: int = HELDOUT_SIZE, seed: int = 0, count_cap: int = DEFAULT_COUNT_CAP) -> list[SatInstance]:
    """The held-out set a curriculum evaluates at `level`, from its own "heldout" stream.

    A separate stream shares no RNG draws with training, but at small levels two streams
    can still produce the same formula. Disjointness therefore comes from exclusion: a
    trainer builds its SAT env with `exclude=` every held-out set it evaluates on (and
    `load_benchmark_formulas` of any benchmark it reports), and the env never draws an
    excluded formula."""
    config = SatConfig(seed=seed, stream="heldout", count_cap=count_cap).with_level(level)
    return list(generate_instances(config, size))


# ------------------------------------------------------------------ benchmark folders

BENCHMARK_MANIFEST = "manifest.json"
"""The index `benchmarks.generate` writes beside its JSONL files (format documented there)."""
TRAINING_SPLIT = "train"
"""The one split a trainer may draw from; every other split of a benchmark is evaluation."""


def load_benchmark_formulas(folder: str) -> list[SatInstance]:
    """Every instance of the evaluation files (test, held-out: all splits but "train") of
    a folder written by `benchmarks.generate`, for `envs.make("sat", exclude=...)`.

    Files are found through the folder's manifest and must match its sha256, so an
    edited or truncated file cannot quietly let test formulas into training. Raises
    ValueError naming the file (and line) that is missing, altered or malformed.
    """
    import json  # the only file I/O in this module
    import os

    manifest_path = os.path.join(folder, BENCHMARK_MANIFEST)
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            files = json.load(handle)["files"]
        if not all(isinstance(entry, dict) for entry in files.values()):
            raise TypeError("every file entry must be an object")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{manifest_path}: not a readable benchmark manifest ({error})") from None
    instances = []
    for name, entry in sorted(files.items()):
        if entry.get("split") == TRAINING_SPLIT:
            continue
        if os.path.basename(name) != name or name.startswith("."):
            raise ValueError(f"{manifest_path} lists {name!r}, which is not a plain file name")
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise ValueError(f"cannot read {path}: {error.strerror}") from None
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise ValueError(f"{path} does not match the sha256 in {manifest_path}; regenerate the benchmark")
        for number, line in enumerate(data.splitlines(), start=1):
            try:
                instances.append(SatInstance.from_record(json.loads(line)))
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
    return instances
