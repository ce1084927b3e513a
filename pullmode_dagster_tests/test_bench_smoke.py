"""The pull benchmark (bench/pull_bench.py) at its smoke size, so `make bench` keeps working: every
contender runs in its own process and its row count is verified (the bench exits 1 otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_pull_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "pull_bench.py"), "--smoke", "--no-dlt", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["failures"] == []
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
