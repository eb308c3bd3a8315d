"""Generate difficulty-controlled benchmark sets: `python -m benchmarks.generate sat ...`.

    python -m benchmarks.generate sat --preset saturn-2.6k --seed 0 --out DIR
    python -m benchmarks.generate sat --buckets "3,5,20;4,7,40" --per-bucket 50 --out DIR
    python -m benchmarks.generate sat --difficulty 9:10 --per-bucket 20 --out DIR

Every file is JSONL, one instance per line; DIR/manifest.json records the generator
version, the full parameters, the counts and a sha256 per file. Output is a pure
function of the arguments: the same command gives byte-identical files (no timestamps,
fixed key order, instances from per-item RNGs). No formula appears twice across the
files of one run: files are generated in a fixed order (test, held-out, train) against
one shared set of seen formulas, so a test formula is never also a training formula.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from typing import Sequence

from tqdm import tqdm

from curricula.sat import (
    FAMILIES,
    GENERATOR_VERSION,
    SATURN_TEST_BUCKETS,
    SATURN_TRAIN_STAGES,
    SatConfig,
    check_parameters,
    clauses_for_ratio,
    difficulty,
    generate_instances,
    max_clauses,
)

Level = tuple[int, int, int]

SATURN_TEST_SIZE = 100
SATURN_HELDOUT_SIZE = 20
SATURN_TRAIN_SIZES = {(3, 5, 5): 250, (3, 5, 6): 250, (3, 5, 13): 500, (3, 5, 15): 500}
PRESETS = ("saturn-2.6k",)

CANDIDATE_BUCKETS: list[Level] = sorted(
    (
        (n, k, l)
        for n in range(3, 7)
        for k in range(n + 1, 11)
        for l in (5, 10, 15, 20, 25, 30, 40, 50, 60)
        if l <= max_clauses(n, k)
    ),
    key=lambda level: (difficulty(*level), level),
)
"""Where `--difficulty A:B` picks buckets when no `--buckets` are given."""


@dataclasses.dataclass(frozen=True)
class FilePlan:
    """One output file: its split (also the RNG stream name) and (level, count) buckets."""

    name: str
    split: str
    buckets: tuple[tuple[Level, int], ...]


def saturn_plan() -> list[FilePlan]:
    """Saturn-2.6k: ten test buckets x 100, and per training stage train + 20 held-out."""
    plan = [FilePlan("test.jsonl", "test", tuple((b, SATURN_TEST_SIZE) for b in SATURN_TEST_BUCKETS))]
    for split in ("heldout", "train"):
        for stage in SATURN_TRAIN_STAGES:
            size = SATURN_HELDOUT_SIZE if split == "heldout" else SATURN_TRAIN_SIZES[stage]
            plan.append(FilePlan(f"{split}_{'_'.join(map(str, stage))}.jsonl", split, ((stage, size),)))
    return plan


def generate_files(
    plan: Sequence[FilePlan], out: str, base: SatConfig, *, progress: bool = True
) -> dict[str, dict]:
    """Write every file of `plan` under `out`; {file name: manifest entry}."""
    os.makedirs(out, exist_ok=True)
    seen: set = set()
    entries = {}
    for file in plan:
        total = sum(count for _, count in file.buckets)
        lines = []
        with tqdm(total=total, desc=file.name, unit="inst", disable=not progress, file=sys.stderr) as bar:
            for level, count in file.buckets:
                config = dataclasses.replace(base, stream=file.split).with_level(level)
                for position, instance in enumerate(generate_instances(config, count, seen=seen)):
                    n, k, l = level
                    record = {"id": f"{file.split}-{n}_{k}_{l}-{position:04d}", "split": file.split}
                    record.update(instance.to_record())
                    lines.append(json.dumps(record) + "\n")
                    bar.update()
        data = "".join(lines).encode("utf-8")
        with open(os.path.join(out, file.name), "wb") as handle:
            handle.write(data)
        entries[file.name] = {
            "split": file.split,
            "count": total,
            "sha256": hashlib.sha256(data).hexdigest(),
            "buckets": [
                {"n": n, "k": k, "l": l, "difficulty": difficulty(n, k, l), "count": count}
                for (n, k, l), count in file.buckets
            ],
        }
    return entries


def write_manifest(out: str, parameters: dict, files: dict[str, dict]) -> dict:
    manifest = {
        "task": "sat",
        "generator": "curricula.sat",
        "generator_version": GENERATOR_VERSION,
        "parameters": parameters,
        "total": sum(entry["count"] for entry in files.values()),
        "files": files,
    }
    with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ------------------------------------------------------------------------------ CLI


def parse_buckets(text: str, ratio: float | None) -> list[Level]:
    """"3,5,20;4,7,40" -> [(3,5,20), (4,7,40)]; with a ratio, entries are "n,k" and l = ratio*k."""
    buckets = []
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        try:
            numbers = [int(x) for x in entry.split(",")]
        except ValueError:
            raise ValueError(f"bucket {entry!r} is not comma-separated integers") from None
        if ratio is not None:
            if len(numbers) != 2:
                raise ValueError(f"with --ratio a bucket is 'n,k', got {entry!r}")
            numbers.append(clauses_for_ratio(numbers[1], ratio))
        elif len(numbers) != 3:
            raise ValueError(f"a bucket is 'n,k,l' (literals per clause, variables, clauses), got {entry!r}")
        buckets.append(tuple(numbers))
    if not buckets:
        raise ValueError(f"no buckets in {text!r}; expected e.g. '3,5,20;4,7,40'")
    return buckets


def parse_range(text: str) -> tuple[float, float]:
    """"9:10" -> (9.0, 10.0); either end may be empty ("9:" or ":10")."""
    low, sep, high = text.partition(":")
    if not sep:
        raise ValueError(f"--difficulty expects A:B (e.g. 9:10), got {text!r}")
    try:
        bounds = (float(low) if low.strip() else float("-inf"), float(high) if high.strip() else float("inf"))
    except ValueError:
        raise ValueError(f"--difficulty bounds must be numbers, got {text!r}") from None
    if bounds[0] > bounds[1]:
        raise ValueError(f"--difficulty range {text!r} is empty (A > B)")
    return bounds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=__doc__.split("\n")[0])
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    sat = tasks.add_parser("sat", help="SAT formulas by Saturn's (n, k, l)")
    sat.add_argument("--out", required=True, help="output directory")
    sat.add_argument("--seed", type=int, default=0)
    sat.add_argument("--preset", choices=PRESETS, help="a published benchmark structure")
    sat.add_argument("--buckets", help='custom buckets "n,k,l;n,k,l" (n literals/clause, k variables, l clauses)')
    sat.add_argument("--difficulty", help="keep buckets with A <= D(n,k,l) <= B, e.g. 9:10")
    sat.add_argument("--per-bucket", type=int, default=100, help="instances per custom bucket (default 100)")
    sat.add_argument("--split", default="test", help="split name of a custom set (file SPLIT.jsonl)")
    sat.add_argument("--family", choices=FAMILIES, default="planted")
    sat.add_argument("--ratio", type=float, help="random family: l = round(ratio * k); buckets are 'n,k'")
    sat.add_argument("--unique-solution", action="store_true", help="keep only formulas with one model")
    sat.add_argument("--count-cap", type=int, default=SatConfig.count_cap, help="model counting cap")
    sat.add_argument("--no-progress", action="store_true")
    return parser


def sat_plan(args: argparse.Namespace) -> list[FilePlan]:
    """The files the arguments ask for; ValueError for contradictory or empty choices."""
    if args.preset:
        if args.buckets or args.difficulty or args.ratio is not None:
            raise ValueError("--preset fixes the buckets; drop --buckets/--difficulty/--ratio")
        if args.family != "planted":
            raise ValueError("the saturn-2.6k preset is the planted family")
        return saturn_plan()
    if args.ratio is not None and args.family != "random":
        raise ValueError("--ratio applies to --family random")
    if not args.buckets and not args.difficulty:
        raise ValueError("choose --preset, --buckets or --difficulty")
    if args.per_bucket < 1:
        raise ValueError(f"--per-bucket must be positive, got {args.per_bucket}")
    if args.ratio is not None and not args.buckets:
        raise ValueError("--ratio needs --buckets 'n,k;...'")
    buckets = parse_buckets(args.buckets, args.ratio) if args.buckets else CANDIDATE_BUCKETS
    if args.difficulty:
        low, high = parse_range(args.difficulty)
        buckets = [b for b in buckets if low <= difficulty(*b) <= high]
        if not buckets:
            raise ValueError(f"no bucket has D in {args.difficulty}")
    for bucket in buckets:
        check_parameters(*bucket, family=args.family)
    if len(set(buckets)) != len(buckets):
        raise ValueError("a bucket is listed twice")
    return [FilePlan(f"{args.split}.jsonl", args.split, tuple((b, args.per_bucket) for b in buckets))]


def run_sat(args: argparse.Namespace) -> dict:
    plan = sat_plan(args)
    base = SatConfig(
        seed=args.seed, family=args.family, unique_solution=args.unique_solution, count_cap=args.count_cap
    ).validate()
    parameters = {
        "preset": args.preset,
        "buckets": args.buckets,
        "difficulty": args.difficulty,
        "per_bucket": None if args.preset else args.per_bucket,
        "split": None if args.preset else args.split,
        "ratio": args.ratio,
        **{name: value for name, value in dataclasses.asdict(base).items() if name not in ("n", "k", "l", "stream")},
    }
    files = generate_files(plan, args.out, base, progress=not args.no_progress)
    return write_manifest(args.out, parameters, files)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        manifest = run_sat(args)
    except (ValueError, RuntimeError) as error:
        parser.error(str(error))
    print(f"wrote {manifest['total']} instances in {len(manifest['files'])} file(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
