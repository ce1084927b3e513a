"""Profile one ``pullmode pull`` (the full path, as the bench runs it) with pyinstrument, and the imports
of the code location with ``-X importtime``: where the time goes, before optimizing.

    .venv/bin/python bench/profile_pull.py [--events 100000] [--out .pullmode/bench-profile]

pyinstrument is installed into a scratch virtualenv (.pullmode/bench-prof-venv), never into the
project's; the profiled process is the project's interpreter with that venv's site-packages on
PYTHONPATH (same Python version). Writes ``pull.txt`` / ``pull.html`` (the call tree),
``importtime.txt`` (raw) and prints the slowest imports and the top of the tree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package: import its siblings by path

from pull_bench import (
    HTTP_SOURCE,
    PAGE_SIZE,
    PULLMODE,
    PY,
    REPO,
    clean_env,
    http_source,
    measure,
    pullmode_env,
    server,
    sqlite_count,
    write_source,
)

PROF_VENV = REPO / ".pullmode" / "bench-prof-venv"


def ensure_pyinstrument() -> Path:
    """The site-packages of a scratch virtualenv holding pyinstrument (made on first use)."""
    python = PROF_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([PY, "-m", "venv", str(PROF_VENV)], check=True)
    if subprocess.run([str(python), "-c", "import pyinstrument"], capture_output=True).returncode != 0:
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pyinstrument"]
        subprocess.run(pip, check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(purelib)


def import_times(text: str, *, top: int = 15) -> list[tuple[float, str]]:
    """(cumulative seconds, package) of the slowest top-level packages imported, at any depth of the tree
    (each is imported once, where it is first needed), slowest first."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part for part in line.removeprefix("import time:").split("|"))
        if "." not in name.strip() and not name.strip().startswith("_"):
            rows.append((int(cumulative) / 1e6, name.strip()))
    return sorted(rows, reverse=True)[:top]


WATCHED = ("dagster_aws", "boto3", "botocore", "pandas", "pyarrow", "psycopg", "psycopg2", "sqlalchemy", "alembic")
"""Packages an HTTP-only code location should not need to import (issue #13)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=REPO / ".pullmode" / "bench-profile")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    done = measure([PY, "-X", "importtime", "-c", "import pullmode_dagster.definitions"], env=clean_env())
    (args.out / "importtime.txt").write_text(done.stderr)
    print(f"import pullmode_dagster.definitions: {done.wall:.2f} s wall; slowest packages (cumulative):")
    for seconds, name in import_times(done.stderr):
        print(f"  {seconds:6.2f} s  {name}")
    imported = {name for _, name in import_times(done.stderr, top=10_000)}
    print(f"  imported among {', '.join(WATCHED)}: {', '.join(w for w in WATCHED if w in imported) or 'none'}")

    site = ensure_pyinstrument()
    work = args.out / "work"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    with server("http", "--events", str(args.events), "--page-size", str(PAGE_SIZE)) as url:
        env, db = pullmode_env(work, write_source(work / "sources", http_source(url)))
        env["PYTHONPATH"] = str(site)
        profiler = [PY, "-m", "pyinstrument", "--interval", "0.002"]
        for renderer, suffix in (("text", "txt"), ("html", "html")):
            if renderer == "html":  # a second pull into a fresh store and instance
                subprocess.run(["rm", "-rf", str(work)], check=True)
                env, db = pullmode_env(work, write_source(work / "sources", http_source(url)))
                env["PYTHONPATH"] = str(site)
            out = args.out / f"pull.{suffix}"
            argv = [*profiler, "-r", renderer, "-o", str(out), *PULLMODE, "pull", HTTP_SOURCE]
            done = measure(argv, env=env).check("profiled pull")
            rows = sqlite_count(db, "pulled_events")
            print(f"profiled pull ({renderer}): {done.wall:.1f} s wall, {done.cpu:.1f} s CPU, {rows:,} rows -> {out}")
            if rows != args.events:
                raise SystemExit(f"the profiled pull wrote {rows:,} rows, expected {args.events:,}")
    print("\n".join((args.out / "pull.txt").read_text().splitlines()[:80]))


if __name__ == "__main__":
    main()
