"""``PullmodeSourcesComponent``: a directory of source files as a Dagster Component, for ``dg``
projects (``dg scaffold defs pullmode_dagster.PullmodeSourcesComponent my_sources``, then ``dg dev``
and ``dg check defs``), in the manner of dagster-sling's and dagster-dlt's components.

Its ``build_defs`` is ``build_definitions``: the code location a ``defs.yaml`` describes is the one
``workspace.yaml`` loads, shaped by a :class:`PullmodeTranslator` built from its attributes.
Design: docs/design/assets.md#the-component
"""

# No `from __future__ import annotations`: Dagster derives the defs.yaml schema from the runtime annotations.
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import dagster as dg
from pydantic import TypeAdapter, ValidationError

from ..definitions import build_definitions
from .translator import GROUP, KEY_PREFIX, PullmodeTranslator

SOURCES_DIR = "sources"


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


@dg.scaffold_with(PullmodeSourcesScaffolder)
@dataclass
class PullmodeSourcesComponent(dg.Component, dg.Resolvable):
    """Pull-mode sources as Dagster definitions: every source file (``*.yaml``) in ``sources_dir``
    becomes an asset ``<key_prefix>/<name>``, a job ``<name>_pull`` and a sensor ``<name>_poller``;
    an invalid file becomes a placeholder asset showing its problems.

    Subclass it and override :meth:`get_translator` for a translator of your own."""

    sources_dir: Annotated[
        str,
        dg.Resolver.default(
            description="The directory of source files, relative to this defs.yaml's folder (or absolute). "
            "Several are separated by ':', as in PULLMODE_SOURCES_DIR."
        ),
    ] = SOURCES_DIR
    key_prefix: Annotated[
        str | list[str],
        dg.Resolver.default(description="The first parts of each source asset's key: `raw` gives raw/<name>."),
    ] = KEY_PREFIX
    group_name: Annotated[str, dg.Resolver.default(description="The source assets' group.")] = GROUP
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
        parts = [part for part in self.sources_dir.split(os.pathsep) if part] or [SOURCES_DIR]
        return os.pathsep.join(str(folder / part) for part in parts)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_definitions(self.sources_path(context.path), translator=self.get_translator())
