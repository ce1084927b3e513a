"""Generated Python, compiled under a name a traceback can show: the rows of :mod:`.rules` and each
source's ``eventMapping`` (:mod:`.mapping`) are straight-line code built from one table of rules.

Design: docs/design/normalization.md#eventmapping
"""

from __future__ import annotations

import hashlib
import linecache
from collections.abc import Callable
from typing import Any


def compile_function(source: str, name: str, *, title: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    """The function ``name`` that ``source`` defines, run in ``namespace``.

    Its code is named ``<title #hash>`` and registered with :mod:`linecache`, so a traceback through it
    shows the generated line that raised (the hash keeps two different sources of one title apart)."""
    digest = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()[:8]
    filename = f"<{title} #{digest}>"
    # mtime None: linecache.checkcache keeps the entry (it has no file to compare with).
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    return function
