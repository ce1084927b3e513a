"""Helpers for the end-to-end UI test (``test_ui_e2e.py``): the demo's sources and fake vendors
laid out in a temp directory the way ``pullmode demo`` does, ``dagster-webserver`` on loopback, its
GraphQL API, and headless Chromium for screenshots. Nothing here talks to anything but 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pullmode_dagster.cli.pull import PullOutcome, pull_sources
from pullmode_dagster.demo.run import CLAUDE_URL_ENV, TOKEN_URL_ENV, start_api, start_bucket, start_copilot
from pullmode_dagster.demo.setup import prepare_demo

from .helpers import free_port, install_quick_config

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = REPO_ROOT / "workspace.yaml"
LOCATION = "pullmode"
REPOSITORY = "__repository__"

CHROMIUM_ENV = "PULLMODE_CHROMIUM"
"""An explicit Chromium binary; default Debian's ``/usr/bin/chromium`` (else ``chromium`` on PATH)."""
SCREENSHOT_DIR_ENV = "PULLMODE_SCREENSHOT_DIR"
"""Where the screenshots are copied for a person to look at; default ``.pullmode/ui-screenshots``."""


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def find_chromium() -> str | None:
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def require_chromium() -> str:
    """The Chromium binary. Missing: in CI (``CI=true``) the test fails, since ``.ci/run`` installs
    it and a silent skip would hide a broken install; elsewhere it skips, saying how to install it."""
    path = find_chromium()
    if path:
        return path
    if running_in_ci():
        pytest.fail(
            "chromium not found (CI=true): .ci/run installs Debian's chromium with apt-get before `make test`; "
            f"check its output, or set {CHROMIUM_ENV} to the binary",
            pytrace=False,
        )
    pytest.skip(f"chromium not installed: `apt-get install -y chromium` (Debian), or set {CHROMIUM_ENV}")


def screenshot_dir() -> Path:
    configured = os.environ.get(SCREENSHOT_DIR_ENV)
    return Path(configured) if configured else REPO_ROOT / ".pullmode" / "ui-screenshots"


@dataclass
class DemoLayout:
    root: Path
    sources_dir: Path
    env: dict[str, str]
    """What a process serving this demo needs: sources, instance, store, the vendors' fake endpoints."""
    outcomes: list[PullOutcome] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


@contextmanager
def demo_environment(root: Path, *, pull: bool = True) -> Iterator[DemoLayout]:
    """``pullmode demo`` in ``root``: the demo API, the demo bucket (moto) and the Copilot Studio
    fakes on free loopback ports, the demo sources under ``root/demo/sources``, the repository's
    ``dagster.yaml`` in ``root`` (DAGSTER_HOME, and the working directory, so its relative storage
    lands there), the trace store in ``root``, and (``pull``) one ``pullmode pull --all``. The
    environment and working directory are restored and the servers stopped on exit."""
    install_quick_config(root)
    log: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name in ("PULLMODE_ALERT_WEBHOOK_URL", "PULLMODE_UI_BASE_URL"):
            mp.delenv(name, raising=False)
        api = start_api(0)
        bucket = copilot = None
        try:
            bucket = start_bucket(0, log.append)
            if bucket is None:
                raise RuntimeError("; ".join(log) or "the demo bucket did not start")
            copilot = start_copilot()
            sources = prepare_demo(
                root / "demo", port=api.server.port, s3_port=bucket.port, dataverse_port=copilot.dataverse.port
            ).resolve()
            env = {
                TOKEN_URL_ENV: copilot.token_url,
                CLAUDE_URL_ENV: api.server.base_url,
                "PULLMODE_SOURCES_DIR": str(sources),
                "DAGSTER_HOME": str(root),
                "PULLMODE_TRACE_STORE_URL": f"sqlite:///{root / 'trace_store.db'}",
            }
            for name, value in env.items():
                mp.setenv(name, value)
            layout = DemoLayout(root, sources, env, log=log)
            if pull:
                # The workspace file keys the pollers' cursors as the webserver's code location does.
                layout.outcomes = pull_sources([], all_sources=True, workspace=WORKSPACE, echo=log.append)
            yield layout
        finally:
            api.server.stop()
            if copilot is not None:
                copilot.stop()
            if bucket is not None:
                bucket.stop()


class GraphQLError(AssertionError):
    pass


class Webserver:
    """``dagster-webserver`` on 127.0.0.1 serving ``workspace.yaml`` (``options``: more of its command
    line, such as ``--read-only``), started in its own process group so stopping it also stops the
    code server it spawned."""

    def __init__(
        self,
        *,
        cwd: Path,
        env: dict[str, str],
        workspace: Path = WORKSPACE,
        port: int | None = None,
        options: tuple[str, ...] = (),
    ):
        self.cwd = cwd
        self.options = options
        self.env = {**os.environ, **env}
        self.workspace = workspace
        self.port = port or free_port()
        self.log_path = cwd / "dagster-webserver.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(trust_env=False, timeout=30.0)  # loopback: never through a proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 90.0) -> Webserver:
        command = [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(self.port)]
        command += ["-w", str(self.workspace), *self.options]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        self._wait(deadline, self._answers_server_info, "answer /server_info")
        self._wait(deadline, self._location_loaded, f"load code location {LOCATION!r}")
        return self

    def _wait(self, deadline: float, ready: Any, what: str) -> None:
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"dagster-webserver exited ({self.process.returncode}) before it could {what}:\n{self.log_tail()}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"dagster-webserver did not {what} in time:\n{self.log_tail()}")
            time.sleep(0.25)

    def _answers_server_info(self) -> bool:
        try:
            response = self.client.get(f"{self.url}/server_info", timeout=2.0)
        except httpx.TransportError:
            return False
        try:
            return response.status_code == 200 and "dagster_webserver_version" in response.json()
        except ValueError:  # not the webserver (yet)
            return False

    def _location_loaded(self) -> bool:
        data = self.graphql(
            """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
                 locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        )
        for entry in data["workspaceOrError"].get("locationEntries", []):
            if entry["name"] != LOCATION or entry["loadStatus"] != "LOADED":
                continue
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                raise AssertionError(f"code location {LOCATION!r} failed to load: {loaded['message']}")
            return True
        return False

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}})
        body = response.json()
        if response.status_code != 200 or body.get("errors"):
            raise GraphQLError(f"GraphQL {response.status_code}: {body.get('errors') or body}")
        return body["data"]

    def stop(self) -> None:
        self.client.close()
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)  # the group this process leads: the webserver and its code server
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # A code server that outlived a clean exit of the webserver still sits in the group.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> Webserver:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Chromium:
    """Headless Chromium loading one URL at a time: a PNG screenshot, or the DOM once the page's
    scripts ran for ``budget_ms`` of virtual time."""

    def __init__(self, binary: str, profile: Path, *, budget_ms: int = 15000, timeout: float = 60.0):
        self.binary = binary
        self.profile = profile
        self.budget_ms = budget_ms
        self.timeout = timeout

    def _run(self, url: str, action: str, budget_ms: int | None) -> subprocess.CompletedProcess[bytes]:
        command = [
            self.binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-proxy-server",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # loopback only
            "--hide-scrollbars",
            f"--user-data-dir={self.profile}",
            "--window-size=1400,1000",
            f"--virtual-time-budget={budget_ms or self.budget_ms}",
            action,
            url,
        ]
        result = subprocess.run(command, capture_output=True, timeout=self.timeout, check=False)
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace")[-2000:]
            raise AssertionError(f"chromium exited {result.returncode} loading {url}:\n{stderr}")
        return result

    def screenshot(self, url: str, path: Path, *, budget_ms: int | None = None) -> Path:
        path.unlink(missing_ok=True)
        self._run(url, f"--screenshot={path}", budget_ms)
        return path

    def dom(self, url: str, *, budget_ms: int | None = None) -> str:
        return self._run(url, "--dump-dom", budget_ms).stdout.decode(errors="replace")

    def rendered(self, url: str, expected: list[str], *, attempts: int = 3) -> tuple[str, int]:
        """The DOM once every ``expected`` text is in it, doubling the virtual time budget while
        some are missing (a slow machine); returns the DOM and the budget that sufficed."""
        budget = self.budget_ms
        for attempt in range(attempts):
            dom = self.dom(url, budget_ms=budget)
            missing = [text for text in expected if text not in dom]
            if not missing:
                return dom, budget
            if attempt == attempts - 1:
                raise AssertionError(
                    f"{url} did not render {missing} within {budget} ms of virtual time (DOM: {len(dom)} chars)"
                )
            budget *= 2
        raise AssertionError("unreachable")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (raises when the file is not a PNG)."""
    head = path.read_bytes()[:24]
    if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise AssertionError(f"{path} is not a PNG (starts {head[:16]!r})")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
