"""S3 for tests: moto's server mode on loopback, reached by the real boto3 client through
``endpoint_url``, and a recording proxy in front of it that shows which access key signed each
request and can refuse a key (AccessDenied) to make a file unreadable."""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from pullmode_dagster.demo.server import LoopbackServer, Request, Response

from .documents import (
    S3_REGION,
)
from .helpers import free_port

ADMIN_KEY = ("testing-admin", "testing-admin-secret")


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def admin_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_REGION,
        aws_access_key_id=ADMIN_KEY[0],
        aws_secret_access_key=ADMIN_KEY[1],
    )


@dataclass
class S3Proxy:
    """Forwards to moto; records (method, path, query, access key id); denies ``denied`` keys."""

    upstream: str
    seen: list[tuple[str, str, dict[str, list[str]], str | None]] = field(default_factory=list)
    denied: set[str] = field(default_factory=set)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def __call__(self, request: Request) -> Response:
        auth = request.header("authorization") or ""
        match = re.search(r"Credential=([^/]+)/", auth)
        self.seen.append((request.method, request.path, request.query, match[1] if match else None))
        key = request.path.split("/", 2)[2] if request.path.count("/") >= 2 else ""
        if request.method == "GET" and key in self.denied:
            body = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            return Response(403, body, {"Content-Type": "application/xml"})
        upstream = self.client.request(
            request.method,
            self.upstream + "/" + request.url.split("/", 3)[3],
            headers={k: v for k, v in request.headers.items() if k not in ("host", "content-length")},
            content=request.body,
        )
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "etag", "last-modified")}
        return Response(upstream.status_code, upstream.content, headers)

    def key_ids(self) -> set[str | None]:
        return {seen[3] for seen in self.seen}


@pytest.fixture
def s3(moto_url: str) -> Iterator[Any]:
    """A clean moto backend and an admin client for setting up buckets."""
    httpx.post(f"{moto_url}/moto-api/reset")
    client = admin_client(moto_url)
    client.create_bucket(Bucket="audit-drops")
    yield client


@pytest.fixture
def proxy(moto_url: str) -> Iterator[tuple[S3Proxy, str]]:
    recorder = S3Proxy(moto_url)
    with LoopbackServer(fallback=recorder) as server:
        yield recorder, server.base_url


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def gz(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as f:
        f.write(data)
    return buffer.getvalue()
