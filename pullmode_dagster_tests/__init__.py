"""The test suite, and the test support the benchmarks share with it.

``bench/`` imports only these modules of it, and they import only each other (``test_layering.py``
checks), which the package does not ship:

- ``fakes``: fake vendor feeds and the events they serve (``make_events``, ``EVENT_MAPPING``).
- ``faults``: the fault-injection server and the poller's commit loop driven against it.
- ``documents``: the source documents (``http_source`` and the rest), which ``faults`` builds on.
- ``pg``: the machine's Postgres, a fresh database per use.
- ``helpers``: the ids a store holds, a free port, fake sleeps and clocks.

Everything else here (conftest fixtures, the Dagster and UI helpers, the test modules) is the tests'
own; a bench that needs one of those moves it into this set first.
"""
