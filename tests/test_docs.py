"""The project's documentation stands on its own: nothing points at files outside it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("games", "envs", "curricula", "trainers", "benchmarks", "examples", "scripts", "docs", "tests")
# Planning documents that live outside this repository.
OUTSIDE_DOCUMENTS = ("REFERENCE.md", "DESIGN.md", "STYLE.md", "../shared")


def project_text_files():
    yield ROOT / "README.md"
    for folder in SOURCE_FOLDERS:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".md", ".sh"} and path.name != Path(__file__).name:
                yield path


def test_no_file_cites_a_document_outside_the_project():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in project_text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(name in line for name in OUTSIDE_DOCUMENTS)
    ]
    assert offenders == []


def test_every_relative_link_in_the_readme_and_docs_exists():
    markdown = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    missing = []
    for page in markdown:
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert missing == []
