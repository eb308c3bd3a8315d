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

The saturn-2.6k preset has the published 2,660 instances: 1,000 test (ten buckets x 100),
1,500 train (250, 250, 500, 500 over the stages (3,5,5), (3,5,6), (3,5,13), (3,5,15)) and
160 held-out, 40 per stage in two roles: `heldout_<stage>.jsonl` (20, the set whose
pass@1 gates the curriculum, like `curricula.sat.heldout_instances` at the same seed)
and `heldout_eval_<stage>.jsonl` (20, the stage's own evaluation set, never used for
training or for the gate). Each manifest entry states its file's role.
`curricula.sat.load_benchmark_formulas(DIR)` returns every non-training instance, for a
trainer to exclude.

The output folder is never left half-written and never loses a file this tool did not
write: everything is written and fsynced in a hidden sibling folder, then moved into
`--out`. A non-empty `--out` is refused unless `--overwrite` is given; then exactly the
files the previous run's manifest lists (and the manifest) are replaced, other files
stay. A non-empty folder without a manifest is refused even with `--overwrite`, unless
every file in it is one this run writes (an earlier run killed while moving files in).
A failure leaves `--out` as it was; a run killed outright can leave a hidden
`.NAME.*.partial` (or `.NAME.*.old`, holding the previous outputs) sibling behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Sequence

from tqdm import tqdm

from curricula.sat import (
    BENCHMARK_MANIFEST,
    FAMILIES,
    GENERATOR_VERSION,
    SATURN_TEST_BUCKETS,
    SATURN_TRAIN_STAGES,
    TRAINING_SPLIT,
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
"""Per stage and held-out role: 20 gate the curriculum, 20 more evaluate the stage."""
SATURN_TRAIN_SIZES = {(3, 5, 5): 250, (3, 5, 6): 250, (3, 5, 13): 500, (3, 5, 15): 500}
SATURN_STAGE_ROLES = {
    "heldout": "held-out: pass@1 here decides when the curriculum leaves this stage",
    "heldout_eval": "held-out: this stage's evaluation set, never used for training or the gate",
    TRAINING_SPLIT: "training instances of this curriculum stage",
}
"""Per training stage, in generation order: evaluation sets first, so that deduplication
can only ever drop a training formula."""
SATURN_TEST_ROLE = "test: ten buckets of increasing D, 100 instances each"
CUSTOM_ROLE = "custom buckets (--buckets / --difficulty)"
PRESETS = ("saturn-2.6k",)
SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A split is a plain name (it names a file inside --out), e.g. test or heldout_a."""

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
    """One output file: its split (also the RNG stream name), (level, count) buckets and
    its role, a sentence the manifest records."""

    name: str
    split: str
    buckets: tuple[tuple[Level, int], ...]
    role: str


def saturn_plan() -> list[FilePlan]:
    """Saturn-2.6k: ten test buckets x 100, then per training stage 20 held-out (gate),
    20 held-out (evaluation) and the training set; 2,660 instances in all."""
    test_buckets = tuple((bucket, SATURN_TEST_SIZE) for bucket in SATURN_TEST_BUCKETS)
    plan = [FilePlan("test.jsonl", "test", test_buckets, SATURN_TEST_ROLE)]
    for split, role in SATURN_STAGE_ROLES.items():
        for stage in SATURN_TRAIN_STAGES:
            size = SATURN_TRAIN_SIZES[stage] if split == TRAINING_SPLIT else SATURN_HELDOUT_SIZE
            plan.append(FilePlan(f"{split}_{'_'.join(map(str, stage))}.jsonl", split, ((stage, size),), role))
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
            "role": file.role,
            "count": total,
            "sha256": hashlib.sha256(data).hexdigest(),
            "buckets": [
                {"n": n, "k": k, "l": l, "difficulty": difficulty(n, k, l), "count": count}
                for (n, k, l), count in file.buckets
            ],
        }
    return entries


def write_manifest(out: str, parameters: dict, files: dict[str, dict]) -> dict:
    """Write DIR/manifest.json (generator, parameters, counts, per-file role and sha256)."""
    manifest = {
        "task": "sat",
        "generator": "curricula.sat",
        "generator_version": GENERATOR_VERSION,
        "parameters": parameters,
        "total": sum(entry["count"] for entry in files.values()),
        "files": files,
    }
    with open(os.path.join(out, BENCHMARK_MANIFEST), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(manifest, indent=2) + "\n")
    return manifest


# --------------------------------------------------------------------- output folder


def previous_outputs(out: str) -> set[str]:
    """The names an earlier run wrote in `out`: its manifest's files and the manifest.

    ValueError if the manifest cannot be read or names anything but a plain file name,
    since its list decides what gets deleted."""
    path = os.path.join(out, BENCHMARK_MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            names = set(json.load(handle)["files"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a manifest this tool wrote ({error}); move it away or use another --out") from None
    for name in names:
        if not isinstance(name, str) or os.path.basename(name) != name or name.startswith("."):
            raise ValueError(f"{path} lists {name!r}, which is not a plain file name; refusing to replace it")
    return names | {BENCHMARK_MANIFEST}


def outputs_to_replace(out: str, plan: Sequence[FilePlan], overwrite: bool) -> list[str]:
    """The files in `out` this run replaces (see the module docstring for the rules);
    ValueError, before anything is generated, if writing there could destroy a file
    this tool did not write."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} exists and is not a directory")
    present = set(os.listdir(out)) if os.path.isdir(out) else set()
    if not present:
        return []
    if not overwrite:
        raise ValueError(
            f"--out {out!r} is not empty; pass --overwrite to replace the files an earlier run wrote there "
            "(files its manifest does not list are kept)"
        )
    new = {file.name for file in plan} | {BENCHMARK_MANIFEST}
    if BENCHMARK_MANIFEST in present:
        old = previous_outputs(out) & present
    elif present <= new:
        old = present
    else:
        raise ValueError(
            f"--out {out!r} has no {BENCHMARK_MANIFEST}, so nothing says which of its files an earlier run "
            f"wrote; refusing to write among {sorted(present - new)[:5]}; choose an empty or new folder"
        )
    kept_but_clobbered = (new & present) - old
    if kept_but_clobbered:
        raise ValueError(
            f"this run writes {sorted(kept_but_clobbered)}, which exist in {out!r} but are not listed "
            "in its manifest; move them away or choose another --out"
        )
    return sorted(old)


def fsync_directory(path: str) -> None:
    """Make the names in directory `path` (created, renamed) survive a crash."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_folder(folder: str) -> None:
    """fsync every file of `folder` and the folder itself, so that the rename that
    publishes them can never expose unwritten data after a crash."""
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as handle:
            os.fsync(handle.fileno())
    fsync_directory(folder)


def install(staging: str, out: str, replaced: Sequence[str]) -> None:
    """Move the finished files of `staging` into `out`, replacing `replaced`.

    A new `out` is one atomic rename. Into an existing folder, files move one by one:
    the old manifest leaves first and the new one arrives last, so a half-moved folder
    never has a manifest that describes other files; the old outputs wait in a hidden
    sibling and are put back if any move fails."""
    parent = os.path.dirname(out)
    if not os.path.lexists(out):
        os.rename(staging, out)
        fsync_directory(parent)
        return
    backup = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".old", dir=parent)
    moved_out, moved_in = [], []
    try:
        for name in sorted(replaced, key=lambda name: name != BENCHMARK_MANIFEST):
            os.rename(os.path.join(out, name), os.path.join(backup, name))
            moved_out.append(name)
        for name in sorted(os.listdir(staging), key=lambda name: name == BENCHMARK_MANIFEST):
            os.rename(os.path.join(staging, name), os.path.join(out, name))
            moved_in.append(name)
    except BaseException:
        for name in reversed(moved_in):
            os.rename(os.path.join(out, name), os.path.join(staging, name))
        for name in reversed(moved_out):
            os.rename(os.path.join(backup, name), os.path.join(out, name))
        os.rmdir(backup)
        raise
    fsync_directory(out)
    shutil.rmtree(backup)


def write_benchmark(
    plan: Sequence[FilePlan], out: str, base: SatConfig, parameters: dict, *,
    overwrite: bool = False, progress: bool = True,
) -> dict:
    """Generate `plan` with its manifest into `out`, all or nothing; the manifest."""
    out = os.path.realpath(out)
    replaced = outputs_to_replace(out, plan, overwrite)
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".partial", dir=parent)
    except OSError as error:
        raise ValueError(f"cannot write next to --out {out!r}: {error.strerror}") from None
    try:
        manifest = write_manifest(staging, parameters, generate_files(plan, staging, base, progress=progress))
        sync_folder(staging)
        install(staging, out, replaced)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
    sat.add_argument("--out", required=True, help="output directory (new or empty, unless --overwrite)")
    sat.add_argument(
        "--overwrite", action="store_true",
        help="replace the files an earlier run wrote in --out (as its manifest lists); others are kept",
    )
    sat.add_argument("--seed", type=int, default=0)
    sat.add_argument("--preset", choices=PRESETS, help="a published benchmark structure")
    sat.add_argument("--buckets", help='custom buckets "n,k,l;n,k,l" (n literals/clause, k variables, l clauses)')
    sat.add_argument("--difficulty", help="keep buckets with A <= D(n,k,l) <= B, e.g. 9:10")
    sat.add_argument("--per-bucket", type=int, default=100, help="instances per custom bucket (default 100)")
    sat.add_argument("--split", default="test", help="split name of a custom set, e.g. test or heldout_a (file SPLIT.jsonl)")
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
    if not SPLIT_NAME.fullmatch(args.split):
        raise ValueError(
            f"--split {args.split!r} must be a plain name of letters, digits, '_' or '-' "
            "(e.g. test or heldout_a), not a path"
        )
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
    return [FilePlan(f"{args.split}.jsonl", args.split, tuple((b, args.per_bucket) for b in buckets), CUSTOM_ROLE)]


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
    return write_benchmark(plan, args.out, base, parameters, overwrite=args.overwrite, progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        manifest = run_sat(args)
    except (ValueError, RuntimeError, OSError) as error:  # OSError: e.g. a full disk while writing
        parser.error(str(error))
    print(f"wrote {manifest['total']} instances in {len(manifest['files'])} file(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
