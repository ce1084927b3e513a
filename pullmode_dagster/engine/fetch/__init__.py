"""Talking to a source: the one HTTP session and retry policy (``session``), auth strategies bound to
their origin (``auth``), the one redaction rule (``redaction``) and sealed cursor positions (``sealing``)."""
