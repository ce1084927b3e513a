"""``PullmodeSourcesComponent``: a directory of source files as a Dagster Component, for ``dg``
projects (``dg scaffold defs pullmode_dagster.PullmodeSourcesComponent my_sources``, then ``dg dev``
and ``dg check defs``), in the manner of dagster-sling's and dagster-dlt's components.

Its ``build_defs`` is ``build_definitions``: the code location a ``defs.yaml`` describes is the one
``workspace.yaml`` loads, shaped by a :class:`PullmodeTranslator` built from its attributes.
Design: docs/design/assets.md#the-component
"""

# No `from __future__ import annotations`: Dagster derives the defs.yaml schema from the runtime annotations.
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import dagster as dg
from pydantic import TypeAdapter, ValidationError

from ..definitions import build_definitions
from .translator import GROUP, KEY_PREFIX, PullmodeTranslator

SOURCES_DIR = "sources"
_NAME = "[A-Za-z0-9_]+"
GROUP_NAME = re.compile(f"{_NAME}(/{_NAME})*")
"""Dagster's rule for an asset group's name."""
KEY_PART = re.compile("[A-Za-z0-9_.-]+")
"""Dagster's rule for each part of an asset key (its op's name is the parts joined, '-' and '.' made '_')."""


class PullmodeSourcesScaffolder(dg.Scaffolder):
    """``dg scaffold defs``: a ``defs.yaml`` that spells out every attribute at its default, and the
    (empty) sources directory beside it, where the source files go."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        attributes = {
            "sources_dir": SOURCES_DIR,
            "key_prefix": KEY_PREFIX,
            "group_name": GROUP,
            "blocking_checks": False,
        }
        dg.scaffold_component(request, attributes)
        if request.scaffold_format == "yaml":
            (request.target_path / SOURCES_DIR).mkdir(exist_ok=True)


def _flag(context: dg.ResolutionContext, value: bool | str) -> bool:
    """A yes/no attribute: a boolean, or a template that renders to one (``{{ env.X }}`` renders a
    string, so ``"true"``/``"false"`` are taken too); anything else is refused, naming the line."""
    try:
        return TypeAdapter(bool).validate_python(value)
    except ValidationError:
        raise ValueError(f"expected true or false, got {value!r}") from None


def _directories(value: str) -> list[str]:
    """``sources_dir``'s directories (``:``-separated, as in PULLMODE_SOURCES_DIR)."""
    return [part for part in value.split(os.pathsep) if part] or [SOURCES_DIR]


def _sources_dir(context: dg.ResolutionContext, value: str) -> str:
    """Each directory must exist (relative to the defs.yaml's folder): a misspelt one would load no
    source and pass ``dg check defs``. Checked here, where the error names the file and line."""
    if context.source_position_tree is not None:  # from a defs.yaml (else build_defs checks)
        missing = [part for part in _directories(value) if not context.resolve_source_relative_path(part).is_dir()]
        if missing:
            raise ValueError(_no_directory(missing))
    return value


def _no_directory(missing: list[str], *, as_written: bool = True) -> str:
    where = " (relative to this defs.yaml's folder, or absolute)" if as_written else ""
    return f"no such directory: {', '.join(missing)}{where}: create it and put the source files there, or fix the path"


def _group_name(context: dg.ResolutionContext, value: str) -> str:
    if not GROUP_NAME.fullmatch(value):
        raise ValueError(
            f"not a Dagster group name: {value!r}: letters, digits and '_', in parts separated by '/' "
            "(ingestion_sources, audit/raw)"
        )
    return value


def _key_prefix(context: dg.ResolutionContext, value: Any) -> str | list[str]:
    value = context.resolve_value(value)  # templates in a list's items too
    for part in [value] if isinstance(value, str) else value:
        if not isinstance(part, str) or not KEY_PART.fullmatch(part):
            raise ValueError(
                f"not a part of a Dagster asset key: {part!r}: letters, digits, '_', '-' and '.' "
                "(several parts are a list: [raw, ai] gives raw/ai/<name>)"
            )
    return value


@dg.scaffold_with(PullmodeSourcesScaffolder)
@dataclass
class PullmodeSourcesComponent(dg.Component, dg.Resolvable):
    """Pull-mode sources as Dagster definitions: every source file (``*.yaml``) in ``sources_dir``
    becomes an asset ``<key_prefix>/<name>``, a job ``<name>_pull`` and a sensor ``<name>_poller``;
    an invalid file becomes a placeholder asset showing its problems.

    Subclass it and override :meth:`get_translator` for a translator of your own."""

    sources_dir: Annotated[
        str,
        dg.Resolver(
            _sources_dir,
            model_field_type=str,
            description="The directory of source files, relative to this defs.yaml's folder (or absolute); "
            "it must exist. Several are separated by ':'.",
        ),
    ] = SOURCES_DIR
    key_prefix: Annotated[
        str | list[str],
        dg.Resolver(
            _key_prefix,
            model_field_type=str | list[str],
            description="The first parts of each source asset's key: `raw` gives raw/<name>, [raw, ai] raw/ai/<name>.",
        ),
    ] = KEY_PREFIX
    group_name: Annotated[
        str,
        dg.Resolver(
            _group_name,
            model_field_type=str,
            description="The source assets' group: letters, digits and '_', in parts separated by '/'.",
        ),
    ] = GROUP
    blocking_checks: Annotated[
        bool,
        dg.Resolver(
            _flag,
            model_field_type=bool | str,
            description="Whether a failed normalized_schema or unique_source_event_id check stops the "
            "source's downstream assets in the same run.",
        ),
    ] = False

    def get_translator(self) -> PullmodeTranslator:
        """Shapes each source's asset (the attributes' fields; a subclass may return its own)."""
        return PullmodeTranslator(
            key_prefix=self.key_prefix, group_name=self.group_name, blocking_checks=self.blocking_checks
        )

    def sources_path(self, folder: Path) -> str:
        """``sources_dir`` with each relative directory resolved against ``folder`` (the defs.yaml's)."""
        return os.pathsep.join(str(folder / part) for part in _directories(self.sources_dir))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        directories = self.sources_path(context.path)
        missing = [part for part in directories.split(os.pathsep) if not Path(part).is_dir()]
        if missing:  # a component built in Python (a defs.yaml's is refused when it resolves)
            raise dg.DagsterInvalidDefinitionError(
                f"{type(self).__name__} in {context.path}: sources_dir: {_no_directory(missing, as_written=False)}"
            )
        return build_definitions(directories, translator=self.get_translator())
