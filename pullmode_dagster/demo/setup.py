"""Lays out a runnable copy of the demo sources: URLs pointed at the running demo API, ``startDate``
a week back, and the demo token in a file next to them (so the demo exercises ``{file: ...}``
credential refs)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path

from .api import DEMO_PORT, DEMO_TOKEN
from .s3 import DEMO_S3_KEY, DEMO_S3_PORT
from .vendors.copilot import CLIENT_ID, TENANT_ID

DEMO_DATAVERSE_PORT = 8789
DEMO_CLIENT_SECRET = "demo-client-secret-not-a-secret"

DEMO_ROOT = Path(".pullmode/demo")

DEMO_HISTORY_DAYS = 7
"""The demo sources' first partition is this many days back: the demo's data covers the last day or
two, so the asset pages show a week of windows (not every hour since a fixed date, nearly all
"missing")."""
START_DATE = re.compile(r"^startDate: .*$", re.MULTILINE)


def demo_start(today: date | None = None) -> date:
    """The demo sources' ``startDate`` (UTC), and the first partition of the demo's downstream asset."""
    return (today or datetime.now(UTC).date()) - timedelta(days=DEMO_HISTORY_DAYS)


def prepare_demo(
    root: Path = DEMO_ROOT,
    *,
    port: int = DEMO_PORT,
    s3_port: int | None = DEMO_S3_PORT,
    dataverse_port: int = DEMO_DATAVERSE_PORT,
) -> Path:
    """Write the demo sources under ``root/sources`` and return that directory. Without an S3 port
    (moto not installed) the S3 demo sources are left out."""
    sources = root / "sources"
    secrets = root / "secrets"
    sources.mkdir(parents=True, exist_ok=True)
    secrets.mkdir(parents=True, exist_ok=True)
    for name, value in (
        ("demo_token", DEMO_TOKEN),
        ("s3_key_id", DEMO_S3_KEY[0]),
        ("s3_secret", DEMO_S3_KEY[1]),
        ("copilot_tenant_id", TENANT_ID),
        ("copilot_client_id", CLIENT_ID),
        ("copilot_client_secret", DEMO_CLIENT_SECRET),
    ):
        secret = secrets / name
        secret.write_text(value + "\n")
        secret.chmod(0o600)
    packaged = resources.files("pullmode_dagster.demo") / "sources"
    for entry in sorted(packaged.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        text = entry.read_text(encoding="utf-8")
        target = sources / entry.name
        if "adapter: s3_polling" in text and s3_port is None:
            target.unlink(missing_ok=True)
            continue
        text = START_DATE.sub(f'startDate: "{demo_start().isoformat()}"', text)
        text = text.replace(f"127.0.0.1:{DEMO_PORT}", f"127.0.0.1:{port}")
        text = text.replace(f"127.0.0.1:{DEMO_DATAVERSE_PORT}", f"127.0.0.1:{dataverse_port}")
        target.write_text(text.replace(f"127.0.0.1:{DEMO_S3_PORT}", f"127.0.0.1:{s3_port}"))
    return sources
