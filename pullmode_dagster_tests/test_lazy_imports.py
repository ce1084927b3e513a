"""Each path imports what it needs: an HTTP-only code location never loads dagster-aws, boto3,
pandas or pyarrow (they cost about a second per process, and every poll is a process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SourceWriter
from .documents import http_source, s3_source

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
    sources.write(s3_source("http://127.0.0.1:9", name="drops"))
    found = probe(sources.directory, "drops_pull")
    assert "s3" in found["resources"] and "dagster_aws" in found["loaded"]
    assert "pandas" not in found["loaded"] and "pyarrow" not in found["loaded"]


def test_settings_from_the_environment_are_bound_as_env_vars(
    sources: SourceWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UI shows which variable a resource reads (never its value); outside a run, the store's
    lock and connection still resolve it."""
    import dagster as dg

    from pullmode_dagster.definitions import build_definitions

    sources.write(http_source("https://api.acme.example/v1/events"))
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("PULLMODE_MAX_ATTEMPTS", "7")
    resources = build_definitions(sources.directory).resources
    store = resources["trace_store"]
    assert isinstance(store.url, dg.EnvVar) and store.url.env_var_name == "PULLMODE_TRACE_STORE_URL"
    assert resources["pull_settings"].max_attempts == dg.EnvVar.int("PULLMODE_MAX_ATTEMPTS")
    with store.open() as opened:
        assert opened.path == tmp_path / "env.db"
    monkeypatch.delenv("PULLMODE_TRACE_STORE_URL")
    assert build_definitions(sources.directory).resources["trace_store"].url is None  # the default, read at run time


def test_the_pull_job_runs_its_step_in_the_run_worker(sources: SourceWriter) -> None:
    """Under the daemon a poll is a run worker; a step subprocess would import the code location again."""
    import dagster as dg

    from pullmode_dagster.definitions import build_definitions

    sources.write(http_source("https://api.acme.example/v1/events"))
    job = build_definitions(sources.directory).resolve_job_def("acme_audit_pull")
    assert job.executor_def is dg.in_process_executor
