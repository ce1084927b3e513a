"""``python -m pullmode_dagster.cli``: the ``pullmode`` command without its console script."""

from . import main

if __name__ == "__main__":
    main()
