"""The benchmarks at their smoke size, so they keep working. The pull benchmark (bench/pull_bench.py,
`make bench`): every contender runs in its own process and its row count is verified (the bench
exits 1 otherwise). The retention benchmark (bench/retention_bench.py) likewise checks its counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def smoke(tmp_path: Path, script: str, *args: str) -> dict[str, Any]:
    """Run ``bench/<script> --smoke``; its JSON results, once it exited 0 and reported no failure."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--smoke", *args, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc: dict[str, Any] = json.loads(out.read_text())
    assert doc["failures"] == []
    return doc


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_pull_bench_smoke(tmp_path: Path) -> None:
    doc = smoke(tmp_path, "pull_bench.py", "--no-dlt")
    ran = {(r["suite"], r["contender"]): r for r in doc["results"] if r["status"] == "ok"}
    skipped = [r["contender"] for r in doc["results"] if r["status"] != "ok"]
    assert all(name.startswith("dlt") for name in skipped), skipped  # --no-dlt: only dlt is left out
    assert len(ran) == 6, sorted(ran)  # full path, engine and plain loop, for HTTP and for S3
    for result in ran.values():
        assert result["rows"] == result["events"] == 2000, result
        assert result["events_per_second"] > 0 and result["rss_mb"] > 0 and result["cpu"] > 0, result
    idle = doc["idle_poll"]
    assert idle["requests_per_poll"] == 1, idle  # a poll with nothing new is one request
    assert idle["cpu_ratio"] > 0 and idle["poll_cpu"] > 0, idle  # the idle target is a CPU ratio too
    durable = doc["durability"]  # issue #19: what the durable commit costs, beside the old setting
    assert durable["events"] == 2000 and durable["full_s"] > 0 and durable["normal_s"] > 0, durable
    listing = doc["s3_listing"]
    assert (listing["list_calls"], listing["keys_listed"], listing["rows"]) == (1, 10, 10), listing


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_retention_bench_smoke(tmp_path: Path) -> None:
    """bench/retention_bench.py at its smoke size: every count it prints is checked against the
    store inside the bench (exit 1 otherwise), on both stores."""
    doc = smoke(tmp_path, "retention_bench.py")
    stores = {r["store"]: r for r in doc["results"]}
    assert set(stores) == {"sqlite", "postgres"}
    for result in stores.values():
        steps = {s["step"]: s for s in result["steps"]}
        assert len(steps) == 6, sorted(steps)
        assert steps["erase (one user)"]["rows"] == steps["erase --dry-run (one user)"]["rows"] > 0, steps
        assert steps["prune (half)"]["rows"] == steps["prune --dry-run (half)"]["rows"] > 0, steps
        assert all(s["wall_s"] > 0 and s["rss_mb"] > 0 for s in steps.values()), steps
        assert result["writer"]["batches"] > 0 and result["baseline_rss_mb"] > 0, result
