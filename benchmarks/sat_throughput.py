"""SAT generation throughput: `python -m benchmarks.sat_throughput` prints one JSON line.

Instances per second (planted generation with exact model counting) for every Saturn
bucket (the ten test buckets and the four training stages), and the wall time of
writing the whole saturn-2.6k preset, against the 30 s target. No published peer exists
to compare with: Saturn's own generator neither counts models nor deduplicates.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from benchmarks.generate import saturn_plan, generate_files
from curricula.sat import SATURN_TEST_BUCKETS, SATURN_TRAIN_STAGES, SatConfig, difficulty, generate_instances

TARGET_PRESET_SECONDS = 30.0


def bucket_rate(level: tuple[int, int, int], count: int, seed: int) -> float:
    """Instances per second for `count` deduplicated, model-counted instances at `level`."""
    config = SatConfig(seed=seed, stream="throughput").with_level(level)
    start = time.perf_counter()
    made = sum(1 for _ in generate_instances(config, count))
    return made / (time.perf_counter() - start)


def preset_seconds(seed: int) -> float:
    """Wall time to write every saturn-2.6k file (and hash it) into a scratch directory."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        generate_files(saturn_plan(), out, SatConfig(seed=seed), progress=False)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sat_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--per-bucket", type=int, default=200, help="instances timed per bucket")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    buckets = [
        {"bucket": ",".join(map(str, level)), "difficulty": round(difficulty(*level), 2),
         "instances_per_s": round(bucket_rate(level, args.per_bucket, args.seed), 1)}
        for level in SATURN_TEST_BUCKETS + SATURN_TRAIN_STAGES
    ]
    wall = preset_seconds(args.seed)
    result = {
        "benchmark": "sat_throughput",
        "solver": SatConfig.solver,
        "count_cap": SatConfig.count_cap,
        "per_bucket": args.per_bucket,
        "buckets": buckets,
        "preset": "saturn-2.6k",
        "preset_instances": sum(count for file in saturn_plan() for _, count in file.buckets),
        "preset_wall_s": round(wall, 3),
        "target_wall_s": TARGET_PRESET_SECONDS,
        "meets_target": wall < TARGET_PRESET_SECONDS,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
