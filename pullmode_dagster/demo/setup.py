"""Lays out a runnable copy of the demo sources: URLs pointed at the running demo API, and the
demo token in a file next to them (so the demo exercises ``{file: ...}`` credential refs)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .api import DEMO_PORT, DEMO_TOKEN

DEMO_ROOT = Path(".pullmode/demo")


def prepare_demo(root: Path = DEMO_ROOT, *, port: int = DEMO_PORT) -> Path:
    """Write the demo sources under ``root/sources`` and return that directory."""
    sources = root / "sources"
    secrets = root / "secrets"
    sources.mkdir(parents=True, exist_ok=True)
    secrets.mkdir(parents=True, exist_ok=True)
    token = secrets / "demo_token"
    token.write_text(DEMO_TOKEN + "\n")
    token.chmod(0o600)
    packaged = resources.files("pullmode_dagster.demo") / "sources"
    for entry in sorted(packaged.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            text = entry.read_text(encoding="utf-8")
            (sources / entry.name).write_text(text.replace(f"127.0.0.1:{DEMO_PORT}", f"127.0.0.1:{port}"))
    return sources
