"""pyproject.toml and requirements/lock.txt must agree; refresh the lock with `bash scripts/lock.sh`.

The lock pins every package (transitive ones too) that scripts/setup.sh installs; its header
records a sha256 of the dependency part of pyproject.toml. `python tests/test_lock.py digest`
prints that sha256 (scripts/lock.sh writes it into the header), so the test and the script
compute it in one place.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements" / "lock.txt"
NO_DEPS = ROOT / "requirements" / "no-deps.txt"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"

# Extras compiled into the lock (scripts/lock.sh passes the same list to pip-compile).
LOCKED_EXTRAS = ("train", "dev", "distributed", "openrlhf-light")
# Extras whose packages setup.sh installs with --no-deps from requirements/no-deps.txt.
NO_DEPS_EXTRAS = ("openrlhf",)
TORCH = "2.13.0+cpu"
# openrlhf's own dependencies that must stay out of the lock (heavy or CUDA-only).
NEVER_LOCKED = ("openrlhf", "deepspeed", "flash-attn", "vllm")
REFRESH = "run `bash scripts/lock.sh` to refresh requirements/lock.txt"
DIGEST_LINE = re.compile(r"^# pyproject-deps-sha256: ([0-9a-f]{64})$", re.MULTILINE)


def deps_digest(pyproject: Path = PYPROJECT) -> str:
    """sha256 of what the lock is compiled from: requires-python, dependencies, optional-dependencies."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    relevant = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
    }
    canonical = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a `name==version` file; any other non-comment line fails."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    bad = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            req = Requirement(line)
        except Exception:
            bad.append(f"{path.name}:{number}: {raw!r}")
            continue
        specs = list(req.specifier)
        if req.extras or req.marker or req.url or len(specs) != 1 or specs[0].operator != "==":
            bad.append(f"{path.name}:{number}: {raw!r}")
            continue
        name = canonicalize_name(req.name)
        assert name not in pins, f"{path.name}:{number}: {req.name} is pinned twice"
        pins[name] = specs[0].version
    assert not bad, "lines that are not `name==version`:\n" + "\n".join(bad) + f"\n{REFRESH}"
    return pins


def _project():
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def _unsatisfied(requirements, pins):
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project_name = canonicalize_name(_project()["name"])
    problems = []
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == project_name:  # a self-reference such as selfplay-suite[openrlhf-light]
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if name not in pins:
            problems.append(f"{text}: not in the lock")
        elif not req.specifier.contains(Version(pins[name]), prereleases=True):
            problems.append(f"{text}: the lock has {pins[name]}")
    return problems


def test_lock_header_matches_pyproject():
    text = LOCK.read_text(encoding="utf-8")
    found = DIGEST_LINE.search(text)
    assert found, f"requirements/lock.txt has no '# pyproject-deps-sha256:' line; {REFRESH}"
    assert found.group(1) == deps_digest(), (
        "pyproject.toml's dependencies changed since requirements/lock.txt was compiled; " + REFRESH
    )


def test_every_lock_line_is_pinned():
    pins = read_pins(LOCK)
    assert len(pins) > 50, "the lock should hold the whole dependency set, transitive ones too"
    read_pins(NO_DEPS)


def test_torch_is_the_cpu_build():
    pins = read_pins(LOCK)
    assert pins.get("torch") == TORCH, f"torch must be locked at {TORCH} (the CPU build), got {pins.get('torch')}"
    assert read_pins(CONSTRAINTS).get("torch") == TORCH, f"requirements/constraints.txt must hold torch=={TORCH}"


def test_pyproject_requirements_are_in_the_lock():
    project = _project()
    pins = read_pins(LOCK)
    problems = [f"[project.dependencies] {p}" for p in _unsatisfied(project["dependencies"], pins)]
    extras = project["optional-dependencies"]
    for extra in LOCKED_EXTRAS:
        assert extra in extras, f"extra {extra!r} (locked by scripts/lock.sh) is missing from pyproject.toml"
    for extra, requirements in extras.items():
        if extra not in NO_DEPS_EXTRAS:
            problems += [f"[{extra}] {p}" for p in _unsatisfied(requirements, pins)]
    assert not problems, "pyproject.toml and requirements/lock.txt disagree:\n" + "\n".join(problems) + f"\n{REFRESH}"


def test_no_deps_packages_match_pyproject_and_stay_out_of_the_lock():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = read_pins(LOCK)
    no_deps = read_pins(NO_DEPS)
    leaked = [name for name in NEVER_LOCKED if name in pins]
    assert not leaked, f"{leaked} must not be in the lock (openrlhf is installed with --no-deps); {REFRESH}"
    project_name = canonicalize_name(_project()["name"])
    for extra in NO_DEPS_EXTRAS:
        for text in _project()["optional-dependencies"][extra]:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            if name == project_name:
                continue
            assert name in no_deps, f"[{extra}] {text}: add it to requirements/no-deps.txt"
            assert str(req.specifier) == f"=={no_deps[name]}", (
                f"[{extra}] {text} and requirements/no-deps.txt ({name}=={no_deps[name]}) disagree"
            )
    overlap = sorted(set(no_deps) & set(pins))
    assert not overlap, f"{overlap} are both in the lock and in requirements/no-deps.txt"


if __name__ == "__main__":
    if sys.argv[1:] == ["digest"]:
        print(deps_digest())
    else:
        sys.exit("usage: python tests/test_lock.py digest")
