"""The demo bucket: moto's S3 server on loopback, seeded with compliance-export files the way an
enterprise drop looks (daily NDJSON.gz parts, a CSV usage report, a JSON-array file)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

DEMO_S3_PORT = 8788
DEMO_BUCKET = "demo-compliance-exports"
DEMO_S3_KEY = ("demo-key-id", "demo-secret-not-a-secret")


class DemoS3:
    """A running moto server with the demo bucket filled. Needs ``pullmode_dagster[demo]``."""

    def __init__(self, port: int = DEMO_S3_PORT):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log lines in the demo output
        if port and _taken(port):
            port = 0
        self.port = port or _free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, now: datetime | None = None) -> DemoS3:
        self._server.start()
        seed(self.client(), now or datetime.now(UTC))
        return self

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=DEMO_S3_KEY[0], aws_secret_access_key=DEMO_S3_KEY[1],
        )  # fmt: skip


def _taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _event(day: datetime, base: datetime, n: int) -> dict[str, Any]:
    users = ("ana@acme.example", "bo@acme.example", "chen@acme.example")
    return {
        "id": f"log_{day:%Y%m%d}_{n:04d}",
        "timestamp": (base + timedelta(minutes=5 * n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "event_type": ("conversation.created", "file.uploaded", "gpt.used")[n % 3],
        "actor": {"email": users[n % 3]},
        "model": "gpt-5",
    }


def seed(client: Any, now: datetime) -> None:
    """Three days of exports, named by date so keys sort in time order."""
    client.create_bucket(Bucket=DEMO_BUCKET)
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for back in (2, 1, 0):
        day = today - timedelta(days=back)
        base = day if back else now - timedelta(hours=10)  # today's events are all in the past
        for part in range(2):
            lines = [json.dumps(_event(day, base, n)) for n in range(part * 60, part * 60 + 60)]
            if back == 1 and part == 0:
                lines.insert(5, '{"id": "broken", "timestamp": ')  # a cut line, as real exports have
            body = gzip.compress(("\n".join(lines) + "\n").encode())
            client.put_object(Bucket=DEMO_BUCKET, Key=f"exports/{day:%Y/%m/%d}/part-{part:04d}.ndjson.gz", Body=body)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["request_id", "time", "user", "model", "input_tokens", "output_tokens", "cost_usd"])
    for n in range(100):
        t = today - timedelta(hours=n)
        writer.writerow([f"req_{n:04d}", t.isoformat(), f"user{n % 4}@acme.example", "gpt-5-mini", 300 + n, 40, ""])
    client.put_object(Bucket=DEMO_BUCKET, Key=f"usage/{today:%Y-%m-%d}.csv", Body=rows.getvalue().encode())
