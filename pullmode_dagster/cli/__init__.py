"""The ``pullmode`` command line: validate, preview, tail, export, pull, rewind, prune, erase, demo.

Errors print one line per problem on stderr and exit 1; no command prints a traceback for a
problem the user can fix, and none prints a secret. Importing this package imports no Dagster:
``pullmode pull`` (:mod:`.pull`) loads it when it runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, BinaryIO

import click

from ..defs.location import at_project_root
from ..engine.adapters import ADAPTERS
from ..engine.declare.content import event_content_problem
from ..engine.declare.loading import check_source, load_sources
from ..engine.errors import ConfigError, PullmodeError
from ..engine.store import open_store


def _fail(lines: list[str] | str) -> None:
    for line in [lines] if isinstance(lines, str) else lines:
        click.echo(line, err=True)
    sys.exit(1)


DEBUG_ENV = "PULLMODE_DEBUG"


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's errors (whose messages are safe to show) into exit 1 without a traceback.

    Anything else is a bug: one line naming the exception's type (never its message, which could
    hold a secret) and exit 1; the traceback only with ``PULLMODE_DEBUG=1``. click's own exceptions
    (usage errors, exit 2; Ctrl-C) pass through to click."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            _fail(exc.problems)
        except PullmodeError as exc:
            _fail(f"error: {exc}")
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except Exception as exc:
            if os.environ.get(DEBUG_ENV) == "1":
                traceback.print_exc(file=sys.stderr)
            _fail(f"error: unexpected {type(exc).__name__} (rerun with {DEBUG_ENV}=1 for the traceback)")

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Pull AI-platform audit and usage events into one trace store."""


@main.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@friendly_errors
def validate(directory: Path | None) -> None:
    """Check every source file in DIRECTORY (default $PULLMODE_SOURCES_DIR or sources/), and the
    deployment's $PULLMODE_EVENT_CONTENT.

    Exits 1 with one line per problem; nothing is sent anywhere."""
    result = load_sources(directory, adapters=ADAPTERS)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    problems = [*result.problems, *filter(None, [event_content_problem()])]
    if problems:
        _fail(problems)
    names = ", ".join(sorted(result.sources)) or "none"
    click.echo(f"ok: {len(result.sources)} source(s) in {result.where}: {names}")


def _load(name: str) -> Any:
    """Source ``name``, refusing only when its own file has problems (or no source loaded at all):
    another file's mistake does not stop a preview of this one."""
    result = load_sources(adapters=ADAPTERS)
    if result.problems and (not result.sources or any(p.source == name for p in result.problems)):
        raise ConfigError(result.problems)
    return result.get(name)


def _event_line(row: dict[str, Any]) -> str:
    tokens = f"{row['tokens_input']}/{row['tokens_output']}"
    return (
        f"{row['event_timestamp']}  {row['source_name']}  {row['actor'] or '-'}  {row['action'] or '-'}  "
        f"{row['target'] or '-'}  ${row['cost_usd']:.6f}  tokens {tokens}  {row['source_event_id']}"
    )


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="NDJSON: one normalized event (or reject) per line.")
@friendly_errors
def preview(name: str, as_json: bool) -> None:
    """Fetch the first page (or first file) of source NAME and print the normalized events.

    Writes nothing and commits nothing."""
    from ..engine.adapters import PullContext
    from ..engine.declare.content import ContentPolicy
    from ..engine.pull import preview as run_preview

    source = _load(name)
    # Its reader holds the source's credentials and sees every event: a vendor's error as received too.
    page, events, rejects = run_preview(source, context=PullContext(content=ContentPolicy("shown")))
    if as_json:
        for event in events:
            click.echo(json.dumps(event.as_dict()))
        for reject in rejects:
            click.echo(json.dumps({"rejected": reject.reason, "location": reject.location, "raw": reject.raw_record}))
        return
    for event in events:
        click.echo(_event_line(event.as_dict()))
    for reject in rejects:
        click.echo(f"REJECTED  {reject.location}: {reject.reason}: {reject.raw_record[:200]}")
    more = "a next page exists" if page is not None and not page.drained else "no next page"
    size = page.nbytes if page else 0
    click.echo(f"{name}: first page: {len(events)} events, {len(rejects)} rejected, {size} bytes; {more}", err=True)


FOLLOW_BATCH = 10_000
"""Rows ``tail --follow`` reads at a time; more that landed since its last poll are read in turn."""


def _row_json(row: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in row.items() if k != "id"}, ensure_ascii=False)


@main.command()
@click.option("--source", "source", help="Only this source's events.")
@click.option("--follow", "-f", is_flag=True, help="Keep polling and print new events once each.")
@click.option("--json", "as_json", is_flag=True, help="NDJSON: one event per line.")
@click.option("-n", "limit", default=20, show_default=True, help="How many of the newest events to show first.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between polls with --follow.")
@friendly_errors
def tail(source: str | None, follow: bool, as_json: bool, limit: int, interval: float) -> None:
    """The newest pulled events from the trace store ($PULLMODE_TRACE_STORE_URL), by event time.

    Prints the N events with the latest event_timestamp, oldest first. With --follow, then the
    events stored after them as they land, each once (an event dated earlier, from a backfill,
    included), each poll's by event time."""
    fmt = _row_json if as_json else _event_line
    with open_store() as store:
        newest = store.newest(source=source, limit=limit)
        for row in newest.rows:
            click.echo(fmt(row))
        last_id = newest.last_id
        while follow:
            time.sleep(interval)
            # Rows are numbered by the store as they land: each is printed exactly once.
            batch = FOLLOW_BATCH
            while batch == FOLLOW_BATCH:
                rows = store.tail(source=source, limit=FOLLOW_BATCH, after_id=last_id)
                for row in sorted(rows, key=lambda r: (r["event_timestamp"], r["id"])):
                    click.echo(fmt(row))
                last_id, batch = (rows[-1]["id"] if rows else last_id), len(rows)
            sys.stdout.flush()


def _size(n: int) -> str:
    """Bytes in decimal units, one decimal: ``123.4 MB``."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            break
        size /= 1000
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


@main.command()
@click.argument("name")
@click.option(
    "--start", metavar="ISO", help="Events at or after this time: ISO 8601 date or date-time (naive means UTC)."
)
@click.option("--end", metavar="ISO", help="Events before this time (exclusive), same forms as --start.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "csv", "ndjson"]),
    help="Default: from FILE's extension (.parquet/.pq, .csv, .ndjson/.jsonl), else parquet.",
)
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    required=True,
    type=click.Path(allow_dash=True),
    help="The file to write (a regular file already there is replaced, keeping its permissions; anything else "
    "is refused; a new file is created 0600), or - for stdout.",
)
@friendly_errors
def export(name: str, start: str | None, end: str | None, fmt: str | None, output: str) -> None:
    """Write the stored events of source NAME whose event_timestamp is in [--start, --end) to a file.

    Parquet keeps the columns typed (timestamps UTC, tokens int64, cost float64); CSV and NDJSON
    write timestamps as UTC text, and an NDJSON line is what `tail --json` prints. Memory stays flat
    however many events; FILE appears only once complete. NAME is a source in the sources directory
    or one whose events the store ($PULLMODE_TRACE_STORE_URL) holds."""
    # Read when pyarrow loads (so before the import below): Arrow's default pool (mimalloc) keeps
    # 10-25 MB of freed pages resident, which a streaming export never reuses. A user's choice wins.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    from ..engine.export import (
        check_target,
        check_window,
        export_events,
        format_for,
        output_path,
        parse_time,
    )

    start_at = parse_time(start, option="--start") if start is not None else None
    end_at = parse_time(end, option="--end") if end is not None else None
    check_window(start_at, end_at)
    # The string, not a Path: Path("./-") is Path("-"), and ./- names a file.
    target: Path | BinaryIO = sys.stdout.buffer if output == "-" else output_path(output)
    chosen = format_for(Path(output), fmt)
    if isinstance(target, Path):
        check_target(target)
    loaded = load_sources(adapters=ADAPTERS)  # its problems are not ours: a source's events can outlive its file
    defined = {*loaded.sources, *(s.name for s in loaded.invalid)}
    with open_store() as store:
        check_source(store, name, defined=defined)
        result = export_events(store, source=name, path=target, fmt=chosen, start=start_at, end=end_at)
    where = "stdout" if output == "-" else output
    click.echo(f"exported {result.rows} events of {name} to {where} ({chosen}, {_size(result.bytes)})", err=True)


workspace_option = click.option(
    "--workspace",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The workspace file whose code location owns the pollers (default ./workspace.yaml, else the dg project "
    "this directory is in).",
)


@main.command("pull")
@click.argument("names", nargs=-1)
@click.option("--all", "all_sources", is_flag=True, help="Every enabled source.")
@workspace_option
@click.option("--verbose", "-v", is_flag=True, help="Show the run's Dagster log on the console.")
@click.option(
    "--always-run", is_flag=True, help="Launch the run without asking the source first whether anything is new."
)
@friendly_errors
def pull_command(
    names: tuple[str, ...], all_sources: bool, workspace: Path | None, verbose: bool, always_run: bool
) -> None:
    """One poll cycle now for NAMES (or --all), through Dagster and the instance in $DAGSTER_HOME.

    The poller's own path: it asks the source whether anything is new after the committed cursor
    (nothing new: a quiet poll is recorded, no run), then runs from that cursor, advancing it only
    when the run succeeds. Exits 1 when a run failed, the source is rate limiting, or a pull was
    already in flight."""
    # Named pull_command: importing the submodule .pull binds the package's ``pull`` to it.
    from .pull import pull_sources

    if bool(names) == all_sources:
        raise click.UsageError("name one or more sources, or pass --all")
    with at_project_root(workspace):
        outcomes = pull_sources(
            list(names),
            all_sources=all_sources,
            workspace=workspace,
            echo=click.echo,
            verbose=verbose,
            always_run=always_run,
        )
    if not all(o.ok for o in outcomes):
        sys.exit(1)


@main.command()
@click.argument("name")
@click.option("--to", "to", metavar="ISO", help="Set the watermark: the next pull starts from this time.")
@click.option(
    "--cursor", "cursor", metavar="JSON", help="Set any cursor state (README, 'The cursor'); {} is the start."
)
@workspace_option
@friendly_errors
def rewind(name: str, to: str | None, cursor: str | None, workspace: Path | None) -> None:
    """Set where source NAME's next pull starts: its poller's committed cursor, in $DAGSTER_HOME.

    --to takes an ISO 8601 date or date-time (naive means UTC) for sources whose cursor is a
    watermark; --cursor any cursor state (README, "The cursor"). Refused while a pull of NAME is in
    flight. The poller's next evaluation, or `pullmode pull NAME`, pulls from there."""
    from .rewind import rewind_source

    if (to is None) == (cursor is None):
        raise click.UsageError("give --to ISO or --cursor JSON")
    with at_project_root(workspace):
        rewind_source(name, to=to, cursor=cursor, workspace=workspace, echo=click.echo)


@main.command()
@click.option("--source", "source", metavar="NAME", help="Only this source (a source file's, or one the store holds).")
@click.option(
    "--older-than",
    "older_than",
    metavar="DAYS",
    type=int,
    help="Delete events dated more than DAYS days ago, instead of each source's retention.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@workspace_option
@friendly_errors
def prune(source: str | None, older_than: int | None, dry_run: bool, workspace: Path | None) -> None:
    """Delete stored events past their retention, in batches, safe while pulls run.

    A source's retention is its retentionDays, else $PULLMODE_RETENTION_DAYS, else none (kept); the
    sources are those `pullmode pull` reads (the workspace's or dg project's code location).
    An event is past it when its event_timestamp is before midnight UTC that many days ago; the
    source's rejected records pulled before then go too. Committed cursors are not touched: what is
    deleted is not pulled again unless the source is rewound past it."""
    from .retention import prune as run_prune

    with at_project_root(workspace):
        pruned = run_prune(source=source, older_than=older_than, dry_run=dry_run, echo=click.echo, workspace=workspace)
    if not pruned:
        sys.exit(1)


@main.command()
@click.option("--actor", required=True, metavar="VALUE", help="The actor, exactly as stored (pullmode tail shows it).")
@click.option(
    "--source",
    "sources",
    metavar="NAME",
    multiple=True,
    help="Only this source (repeat for several); default: every source. User 42 of one vendor is not "
    "user 42 of another.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted, per source; delete nothing.")
@workspace_option
@friendly_errors
def erase(actor: str, sources: tuple[str, ...], dry_run: bool, workspace: Path | None) -> None:
    """Delete every stored event of an actor, and every rejected record that is theirs, in every
    source (or each --source): a data-subject request. Prints the counts per source.

    A rejected record is the actor's when the source's own actor rule finds the actor in it (else
    when a string in it is exactly the actor); never by its reason or location. Safe while pulls
    run; committed cursors are not touched, so an erased event is not pulled again unless its
    source is rewound past it (docs/retention-and-erasure.md)."""
    from .retention import erase as run_erase

    with at_project_root(workspace):
        run_erase(actor=actor, sources=sources, dry_run=dry_run, echo=click.echo, workspace=workspace)


@main.command()
@click.option("--port", default=None, type=int, help="Demo API port (default 8787, or a free one if taken).")
@click.option("--ui", is_flag=True, help="Then start `dagster dev` on the same sources, store and instance.")
@friendly_errors
def demo(port: int | None, ui: bool) -> None:
    """The whole pipeline on local demo sources: no servers or credentials needed."""
    from ..demo.run import run_demo

    if not run_demo(port=port, echo=click.echo, ui=ui):
        sys.exit(1)
