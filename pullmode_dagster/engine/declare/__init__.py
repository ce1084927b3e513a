"""A declared source: the typed shape of a source file (``models``), the sources directory read into
it (``loading``), its templates, its credential refs, its ``eventContent`` and safe reads of small files."""
