"""Each path imports what it needs: an HTTP-only code location never loads dagster-aws, boto3,
pandas or pyarrow (they cost about a second per process, and every poll is a process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import SourceWriter, http_source

HEAVY = ("dagster_aws", "boto3", "botocore", "pandas", "pyarrow")

PROBE = """
import json, sys
from pullmode_dagster.definitions import build_definitions
defs = build_definitions()
defs.resolve_job_def("{job}")
print(json.dumps({{"loaded": [m for m in {heavy!r} if m in sys.modules], "resources": sorted(defs.resources)}}))
"""


def probe(sources_dir: Path, job: str) -> dict[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(job=job, heavy=HEAVY)],
        env={"PULLMODE_SOURCES_DIR": str(sources_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_http_only_code_location_imports_no_aws_pandas_or_arrow(sources: SourceWriter) -> None:
    sources.write(http_source("https://api.acme.example/v1/events"))
    found = probe(sources.directory, "acme_audit_pull")
    assert found["loaded"] == []
    assert "s3" not in found["resources"]


def test_an_s3_source_brings_the_s3_resource(sources: SourceWriter) -> None:
    sources.write(
        {
            "name": "drops",
            "adapter": "s3_polling",
            "startDate": "2026-01-01",
            "schedule": "*/5 * * * *",
            "bucket": "audit-drops",
            "prefix": "audit/",
            "parser": "ndjson",
            "eventMapping": {"source_event_id": "$.id", "event_timestamp": "$.ts"},
        }
    )
    found = probe(sources.directory, "drops_pull")
    assert "s3" in found["resources"] and "dagster_aws" in found["loaded"]
    assert "pandas" not in found["loaded"] and "pyarrow" not in found["loaded"]
