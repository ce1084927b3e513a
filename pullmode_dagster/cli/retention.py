"""``pullmode prune`` and ``pullmode erase``: delete stored events past their retention, and every
event of one actor (a data-subject request), from the trace store alone.

Neither touches Dagster's instance: a committed cursor (the pollers' state in the instance) stays
as it is, so what was deleted is not pulled again unless the source is rewound past it. Both read
the sources of the code location ``pullmode pull`` acts for (each source's retention, and how it
takes a record's actor); loading that needs Dagster only when it is not the plain project's module.
Design and what a data-protection officer reads: docs/retention-and-erasure.md
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..defs.location import loads_module_only
from ..engine.adapters import ADAPTERS
from ..engine.declare.loading import SourceSet, check_source, load_sources
from ..engine.errors import ConfigError, PullmodeError
from ..engine.store import TraceStore, describe_store, open_store
from ..engine.store.base import Deleted
from ..engine.store.retention import RETENTION_ENV, ActorMatch, check_actor, check_days, cutoff, store_retention_days

NOTHING_TO_PRUNE = f"nothing to prune: no retentionDays on any source and {RETENTION_ENV} unset"


@dataclass(frozen=True)
class Retention:
    """One source's retention for this prune and where it comes from; or None, and why it is kept."""

    source: str
    days: int | None
    origin: str


def code_location_sources(workspace: Path | None) -> SourceSet:
    """The sources of the code location ``pullmode pull`` acts for (``workspace``, else
    ``./workspace.yaml``, else the dg project this directory is in): a component's ``sources_dir``
    in a dg project, not ``$PULLMODE_SOURCES_DIR``. Read without Dagster when that code location is
    ``pullmode_dagster.definitions`` itself (what it loads is ``load_sources()``)."""
    if loads_module_only(workspace):
        return load_sources(adapters=ADAPTERS)
    from .pull import code_location_project, default_workspace

    return code_location_project(workspace if workspace is not None else default_workspace()).sources


def _directory_problems(loaded: SourceSet) -> list[str]:
    """Problems of the directory itself (missing, unreadable), not of one file."""
    of_files = {p for invalid in loaded.invalid for p in invalid.problems}
    return [p for p in loaded.problems if p not in of_files]


def plan(
    loaded: SourceSet, store: TraceStore, *, source: str | None, older_than: int | None
) -> tuple[list[Retention], list[str]]:
    """Each source's retention (``--source``: that one's), and one line per source left alone
    because its file has problems (its ``retentionDays`` cannot be read).

    Without ``--older-than``, a source's own retention must be readable: a sources directory that
    cannot be read is an error (pruning with the store's default could delete what a source keeps
    longer), and so is ``--source`` naming a file with problems."""
    default = store_retention_days()
    if older_than is not None:
        check_days(older_than, what="--older-than")
    elif broken := _directory_problems(loaded):
        raise ConfigError([*broken, "no source's retentionDays can be read: fix the above, or give --older-than DAYS"])
    invalid = {i.name: i for i in loaded.invalid}
    stored = {*store.source_names(), *store.source_names(rejected=True)}
    if source is not None:
        if source not in invalid:
            check_source(store, source, defined=loaded.sources)
        names = [source]
    else:
        names = sorted({*loaded.sources, *stored, *(name for name in invalid if name in stored)})
    plans: list[Retention] = []
    skipped: list[str] = []
    for name in names:
        config = loaded.sources.get(name)
        if older_than is not None:
            plans.append(Retention(name, older_than, "--older-than"))
        elif config is not None and config.retention_days is not None:
            plans.append(Retention(name, config.retention_days, "retentionDays"))
        elif name in invalid:
            if source is not None:
                raise ConfigError(list(invalid[name].problems))
            skipped.append(f"{name}: not pruned: its file has problems (pullmode validate): {invalid[name].file}")
        else:
            own = "retentionDays" if config else "source file"
            why = RETENTION_ENV if default else f"no {own} and {RETENTION_ENV} unset"
            plans.append(Retention(name, default, why if config or not default else f"{why}; no source file"))
    if not skipped and all(p.days is None for p in plans):
        if source is not None:
            raise PullmodeError(
                f"nothing to prune: source {source!r} has no retentionDays and {RETENTION_ENV} is unset "
                "(or give --older-than DAYS)"
            )
        raise PullmodeError(NOTHING_TO_PRUNE)
    return plans, skipped


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _day(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%d")


def prune(
    *,
    source: str | None,
    older_than: int | None,
    dry_run: bool,
    echo: Callable[..., None],
    workspace: Path | None = None,
) -> bool:
    """Prune each source past its retention, printing a line a source; False when a source was
    left alone because its file has problems (the command exits 1 so a scheduled job is noticed)."""
    started = time.monotonic()
    verb = "would delete" if dry_run else "deleted"
    total = Deleted(0, 0)
    loaded = code_location_sources(workspace)
    with open_store() as store:
        plans, skipped = plan(loaded, store, source=source, older_than=older_than)
        for p in plans:
            if p.days is None:
                echo(f"{p.source}: kept: {p.origin}")
                continue
            before = cutoff(p.days)
            done = store.prune_source(p.source, before, dry_run=dry_run)
            total = Deleted(total.events + done.events, total.rejects + done.rejects)
            echo(
                f"{p.source}: {verb} {_count(done.events, 'event')} dated before {_day(before)} "
                f"and {_count(done.rejects, 'rejected record')} pulled before it ({p.days} days: {p.origin})"
            )
    for line in skipped:
        echo(f"warning: {line}", err=True)
    summary = f"{_count(total.events, 'event')} and {_count(total.rejects, 'rejected record')}"
    where = f"in {describe_store()} ({time.monotonic() - started:.1f} s)"
    echo(f"dry run: would prune {summary} {where}; nothing deleted" if dry_run else f"pruned {summary} {where}")
    return not skipped


def erase(
    *,
    actor: str,
    dry_run: bool,
    echo: Callable[..., None],
    sources: tuple[str, ...] = (),
    workspace: Path | None = None,
) -> None:
    """Delete (or count) every stored event and rejected record of ``actor`` in ``sources`` (none
    named: every source the store holds), printing a line a source (a dry run: every source
    searched, those with nothing too), the totals, and what a later pull may bring back."""
    check_actor(actor)
    started = time.monotonic()
    verb = "would delete" if dry_run else "deleted"
    loaded = code_location_sources(workspace)  # each source's actor rule; problems only lose a rule
    with open_store() as store:
        with_rejects = store.source_names(rejected=True)
        for name in sources:
            if name not in with_rejects:
                check_source(store, name, defined={*loaded.sources, *(s.name for s in loaded.invalid)})
        searched = sorted(set(sources)) if sources else sorted({*store.source_names(), *with_rejects})
        erased = store.erase_actor(
            actor,
            sources=searched,
            match=lambda name: ActorMatch(actor, loaded.sources.get(name)),
            dry_run=dry_run,
        )
        left = None if dry_run or not erased else store.drop_deleted_copies()
    where = f"in {describe_store()} ({time.monotonic() - started:.1f} s)"
    scope = f"searched {_count(len(searched), 'source')}"
    scope += "" if sources else ": every source the store holds (--source NAME limits it)"
    if not erased:
        echo(f"no events or rejected records of that actor {where}; {scope}")
        return
    for name in searched if dry_run else sorted(erased):  # a dry run shows what each source would keep too
        done = erased.get(name, Deleted(0, 0))
        echo(f"{name}: {verb} {_count(done.events, 'event')} and {_count(done.rejects, 'rejected record')}")
    events, rejects = sum(d.events for d in erased.values()), sum(d.rejects for d in erased.values())
    summary = f"{_count(events, 'event')} and {_count(rejects, 'rejected record')} of that actor from {len(erased)}"
    summary += f" source{'' if len(erased) == 1 else 's'} {where}"
    echo(f"dry run: would erase {summary}; nothing deleted; {scope}" if dry_run else f"erased {summary}; {scope}")
    for name, done in erased.items():
        if done.at_newest:
            echo(
                f"note: {name}: {_count(done.at_newest, 'event')} of that actor at the source's newest event time: "
                "a source that resumes with an inclusive time filter reads that instant again at its next pull; "
                "run this erase again after it (docs/retention-and-erasure.md)",
                err=True,
            )
    if left:
        echo(f"note: {left}", err=True)
