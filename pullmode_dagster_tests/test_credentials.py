"""Credential refs: every way a secret can be missing or wrong is a CredentialError naming the
source, the key and where the secret was expected, never the secret; nothing blocks or reads
without end; secrets are re-read on every resolve."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from pullmode_dagster.demo.server import LoopbackServer, Response
from pullmode_dagster.engine.adapters import ADAPTERS, PullContext
from pullmode_dagster.engine.declare.credentials import (
    MAX_SECRET_FILE_BYTES,
    CredentialRef,
    ResolvedCredentials,
    resolve_credentials,
)
from pullmode_dagster.engine.declare.loading import load_sources
from pullmode_dagster.engine.errors import CredentialError, PullError
from pullmode_dagster.engine.pull import run_pull
from pullmode_dagster.engine.store import SqliteTraceStore

from .conftest import SourceWriter
from .documents import http_source

SECRET = "sk-cred-canary-0123456789"
PREFIX = "source 'acme': credential 'token': "


def resolve(ref: dict[str, str], base_dir: Path | None = None) -> dict[str, str]:
    """``resolve_credentials`` in a daemon thread: blocking (on a FIFO, say) fails the test."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = resolve_credentials({"token": CredentialRef(**ref)}, source_name="acme", base_dir=base_dir)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "resolving the credential blocked"
    if "error" in box:
        raise box["error"]
    return box["value"]


def error(ref: dict[str, str], base_dir: Path | None = None) -> str:
    with pytest.raises(CredentialError) as info:
        resolve(ref, base_dir)
    message = str(info.value)
    assert SECRET not in message
    assert "\n" not in message
    return message


def test_env_and_file_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRED_TEST", SECRET)
    assert resolve({"env": "CRED_TEST"}) == {"token": SECRET}
    monkeypatch.setenv("CRED_TEST", "pässwörd-€")  # valid UTF-8 is a valid secret (headers check ASCII later)
    assert resolve({"env": "CRED_TEST"}) == {"token": "pässwörd-€"}
    secret = tmp_path / "secret"
    for content, expected in [
        (SECRET, SECRET),
        (SECRET + "\n", SECRET),
        (SECRET + "\r\n", SECRET),
        (SECRET + "\n\n", SECRET + "\n"),  # exactly one trailing newline is dropped
        ("line one\nline two\n", "line one\nline two"),
        ("ünïcode-sécret\n", "ünïcode-sécret"),
    ]:
        secret.write_bytes(content.encode())
        assert resolve({"file": str(secret)}) == {"token": expected}


def test_relative_file_is_next_to_the_yaml_and_reread_every_time(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("first-secret\n")
    assert resolve({"file": "token.txt"}, base_dir=tmp_path) == {"token": "first-secret"}
    (tmp_path / "token.txt").write_text("rotated-secret\n")
    assert resolve({"file": "token.txt"}, base_dir=tmp_path) == {"token": "rotated-secret"}


def test_unset_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRED_TEST", raising=False)
    assert error({"env": "CRED_TEST"}) == PREFIX + "environment variable CRED_TEST is not set"


def test_env_holding_bytes_that_are_not_utf8(monkeypatch: pytest.MonkeyPatch) -> None:
    # os.environ gives undecodable bytes back as lone surrogates; sent, they would fail mid-request.
    monkeypatch.setenv("CRED_TEST", SECRET + "\udcff\udcfe")
    assert error({"env": "CRED_TEST"}) == PREFIX + "environment variable CRED_TEST holds bytes that are not UTF-8 text"


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET.encode() + b"\xff\xfe\x00\x81")
    assert error({"file": str(path)}) == PREFIX + f"file {path} is not UTF-8 text (a binary file?)"
    path.write_bytes(SECRET.encode() + b"\x00\x01\x02")  # UTF-8, but not text
    assert error({"file": str(path)}) == PREFIX + f"file {path} holds control characters (a binary file?)"


def test_huge_files(tmp_path: Path) -> None:
    path = tmp_path / "huge"
    path.write_text("x" * (MAX_SECRET_FILE_BYTES + 1))
    expected = PREFIX + f"file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes; a secret file holds one secret"
    assert error({"file": str(path)}) == expected
    with path.open("wb") as f:
        f.truncate(4 << 30)  # a sparse 4 GiB file: refused by its size, nothing read
    assert error({"file": str(path)}) == expected
    path.write_text("y" * MAX_SECRET_FILE_BYTES)  # at the cap exactly: fine
    assert resolve({"file": str(path)})["token"] == "y" * MAX_SECRET_FILE_BYTES


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_not_read(device: str, tmp_path: Path) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    not_regular = "is not a regular file (a FIFO, socket or device); not read"
    assert error({"file": device}) == PREFIX + f"file {device} {not_regular}"
    link = tmp_path / "looks-like-a-file"
    link.symlink_to(device)
    assert error({"file": str(link)}) == PREFIX + f"file {link} {not_regular}"


def test_fifo_never_blocks(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    assert (
        error({"file": str(path)}) == PREFIX + f"file {path} is not a regular file (a FIFO, socket or device); not read"
    )


def test_directory_missing_and_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert error({"file": str(tmp_path)}) == PREFIX + f"file {tmp_path} is a directory, not a secret file"
    missing = tmp_path / "missing"
    assert error({"file": "missing"}, base_dir=tmp_path) == PREFIX + f"cannot read file {missing}: no such file"
    locked = tmp_path / "locked"
    locked.write_text(SECRET)
    real_open = os.open

    def deny(file: Any, *args: Any, **kwargs: Any) -> int:
        if Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)  # chmod 000 does not stop root
    assert error({"file": str(locked)}) == PREFIX + f"cannot read file {locked}: Permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file")
def test_chmod_000_file(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.write_text(SECRET)
    locked.chmod(0)
    assert error({"file": str(locked)}) == PREFIX + f"cannot read file {locked}: Permission denied"


def test_bad_refs_are_validation_errors(sources: SourceWriter) -> None:
    url = "https://audit.acme.example/v1/events"
    sources.write(http_source(url, credentials={"token": {"env": "A=B"}}))
    sources.write(http_source(url, name="other", credentials={"token": {"file": ""}}))
    problems = load_sources(sources.directory, adapters=ADAPTERS).problems
    assert problems == [
        f"{sources.directory / 'acme_audit.yaml'}: source 'acme_audit': credentials.token.env: "
        "must name an environment variable (not empty, no '=' or NUL character)",
        f"{sources.directory / 'other.yaml'}: source 'other': credentials.token.file: "
        "must be a file path (not empty, no NUL character)",
    ]


def test_a_fifo_credential_fails_the_pull_before_any_request(
    api: LoopbackServer, sources: SourceWriter, store: SqliteTraceStore, context: PullContext
) -> None:
    os.mkfifo(sources.directory / "token.fifo")
    source = sources.load(http_source(api.url("/v1/events"), credentials={"token": {"file": "token.fifo"}}))
    with pytest.raises(CredentialError) as info:
        run_pull(source, store=store, context=context)
    fifo = (sources.directory / "token.fifo").resolve()
    assert str(info.value) == (
        f"source 'acme_audit': credential 'token': file {fifo} is not a regular file (a FIFO, socket or device); "
        "not read"
    )
    assert api.requests == []


def test_credentials_resolved_once_carry_their_redactor_into_the_pull(
    api: LoopbackServer,
    sources: SourceWriter,
    store: SqliteTraceStore,
    context: PullContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the Dagster asset does: resolve once, redact its own errors with the same secrets, and
    hand them to the pull, which neither reads them again nor builds another redactor."""
    monkeypatch.setenv("ACME_AUDIT_TOKEN", SECRET)
    source = sources.load(http_source(api.url("/v1/events"), params={"key": "${{credentials.token}}"}))
    resolved = ResolvedCredentials.for_source(source)
    assert resolved.values == {"token": SECRET}
    assert resolved.redact(f"sent {SECRET} and {SECRET.upper()}") == "sent *** and ***"
    assert SECRET not in repr(resolved) and "token" in repr(resolved)
    assert ResolvedCredentials().redact(f"no secrets known: {SECRET}") == f"no secrets known: {SECRET}"

    monkeypatch.delenv("ACME_AUDIT_TOKEN")
    api.routes["/v1/events"] = lambda r: Response(403, {"error": f"key {r.arg('key')} lacks scope"})
    with pytest.raises(PullError) as info:
        run_pull(source, store=store, context=context, credentials=resolved)
    assert [r.arg("key") for r in api.requests] == [SECRET]
    assert "key *** lacks scope" in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(CredentialError) as unset:
        ResolvedCredentials.for_source(source)
    assert (
        str(unset.value) == "source 'acme_audit': credential 'token': environment variable ACME_AUDIT_TOKEN is not set"
    )
