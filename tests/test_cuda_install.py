"""The CUDA install (`bash scripts/setup.sh --cuda`) and its lock, checked on a CPU machine.

requirements/cuda-lock.txt (compiled by `bash scripts/lock-cuda.sh` from requirements/cuda.in
and pyproject.toml) must pin what cuda.in asks for, torch as PyPI's CUDA build that
vllm==0.29.0 pins, and, together with requirements/cuda-no-build-isolation.txt (deepspeed,
flash-attn), everything that the installed openrlhf 0.11.2's metadata requires. Nothing here
installs anything: the real install downloads several GB and compiles flash-attn.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"
CUDA_IN = REQ / "cuda.in"
CUDA_LOCK = REQ / "cuda-lock.txt"
CUDA_CONSTRAINTS = REQ / "cuda-constraints.txt"
NO_BUILD_ISOLATION = REQ / "cuda-no-build-isolation.txt"
NO_DEPS = REQ / "no-deps.txt"
REFRESH = "run `bash scripts/lock-cuda.sh` to refresh requirements/cuda-lock.txt"

OPENRLHF = "0.11.2"
# vllm==0.29.0's metadata pins torch==2.13.0; PyPI's Linux x86_64 wheel of it is the CUDA 13
# build, whose own requirements bring these (so their presence shows the CUDA build was resolved).
VLLM = "0.29.0"
VLLM_TORCH = "2.13.0"
CUDA_TORCH_DEPS = ("cuda-toolkit", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "triton")
# Extras of pyproject.toml compiled into the CUDA lock (scripts/lock-cuda.sh: EXTRAS).
CUDA_LOCKED_EXTRAS = ("train", "dev", "distributed", "openrlhf-light")
# Installed after the lock, pinned, without build isolation and without dependencies.
BUILT = {"deepspeed": "0.19.6", "flash-attn": "2.8.3"}
# What deepspeed 0.19.6 and flash-attn 2.8.3 need at run time (their sdists' requirements, plus
# nvidia-ml-py on CUDA machines) and to build without isolation (flash-attn's setup_requires,
# setuptools and wheel for bdist_wheel): they must come from the lock.
BUILT_NEEDS = ("einops", "hjson", "msgpack", "ninja", "numpy", "nvidia-ml-py", "packaging", "psutil",
               "py-cpuinfo", "pydantic", "setuptools", "torch", "tqdm", "wheel")


def read_pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a file of `name==version` lines (comments aside); anything else fails."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert not (req.extras or req.marker or req.url) and len(specs) == 1 and specs[0].operator == "==", (
            f"{path.name}:{number}: {raw!r} is not `name==version`; {REFRESH}")
        name = canonicalize_name(req.name)
        assert name not in pins, f"{path.name}:{number}: {req.name} is pinned twice"
        pins[name] = specs[0].version
    return pins


def read_requirements(path: Path) -> list[Requirement]:
    return [Requirement(line) for raw in path.read_text(encoding="utf-8").splitlines()
            if (line := raw.split("#", 1)[0].strip())]


def unsatisfied(requirements, pins, extras=("",)) -> list[str]:
    """The requirements (markers evaluated for this machine with each of extras) that pins do not meet."""
    problems = []
    for req in requirements:
        req = req if isinstance(req, Requirement) else Requirement(req)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req}: not pinned")
        elif not req.specifier.contains(Version(pins[name]), prereleases=True):
            problems.append(f"{req}: pinned at {pins[name]}")
    return problems


@pytest.fixture(scope="module")
def lock() -> dict[str, str]:
    pins = read_pins(CUDA_LOCK)
    assert len(pins) > 150, "the CUDA lock should hold the whole dependency set, transitive ones too"
    return pins


def test_lock_header_names_its_sources_and_refresh_command():
    text = CUDA_LOCK.read_text(encoding="utf-8")
    assert "requirements/cuda.in" in text and "bash scripts/lock-cuda.sh" in text
    assert "+cpu" not in text, "the CUDA lock holds a CPU build"
    script = (ROOT / "scripts" / "lock-cuda.sh").read_text(encoding="utf-8")
    extras = re.search(r"^EXTRAS=\(([^)]*)\)", script, re.MULTILINE)
    assert extras and tuple(extras.group(1).split()) == CUDA_LOCKED_EXTRAS


def test_every_top_level_requirement_is_pinned_as_cuda_in_asks(lock):
    requirements = read_requirements(CUDA_IN)
    assert unsatisfied(requirements, lock) == [], REFRESH
    exact = {canonicalize_name(r.name): next(iter(r.specifier)).version
             for r in requirements if len(r.specifier) == 1 and next(iter(r.specifier)).operator == "=="}
    assert exact["vllm"] == VLLM and exact["torch"] == VLLM_TORCH
    assert {name: lock[name] for name in exact} == exact


def test_torch_is_the_cuda_build_vllm_pins(lock):
    assert lock["torch"] == VLLM_TORCH, f"torch must be {VLLM_TORCH} (vllm=={VLLM} pins it), got {lock['torch']}"
    assert Version(lock["torch"]).local is None
    missing = [name for name in CUDA_TORCH_DEPS if name not in lock]
    assert not missing, f"{missing}: the CUDA build of torch requires them; was a CPU torch resolved? {REFRESH}"
    assert lock["vllm"] == VLLM


def test_constraint_takes_the_cuda_torch_and_never_a_local_cpu_build(lock):
    constraints = [Requirement(line) for line in CUDA_CONSTRAINTS.read_text(encoding="utf-8").splitlines()
                   if line.strip() and not line.startswith("#")]
    assert [str(r) for r in constraints] == [f"torch==={lock['torch']}"]
    spec = constraints[0].specifier
    assert spec.contains(Version(lock["torch"]))
    assert not spec.contains(Version(f"{lock['torch']}+cpu"))
    # Why `===`: a plain `==` pin also matches the local build, which pip would prefer.
    assert SpecifierSet(f"=={lock['torch']}").contains(Version(f"{lock['torch']}+cpu"))


def test_pip_refuses_the_cpu_wheel_under_the_constraint():
    """With only this machine's find-links folder (torch 2.13.0+cpu) pip finds no torch for the CUDA install."""
    local = sorted(Path("/opt/wheels").glob(f"torch-{VLLM_TORCH}+cpu-*.whl"))
    if not local:
        pytest.skip("no local torch CPU wheel in /opt/wheels")

    def dry_run(*extra):
        return subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--no-index",
             "--find-links", "/opt/wheels", *extra, f"torch=={VLLM_TORCH}"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})

    plain = dry_run()
    assert plain.returncode == 0 and f"torch-{VLLM_TORCH}+cpu" in plain.stdout, plain.stdout + plain.stderr
    constrained = dry_run("-c", str(CUDA_CONSTRAINTS))
    assert constrained.returncode != 0 and "Would install" not in constrained.stdout, constrained.stdout
    assert "ResolutionImpossible" in constrained.stderr or "No matching distribution" in constrained.stderr


def test_openrlhf_requirements_are_met_by_the_lock_and_the_built_packages(lock):
    from importlib import metadata

    dist = metadata.distribution("openrlhf")
    assert dist.version == OPENRLHF
    built = read_pins(NO_BUILD_ISOLATION)
    assert built == BUILT
    requires = [Requirement(r) for r in dist.requires or []]
    # openrlhf pins exactly what the no-build-isolation step installs.
    pinned = {canonicalize_name(r.name): str(r.specifier) for r in requires if canonicalize_name(r.name) in BUILT}
    assert pinned == {name: f"=={version}" for name, version in BUILT.items()}
    # Its requirements and those of its [vllm] extra, against the lock plus that step.
    problems = unsatisfied(requires, {**lock, **built}, extras=("", "vllm"))
    assert problems == [], f"openrlhf=={OPENRLHF} needs what the CUDA install lacks:\n" + "\n".join(problems)
    vllm = [r for r in requires if canonicalize_name(r.name) == "vllm" and r.marker.evaluate({"extra": "vllm"})]
    assert [str(r.specifier) for r in vllm] == [f"=={VLLM}"]


def test_built_and_no_deps_packages_stay_out_of_the_lock(lock):
    outside = set(BUILT) | set(read_pins(NO_DEPS))
    assert "openrlhf" in outside
    leaked = sorted(outside & set(lock))
    assert not leaked, f"{leaked} are installed after the lock and must not be in it; {REFRESH}"
    missing = [name for name in BUILT_NEEDS if name not in lock]
    assert not missing, f"deepspeed/flash-attn (installed --no-deps, --no-build-isolation) need {missing}"


def test_pyproject_requirements_are_in_the_cuda_lock(lock):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    self_name = canonicalize_name(project["name"])
    problems = [f"[project.dependencies] {p}" for p in unsatisfied(project["dependencies"], lock)]
    for extra in CUDA_LOCKED_EXTRAS:
        requirements = [r for r in project["optional-dependencies"][extra]
                        if canonicalize_name(Requirement(r).name) != self_name]
        problems += [f"[{extra}] {p}" for p in unsatisfied(requirements, lock)]
    assert not problems, "pyproject.toml and requirements/cuda-lock.txt disagree:\n" + "\n".join(problems) + f"\n{REFRESH}"


def test_setup_help_and_bad_arguments():
    shown = subprocess.run(["bash", "scripts/setup.sh", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for needle in ("--cuda", "requirements/cuda-lock.txt", "requirements/cuda-no-build-isolation.txt",
                   "SETUP_CUDA_SKIP_FLASH_ATTN=1", "bash scripts/lock-cuda.sh", "requirements/lock.txt"):
        assert needle in shown.stdout, needle
    bad = subprocess.run(["bash", "scripts/setup.sh", "--cdua"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown argument '--cdua'" in bad.stderr


def _gpu_check(*args, env=None):
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def cpu_only():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")


def test_gpu_check_require_cuda_fails_without_cuda(cpu_only):
    env = {k: v for k, v in os.environ.items() if k != "SELFPLAY_REQUIRE_CUDA"}
    result = _gpu_check("--require-cuda", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "benchmarks.gpu_check: CUDA is required (--require-cuda) but torch" in result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["benchmark"] == "gpu_check" and line["cuda"] is False and line["required"] is True
    assert "bash scripts/setup.sh --cuda" in line["error"]


def test_gpu_check_without_the_flag_skips_and_exits_0(cpu_only):
    env = {k: v for k, v in os.environ.items() if k != "SELFPLAY_REQUIRE_CUDA"}
    from benchmarks.gpu_check import CUDA_MARKER

    if CUDA_MARKER.exists():  # this environment was installed with --cuda: turn the marker off
        env["SELFPLAY_REQUIRE_CUDA"] = "0"
    result = _gpu_check(env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line == {"benchmark": "gpu_check", "cuda": False, "skipped": "no CUDA device on this machine",
                    "torch": line["torch"]}


def test_gpu_check_requires_cuda_from_env_or_marker(cpu_only, monkeypatch, tmp_path, capsys):
    from benchmarks import gpu_check

    monkeypatch.setattr(gpu_check, "CUDA_MARKER", tmp_path / "cuda-install.json")
    monkeypatch.delenv("SELFPLAY_REQUIRE_CUDA", raising=False)
    assert gpu_check.main([]) == 0
    monkeypatch.setenv("SELFPLAY_REQUIRE_CUDA", "1")
    assert gpu_check.main([]) == 1
    assert "CUDA is required (SELFPLAY_REQUIRE_CUDA=1)" in capsys.readouterr().err
    monkeypatch.delenv("SELFPLAY_REQUIRE_CUDA")
    (tmp_path / "cuda-install.json").write_text("{}")
    assert gpu_check.main([]) == 1
    assert "scripts/setup.sh --cuda" in capsys.readouterr().err
    monkeypatch.setenv("SELFPLAY_REQUIRE_CUDA", "0")
    assert gpu_check.main([]) == 0


def test_metadata_index_marks_wheels_and_leaves_sdists():
    spec = importlib.util.spec_from_file_location("metadata_index", ROOT / "scripts" / "metadata_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = ('<a href="../../packages/ab/x-1.0-py3-none-any.whl#sha256=00" data-requires-python="&gt;=3.9">x-1.0-py3-none-any.whl</a>'
            '<a href="https://files.example/x-1.0.tar.gz#sha256=11">x-1.0.tar.gz</a>')
    out = module.rewrite_page(page, "https://pypi.example/simple/x/", "http://127.0.0.1:9")
    wheel, sdist = re.findall(r"<a\s[^>]*>", out)
    assert 'data-core-metadata="true"' in wheel and 'data-requires-python="&gt;=3.9"' in wheel
    href = re.search(r'href="([^"]*)"', wheel).group(1)
    assert href.startswith("http://127.0.0.1:9/file/") and href.endswith("/x-1.0-py3-none-any.whl#sha256=00")
    token = href.split("/")[4]
    assert module._decode(token) == "https://pypi.example/packages/ab/x-1.0-py3-none-any.whl"
    assert sdist == '<a href="https://files.example/x-1.0.tar.gz#sha256=11">'
