"""Fake vendor APIs that follow the vendors' documented shapes (shared/reference/upstream-apis.md): the
demo serves them, and the connector tests run against them."""
