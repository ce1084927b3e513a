"""The README is an entry point into docs/: a link that leads nowhere strands the reader, so every
relative link in the repository's markdown must reach a file, and its anchor a heading there."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def markdown_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO / p for p in listed if (REPO / p).exists()]


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', repeats numbered."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_code = False
    for line in path.read_text().split("\n"):
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"^#{1,6} ", line):
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line.lstrip("#").strip())
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(files: list[Path], root: Path = REPO) -> list[str]:
    bad: list[str] = []
    for f in files:
        text = re.sub(r"```.*?```", "", f.read_text(), flags=re.S)
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (f.parent / path).resolve() if path else f
            where = f.relative_to(root)
            if not dest.exists():
                bad.append(f"{where}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{where}: {target}: no heading #{anchor} in {dest.relative_to(root)}")
    return bad


def test_every_relative_link_in_the_docs_resolves() -> None:
    files = markdown_files()
    assert REPO / "README.md" in files and len(files) > 10
    assert broken_links(files) == []


def test_the_checker_sees_a_broken_file_and_a_broken_anchor(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Readme\n")
    page = tmp_path / "docs" / "_link_probe.md"
    page.parent.mkdir()
    page.write_text("# Probe\n\n[gone](nowhere.md) [bad anchor](../README.md#no-such-heading) [ok](#probe)\n")
    bad = broken_links([page], root=tmp_path)
    assert bad == [
        "docs/_link_probe.md: nowhere.md: no such file",
        "docs/_link_probe.md: ../README.md#no-such-heading: no heading #no-such-heading in README.md",
    ]
