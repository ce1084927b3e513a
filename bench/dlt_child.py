"""The dlt contender, run by the interpreter of the bench's own dlt virtualenv (never the project's).

    python dlt_child.py rest-api --base-url URL --path v1/events --db PATH --workdir DIR
    python dlt_child.py filesystem --endpoint URL --bucket B --prefix P --db PATH --workdir DIR
    python dlt_child.py count --db PATH --table events

dlt loads into DuckDB with its defaults (append; schema inference; nested objects flattened into
``cost__usd`` style columns). ``count`` reads the loaded row count back, in a process of its own, so
what is verified is what landed in DuckDB. Prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

DATASET = "bench"
RSS_CAP_ENV = "BENCH_DLT_RSS_CAP_MB"
DEFAULT_RSS_CAP_MB = 8192
"""dlt held ~3 GB for 100k events here: past this cap the run is ended (exit 3, "rss cap" on stderr)
rather than letting it take a shared 2-core machine's memory (no swap) from everything else on it."""


def guard_rss(cap_mb: float) -> None:
    """End this process if its resident set passes ``cap_mb`` (checked every 0.2 s, in a thread)."""
    import sys
    import threading

    def watch() -> None:
        while True:
            with open("/proc/self/status") as status:
                rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
            if rss_kb / 1024 > cap_mb:
                print(f"rss cap: resident set {rss_kb / 1024:,.0f} MB passed {cap_mb:,.0f} MB; ended", file=sys.stderr)
                sys.stderr.flush()
                os._exit(3)
            time.sleep(0.2)

    if os.path.exists("/proc/self/status"):
        threading.Thread(target=watch, daemon=True, name="rss-cap").start()


def _pipeline(db: str, workdir: str) -> Any:
    import dlt

    return dlt.pipeline(
        pipeline_name="bench",
        destination=dlt.destinations.duckdb(db),
        dataset_name=DATASET,
        pipelines_dir=os.path.join(workdir, "pipelines"),
        progress=None,
    )


def rest_api(base_url: str, path: str, db: str, workdir: str) -> dict[str, Any]:
    from dlt.sources.rest_api import rest_api_source

    t = time.perf_counter()
    source = rest_api_source(
        {
            "client": {"base_url": base_url},
            "resources": [
                {
                    "name": "events",
                    "endpoint": {
                        "path": path,
                        "params": {"limit": 1000},
                        "data_selector": "data",
                        "paginator": {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"},
                    },
                }
            ],
        }
    )
    info = _pipeline(db, workdir).run(source)
    return {"seconds": time.perf_counter() - t, "loads": len(info.loads_ids)}


def filesystem(endpoint: str, bucket: str, prefix: str, db: str, workdir: str) -> dict[str, Any]:
    from dlt.common.configuration.specs import AwsCredentials
    from dlt.sources.filesystem import filesystem as fs_source
    from dlt.sources.filesystem import read_jsonl

    t = time.perf_counter()
    credentials = AwsCredentials(
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        endpoint_url=endpoint,
    )
    files = fs_source(bucket_url=f"s3://{bucket}/{prefix}", file_glob="*.ndjson", credentials=credentials)
    info = _pipeline(db, workdir).run((files | read_jsonl()).with_name("events"))
    return {"seconds": time.perf_counter() - t, "loads": len(info.loads_ids)}


def count(db: str, table: str) -> dict[str, Any]:
    import duckdb

    with duckdb.connect(db, read_only=True) as conn:
        row = conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {DATASET}.{table}").fetchone()
    return {"rows": int(row[0]), "distinct_ids": int(row[1])}


def main() -> None:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("rest-api")
    p.add_argument("--base-url", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--workdir", required=True)
    p = sub.add_parser("filesystem")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--workdir", required=True)
    p = sub.add_parser("count")
    p.add_argument("--db", required=True)
    p.add_argument("--table", default="events")
    args = parser.parse_args()
    if args.mode != "count":
        guard_rss(float(os.environ.get(RSS_CAP_ENV) or DEFAULT_RSS_CAP_MB))
    if args.mode == "rest-api":
        result = rest_api(args.base_url, args.path, args.db, args.workdir)
    elif args.mode == "filesystem":
        result = filesystem(args.endpoint, args.bucket, args.prefix, args.db, args.workdir)
    else:
        result = count(args.db, args.table)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
