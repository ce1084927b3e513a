"""``pullmode demo``: start the demo API, lay out the demo sources, pull each one, summarize."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

from ..engine.pull import run_pull
from ..engine.sources import load_sources
from ..engine.store import open_store, store_url
from .api import DEMO_PORT, DemoApi
from .setup import DEMO_ROOT, prepare_demo


def start_api(port: int | None) -> DemoApi:
    """The demo API on ``port`` (default 8787; a free port when 8787 is taken)."""
    try:
        api = DemoApi(port=DEMO_PORT if port is None else port)
    except OSError as exc:
        if port is not None or exc.errno != errno.EADDRINUSE:
            raise
        api = DemoApi(port=0)
    api.server.start()
    return api


def run_demo(*, port: int | None = None, root: Path = DEMO_ROOT, echo: Callable[[str], None] = print) -> int:
    api = start_api(port)
    try:
        directory = prepare_demo(root, port=api.server.port)
        echo(f"demo API on {api.server.base_url}; demo sources in {directory}")
        result = load_sources(directory)
        result.raise_for_problems()
        total = 0
        with open_store() as store:
            for source in sorted(result.sources.values(), key=lambda s: s.name):
                report = run_pull(source, store=store)
                total += report.written
                echo(report.summary())
        echo(f"{total} events written to {store_url()}")
        echo("next:")
        echo(f"  PULLMODE_SOURCES_DIR={directory} pullmode preview demo_usage")
        echo("  pullmode tail -n 5")
        return total
    finally:
        api.server.stop()
