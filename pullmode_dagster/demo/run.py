"""``pullmode demo``: start the demo API, lay out the demo sources, run one poll cycle of each
through Dagster (the ``pullmode pull --all`` path), summarize, and show how to open the UI."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..engine.declare.loading import sources_dirs
from ..engine.store import store_url
from .api import DEMO_PORT, DemoApi
from .s3 import DEMO_BUCKET, DEMO_S3_PORT, DemoS3
from .setup import DEMO_CLIENT_SECRET, DEMO_ROOT, prepare_demo
from .vendors.copilot import CopilotStudioAPI, transcript

TOKEN_URL_ENV = "PULLMODE_COPILOT_STUDIO_TOKEN_URL"
CLAUDE_URL_ENV = "PULLMODE_CLAUDE_COMPLIANCE_BASE_URL"


def start_copilot() -> CopilotStudioAPI:
    """A Dataverse environment with a conversation every 10 minutes over the last two days, and the
    identity platform that issues its tokens."""
    api = CopilotStudioAPI(DEMO_CLIENT_SECRET)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    now -= timedelta(minutes=now.minute % 10)
    users = ("ana@acme.example", "bo@acme.example", "chen@acme.example", "dee@acme.example")
    api.add(
        *(
            transcript(
                f"3f1c{k:08d}-0000-4000-8000-000000000000",
                now - timedelta(minutes=10 * k),
                aad_object_id=f"aad-{users[k % len(users)]}",
            )
            for k in range(288)
        )
    )
    return api.start()


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


DEMO_MODULE = "pullmode_dagster.demo.definitions"


def demo_workspace(root: Path) -> Path:
    """The demo's workspace file: its code location (the sources plus the downstream asset built on
    them) under the name every workspace uses, so ``make demo``, ``make dev``, ``dagster dev`` from
    the repository root and ``pullmode pull`` share the pollers' and the alert sensor's state."""
    from ..defs.names import LOCATION_NAME

    path = root / "workspace.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"load_from:\n  - python_module:\n      module_name: {DEMO_MODULE}\n      location_name: {LOCATION_NAME}\n"
    )
    return path


DEV_PORT_ENV = "DAGSTER_CLI_DEV_PORT"
DEV_HOST_ENV = "DAGSTER_CLI_DEV_HOST"
"""``dagster dev --port`` / ``--host`` from the environment (Dagster's CLI reads ``DAGSTER_CLI_<command>_<option>``)."""
UI_BASE_URL_ENV = "PULLMODE_UI_BASE_URL"


def dev_url(env: Mapping[str, str]) -> str:
    """Where ``dagster dev`` serves the UI under ``env``: its defaults, 127.0.0.1:3000, unless set."""
    host = env.get(DEV_HOST_ENV) or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # every interface: this machine's loopback is one of them
        host = "127.0.0.1"
    return f"http://{host}:{env.get(DEV_PORT_ENV) or 3000}"


def project_source_dirs(directory: str | None) -> list[Path]:
    """The project's own source directories (``$PULLMODE_SOURCES_DIR`` as the user set it, else
    ``sources/``) that exist, served beside the demo's under ``--ui``."""
    return [d.resolve() for d in sources_dirs(directory) if d.is_dir()]


def dev_environment(base: Mapping[str, str], *, sources: list[Path], fallback_home: Path) -> dict[str, str]:
    """The environment of ``dagster dev``: ``base`` (so the sources' credential variables reach the
    code server, the daemon and the runs; ``dagster dev`` adds a ``.env`` of the working directory),
    the instance the demo used, every directory in ``sources``, and alert links to this UI."""
    env = dict(base)
    if not env.get("DAGSTER_HOME"):
        env["DAGSTER_HOME"] = str(Path.cwd() if Path("dagster.yaml").exists() else fallback_home.resolve())
    env["PULLMODE_SOURCES_DIR"] = os.pathsep.join(str(d) for d in sources)
    if not env.get(UI_BASE_URL_ENV):
        env[UI_BASE_URL_ENV] = dev_url(env)
    return env


def open_ui(workspace: Path, sources: list[Path], fallback_home: Path, echo: Callable[[str], None]) -> None:
    """``dagster dev`` on the instance the demo just used, while the demo API keeps serving."""
    env = dev_environment(os.environ, sources=sources, fallback_home=fallback_home)
    echo(f"sources: {', '.join(str(d) for d in sources)}")
    echo(f"starting dagster dev on {dev_url(env)} (Ctrl-C stops it and the demo API)")
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run([sys.executable, "-m", "dagster", "dev", "-w", str(workspace)], env=env, check=False)


def daily_costs(fallback_home: Path) -> str:
    """Today's partition of the downstream asset ``usage/daily_cost_by_actor``, materialized from
    the events just pulled, as a project's own asset would be."""
    import dagster as dg

    from ..cli.pull import console_loggers, open_instance
    from .definitions import COST_JOB, build_demo_definitions

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    with open_instance(fallback_home) as instance:
        job = build_demo_definitions().resolve_job_def(COST_JOB)
        result = job.execute_in_process(
            instance=instance,
            partition_key=day,
            run_config={"loggers": console_loggers(verbose=False)},
            raise_on_error=False,
        )
    if not result.success:
        return f"usage/daily_cost_by_actor {day}: failed (see the run in the UI)"
    entries = result.get_asset_materialization_events()[0].materialization.metadata
    metadata = {k: v.value for k, v in entries.items()}
    by_actor = entries["by_actor"]
    top = by_actor.records[0].data if isinstance(by_actor, dg.TableMetadataValue) and by_actor.records else None
    lead = f"; top {top['actor']} ${top['cost_usd']:.4f}" if top else ""
    return (
        f"usage/daily_cost_by_actor {day}: {metadata['events']} events, {metadata['dagster/row_count']} actors, "
        f"${metadata['total_cost_usd']:.4f}{lead}"
    )


INSTANCE_CONFIG = """\
# Written by `pullmode demo` for its own instance (used when the working directory has no
# dagster.yaml): one run of a source at a time, as in the repository's dagster.yaml.
concurrency:
  pools:
    granularity: run
    default_limit: 1
"""


def write_instance_config(home: Path) -> None:
    """The demo's fallback instance gets the pools setting of the repository's ``dagster.yaml``
    (a ``dagster.yaml`` already there is the user's: left alone)."""
    config = home / "dagster.yaml"
    if not config.exists():
        home.mkdir(parents=True, exist_ok=True)
        config.write_text(INSTANCE_CONFIG)


def start_bucket(port: int | None, echo: Callable[[str], None]) -> DemoS3 | None:
    """The demo bucket on moto, when moto is installed (``pip install pullmode_dagster[demo]``)."""
    try:
        bucket = DemoS3(DEMO_S3_PORT if port is None else port)
    except ImportError:
        echo("moto is not installed: the S3 demo sources are left out (pip install 'pullmode_dagster[demo]')")
        return None
    return bucket.start()


def run_demo(
    *, port: int | None = None, root: Path = DEMO_ROOT, echo: Callable[[str], None] = print, ui: bool = False
) -> bool:
    """True when every demo source was pulled."""
    from ..cli.pull import pull_sources

    project = project_source_dirs(os.environ.get("PULLMODE_SOURCES_DIR"))  # before the demo points it at its own
    api = start_api(port)
    bucket = start_bucket(None if port is None else 0, echo)
    copilot = start_copilot()
    # The demo's Claude and Copilot sources are one-click, against the demo's fakes of the vendors.
    os.environ[TOKEN_URL_ENV] = copilot.token_url
    os.environ[CLAUDE_URL_ENV] = api.server.base_url
    try:
        directory = prepare_demo(
            root,
            port=api.server.port,
            s3_port=bucket.port if bucket else None,
            dataverse_port=copilot.dataverse.port,
        )
        # The demo pulls the demo sources only; `--ui` serves the project's beside them.
        os.environ["PULLMODE_SOURCES_DIR"] = str(directory.resolve())
        write_instance_config(root / "dagster_home")
        echo(f"demo API on {api.server.base_url}; demo sources in {directory}")
        if bucket:
            echo(f"demo bucket s3://{DEMO_BUCKET} on {bucket.url} (moto)")
        workspace = demo_workspace(root)
        outcomes = pull_sources(
            [], all_sources=True, workspace=workspace, fallback_home=root / "dagster_home", echo=echo
        )
        written = sum(int((o.metadata or {}).get("events_written", 0)) for o in outcomes)
        echo(f"{written} events written to {store_url()}")
        if any(o.ok and o.source == "demo_usage" for o in outcomes):
            echo(daily_costs(root / "dagster_home"))
        echo("")
        cli = "pullmode" if shutil.which("pullmode") else os.path.relpath(sys.argv[0])
        echo("next:")
        echo(f"  {cli} tail -n 5        # the newest events in the trace store")
        echo(f"  PULLMODE_SOURCES_DIR={directory} {cli} preview demo_usage")
        echo(f"  {cli} demo --ui        # (or make dev) the Dagster UI on these sources, pollers running")
        ok = all(o.ok for o in outcomes)
        if ui:
            served = [directory.resolve(), *(d for d in project if d != directory.resolve())]
            open_ui(workspace, served, root / "dagster_home", echo)
        return ok
    finally:
        api.server.stop()
        copilot.stop()
        if bucket:
            bucket.stop()
