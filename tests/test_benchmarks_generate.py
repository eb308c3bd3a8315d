"""benchmarks.generate: output-folder safety, split names, and excluding benchmarks from training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import benchmarks.generate as generate
from curricula.sat import heldout_instances, load_benchmark_formulas
from envs.sat import SatEnv

SMALL = ["--buckets", "3,5,5;3,5,6", "--per-bucket", "2"]


def generate_main(out, *args):
    return generate.main(["sat", "--out", str(out), "--no-progress", *args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def cli_error(capsys, out, *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        generate_main(out, *args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# ------------------------------------------------------------------------- --out


def test_non_empty_out_is_refused_without_overwrite(tmp_path, capsys):
    out = tmp_path / "set"
    generate_main(out, *SMALL)
    before = snapshot(out)
    assert "pass --overwrite" in cli_error(capsys, out, *SMALL, "--seed", "1")
    assert snapshot(out) == before


def test_overwrite_replaces_only_what_the_manifest_lists(tmp_path):
    out = tmp_path / "set"
    generate_main(out, *SMALL, "--split", "old")
    (out / "notes.txt").write_text("mine")
    generate_main(out, *SMALL, "--split", "new", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "new.jsonl", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"
    assert list(json.loads((out / "manifest.json").read_text())["files"]) == ["new.jsonl"]


def test_overwrite_refuses_a_folder_without_manifest(tmp_path, capsys):
    out = tmp_path / "set"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert "no manifest.json" in cli_error(capsys, out, *SMALL, "--overwrite")
    assert snapshot(out) == {"notes.txt": b"mine"}


def test_overwrite_without_manifest_accepts_only_files_this_run_writes(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / "test.jsonl").write_text("left by a run killed while moving files in\n")
    generate_main(out, *SMALL, "--overwrite")
    assert sorted(snapshot(out)) == ["manifest.json", "test.jsonl"]
    assert len((out / "test.jsonl").read_text().splitlines()) == 4


def test_overwrite_refuses_to_clobber_an_unlisted_file(tmp_path, capsys):
    out = tmp_path / "set"
    generate_main(out, *SMALL, "--split", "old")
    (out / "new.jsonl").write_text("mine")
    before = snapshot(out)
    assert "not listed" in cli_error(capsys, out, *SMALL, "--split", "new", "--overwrite")
    assert snapshot(out) == before


def test_manifest_naming_a_path_outside_out_is_refused(tmp_path, capsys):
    out = tmp_path / "set"
    generate_main(out, *SMALL)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["../victim.txt"] = manifest["files"]["test.jsonl"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "victim.txt").write_text("keep me")
    assert "not a plain file name" in cli_error(capsys, out, *SMALL, "--overwrite")
    assert (tmp_path / "victim.txt").read_text() == "keep me"


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert "not a directory" in cli_error(capsys, tmp_path / "file", *SMALL)


@pytest.mark.parametrize("split", ["../x", "/tmp/x", "a/b", "..", ".hidden", "", "a b"])
def test_split_must_be_a_plain_name(tmp_path, capsys, split):
    assert "plain name" in cli_error(capsys, tmp_path / "set", *SMALL, "--split", split)
    assert not (tmp_path / "set").exists() and not (tmp_path / "x").exists()


def test_split_accepts_plain_names(tmp_path):
    generate_main(tmp_path / "set", *SMALL, "--split", "heldout_a-2")
    assert (tmp_path / "set" / "heldout_a-2.jsonl").exists()


# ------------------------------------------------------------------ failed runs


def fail_after(monkeypatch, instances: int, error: type[BaseException] = RuntimeError):
    """Make the instance generator raise once `instances` instances were produced."""
    real = generate.generate_instances
    made = []

    def failing(*args, **kwargs):
        for instance in real(*args, **kwargs):
            if len(made) == instances:
                raise error("injected failure")
            made.append(instance)
            yield instance

    monkeypatch.setattr(generate, "generate_instances", failing)


def hidden_siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_failed_run_leaves_no_folder(tmp_path, monkeypatch, capsys):
    fail_after(monkeypatch, 3)
    assert "injected failure" in cli_error(capsys, tmp_path / "set", *SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_overwrite_keeps_the_previous_contents(tmp_path, monkeypatch, error):
    out = tmp_path / "set"
    generate_main(out, *SMALL)
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    fail_after(monkeypatch, 3, error)
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        generate_main(out, *SMALL, "--seed", "1", "--overwrite")
    assert snapshot(out) == before
    assert hidden_siblings(tmp_path) == []


def test_failure_while_moving_files_in_restores_the_old_outputs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "set"
    generate_main(out, *SMALL, "--split", "a")
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    real_rename = os.rename

    def rename(source, target):  # the new manifest, moved in last, cannot be moved
        if str(source).endswith(".partial/manifest.json"):
            raise OSError(28, "No space left on device")
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    assert "No space left on device" in cli_error(capsys, out, *SMALL, "--split", "b", "--overwrite")
    assert snapshot(out) == before
    assert hidden_siblings(tmp_path) == []


# ------------------------------------------------------------ excluding from training


def resets_hit(env: SatEnv, keys: set, resets: int = 80) -> bool:
    hit = False
    for seed in range(resets):
        env.reset(seed=seed)
        hit |= env.instance.key in keys
    return hit


def test_env_built_with_benchmark_exclusions_never_draws_them(tmp_path):
    # 3 literals over 3 variables: 7 planted clauses, so 7 / 21 formulas at l = 1 / 2
    generate_main(tmp_path / "a", "--buckets", "3,3,1;3,3,2", "--per-bucket", "3", "--split", "heldout_a")
    generate_main(tmp_path / "b", "--buckets", "3,3,1", "--per-bucket", "2", "--split", "train")
    excluded = load_benchmark_formulas(str(tmp_path / "a"))
    assert len(excluded) == 6 and load_benchmark_formulas(str(tmp_path / "b")) == []
    for l in (1, 2):
        keys = {i.key for i in excluded if i.l == l}
        assert resets_hit(SatEnv(n=3, k=3, l=l), keys)  # collisions do happen without exclusion
        assert not resets_hit(SatEnv(n=3, k=3, l=l, exclude=excluded), keys)


def test_curriculum_heldout_sets_are_kept_out_of_training_by_exclusion():
    heldout = heldout_instances((3, 3, 2), size=5)
    keys = {i.key for i in heldout}
    assert resets_hit(SatEnv(n=3, k=3, l=2), keys)
    assert not resets_hit(SatEnv(n=3, k=3, l=2, exclude=heldout), keys)


def test_benchmark_exclusions_check_sha256_and_the_manifest(tmp_path):
    out = tmp_path / "set"
    generate_main(out, "--buckets", "3,3,2", "--per-bucket", "2")
    data = out / "test.jsonl"
    lines = data.read_text().splitlines()
    data.write_text(lines[0] + "\n")  # a truncated file would let a test formula into training
    with pytest.raises(ValueError, match="sha256"):
        load_benchmark_formulas(str(out))
    with pytest.raises(ValueError, match="manifest"):
        load_benchmark_formulas(str(tmp_path))
