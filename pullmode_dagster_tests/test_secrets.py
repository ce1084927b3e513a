"""The canary suite: recognisable secrets, from env and from files (single- and multi-line, non-ASCII,
URL- and JSON-special), driven through success and every failure path of every adapter; then
everything the project printed, logged or stored is scanned for every encoding of them. 0 hits.

What is scanned: CLI output (validate, preview, pull, tail), Python log records, and every byte of
every file the project wrote (Dagster's run, event-log and schedule storage with run configs,
metadata, sensor cursors and compute logs; the trace store with its rejected table), plus every
request a foreign origin received. The enumeration of encodings below is the test's own, written
independently of the redactor it checks.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import shutil
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from pullmode_dagster.cli import main
from pullmode_dagster.cli.sensor_state import SensorCursors
from pullmode_dagster.definitions import build_project
from pullmode_dagster.demo.server import LoopbackServer, Request, Response
from pullmode_dagster.engine.errors import PullError
from pullmode_dagster.engine.fetch.redaction import ENCODINGS, Redactor
from pullmode_dagster.engine.fetch.sealing import Sealer
from pullmode_dagster.engine.fetch.session import safe_url

from .conftest import SourceWriter
from .dagster_helpers import evaluate_sensor
from .documents import canary_custom_source, canary_source, http_source, s3_source
from .fakes import make_events
from .s3_helpers import S3Proxy, ndjson

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "workspace.yaml"

TOKEN = "cnry-tok-9f8e7d6c5b4a3210"  # env; an HTTP header (headers must be ASCII)
KEY = 'cnry-key/+=&?#%"\\ünï-7777'  # file; URL-, JSON- and HTML-special, non-ASCII
MULTI = "cnry-multi-line-one-AAAA\ncnry-multi-line-two-BBBB\n"  # file, several lines
UNI = "cnry-ümlaut-ßecret-€42"  # env, non-ASCII
JS = "cnry-js(!*')~key/ü+ &x"  # env; every URL encoder treats some of it differently
CANARIES = (TOKEN, KEY, MULTI.strip(), UNI, JS)


def lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), text)


def url_spellings(secret: str) -> dict[str, str]:
    """How servers and libraries put ``secret`` in a URL, written independently of the redactor."""
    quote = urllib.parse.quote
    return {
        "upper": quote(secret, safe=""),
        "lower": lower_hex(quote(secret, safe="")),  # as .NET writes them
        "slash": quote(secret),  # Python's quote: '/' left unescaped
        "form": urllib.parse.quote_plus(secret),
        "component": quote(secret, safe="!~*'()"),  # JavaScript encodeURIComponent
        "whatwg": quote(secret, safe="*").replace("~", "%7E").replace("%20", "+"),  # URLSearchParams
        "dotnet": lower_hex(quote(secret, safe="!*()").replace("~", "%7E").replace("%20", "+")),  # HttpUtility
        "twice": quote(quote(secret, safe=""), safe=""),
    }


def forms(secret: str) -> set[str]:
    """Every spelling a server, a URL library, a JSON encoder or a log could give the secret."""
    pieces = {secret, *secret.splitlines()}
    out: set[str] = set()
    for piece in pieces:
        variants = {
            *url_spellings(piece).values(),
            urllib.parse.quote(piece, safe=";/?:@&=+$,#!~*'()"),  # JavaScript encodeURI
            piece,
            urllib.parse.quote(piece, safe=""),
            urllib.parse.quote(piece),
            urllib.parse.quote_plus(piece),
            json.dumps(piece)[1:-1],
            json.dumps(piece, ensure_ascii=False)[1:-1],
            json.dumps(piece).replace("/", "\\/")[1:-1],
            html.escape(piece),
            # Spellings no encoder list names, which the redactor's unescaping net must catch:
            "".join(f"%{b:02X}" for b in piece.encode()),  # every byte percent-encoded
            "".join(f"&#{ord(c)};" for c in piece),  # a decimal character reference for each character
            "".join(c if c.isalnum() else f"&#{ord(c)};" for c in piece),  # Go's html/template
            "".join(c if c.isalnum() else f"&#x{ord(c):X};" for c in piece),  # hex references
            "".join(f"\\u{ord(c):04x}" for c in piece if ord(c) < 0x10000),  # JSON, every character escaped
            base64.b64encode(piece.encode()).decode(),
            base64.urlsafe_b64encode(piece.encode()).decode(),
        }
        out |= {v.lower() for v in variants}
    return {f for f in out if len(f) >= 8}


ALL_FORMS = {form: secret for secret in CANARIES for form in forms(secret)}


def leaks(text: str) -> list[str]:
    lowered = text.lower()
    return sorted({form for form in ALL_FORMS if form in lowered})


def scan_files(root: Path, skip: tuple[Path, ...]) -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if not path.is_file() or any(path.is_relative_to(s) for s in skip):
            continue
        data = path.read_bytes()
        found = leaks(data.decode("utf-8", "ignore")) + leaks(data.decode("latin-1"))
        if found:
            hits[str(path.relative_to(root))] = sorted(set(found))
    return hits


def echo_everything() -> str:
    """A body that echoes every canary in every encoding, as careless servers do."""
    return " | ".join(sorted(f for s in CANARIES for f in forms(s) | {s, s.upper()}))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources_dir: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PULLMODE_TRACE_STORE_URL", f"sqlite:///{tmp_path}/trace.db")
    monkeypatch.setenv("PULLMODE_MAX_ATTEMPTS", "2")  # the failure paths retry: keep them quick
    monkeypatch.setenv("PULLMODE_BACKOFF_INITIAL_SECONDS", "0.01")
    monkeypatch.setenv("CNRY_TOKEN", TOKEN)
    monkeypatch.setenv("CNRY_UNI", UNI)
    monkeypatch.setenv("CNRY_JS", JS)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "key").write_text(KEY + "\n", encoding="utf-8")
    (secrets / "multi").write_text(MULTI, encoding="utf-8")
    return secrets


@pytest.fixture
def other() -> Iterator[LoopbackServer]:
    """Another origin: it must never receive a credential."""
    with LoopbackServer() as server:
        yield server


def echo_query(request: Request) -> str:
    return urllib.parse.urlencode([(k, v) for k, vs in request.query.items() for v in vs])


def run_cli(*args: str) -> str:
    """stdout and stderr together (click 8.2+ interleaves them in ``output``)."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False).output


def drive(name: str, *, pulls: int = 1) -> str:
    """Every entry point a user has: validate, preview, pull (a Dagster run), tail."""
    out = run_cli("validate")
    out += run_cli("preview", name)
    out += run_cli("preview", name, "--json")
    for _ in range(pulls):
        out += run_cli("pull", name, "--workspace", str(WORKSPACE))
        out += run_cli("pull", name, "-v", "--workspace", str(WORKSPACE))
    out += run_cli("tail", "--json", "-n", "100")
    out += run_cli("tail", "-n", "100")
    return out


def assert_nothing_leaked(output: str, caplog: pytest.LogCaptureFixture, tmp_path: Path, secrets: Path) -> None:
    assert leaks(output) == [], output
    assert leaks(caplog.text) == []
    assert scan_files(tmp_path, skip=(secrets, tmp_path / "sources")) == {}


def drive_and_check(
    expected: str, caplog: pytest.LogCaptureFixture, tmp_path: Path, env: Path, *, other: LoopbackServer | None = None
) -> None:
    """Drive the canary source with DEBUG logging: `expected` is in the output, `other` (if given) was never
    requested, and nothing leaked."""
    caplog.set_level(logging.DEBUG)
    output = drive("canary")
    assert expected in output
    if other is not None:
        assert other.requests == []
    assert_nothing_leaked(output, caplog, tmp_path, env)


Flow = Callable[[LoopbackServer, LoopbackServer], Response]


def test_the_canaries_are_really_sent_where_they_belong(env: Path, sources: SourceWriter, api: LoopbackServer) -> None:
    """Without this, a suite whose secrets never reach the wire would pass for the wrong reason."""
    api.routes["/v1/events"] = lambda r: Response(200, {"data": make_events(2)})
    sources.write(canary_source(api.url("/v1/events"), env))
    run_cli("preview", "canary")
    sent = api.requests[0]
    assert sent.header("authorization") == f"Bearer {TOKEN}"
    assert (sent.arg("key"), sent.arg("multi"), sent.arg("uni"), sent.arg("js")) == (KEY, MULTI.rstrip("\n"), UNI, JS)


def test_success_with_echoing_next_links_on_this_and_another_origin(
    env: Path,
    sources: SourceWriter,
    api: LoopbackServer,
    other: LoopbackServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    def feed(request: Request) -> Response:
        page = int(request.arg("page") or 1)
        if page == 1:
            nxt = api.url(f"/v1/events?{echo_query(request)}&page=2")  # the same origin echoes the query
        else:
            nxt = other.url(f"/v1/more?{echo_query(request)}&page=3")  # so does a link elsewhere
        return Response(200, {"data": make_events(5, start=page * 5), "next": nxt})

    api.routes["/v1/events"] = feed
    other.routes["/v1/more"] = lambda r: Response(200, {"data": make_events(5, start=99), "next": None})
    # One page per pull: the echoing link is what gets committed, shown and handed to the next run.
    sources.write(canary_source(api.url("/v1/events"), env, cursorJsonPath="$.next", maxPagesPerRun=1))
    caplog.set_level(logging.DEBUG)
    output = drive("canary", pulls=3)
    assert "canary: 5 written" in output
    assert all(leaks(f"{r.url} {r.headers} {r.body!r}") == [] for r in other.requests)
    assert other.requests, "the foreign next link was never followed"
    assert_nothing_leaked(output, caplog, tmp_path, env)


@pytest.mark.parametrize(
    "answer",
    [
        lambda api, other: Response(401, echo_everything(), {"Content-Type": "text/plain"}),
        lambda api, other: Response(403, {"error": echo_everything()}),
        lambda api, other: Response(200, f"<html>{echo_everything()}</html>", {"Content-Type": "text/html"}),
        lambda api, other: Response(200, {"data": "x" + echo_everything()}),
        lambda api, other: Response(302, echo_everything(), {"Location": other.url(f"/x?k={urllib.parse.quote(KEY)}")}),
        lambda api, other: Response(500, echo_everything()),
    ],
    ids=["401-echo", "403-json-echo", "html-200", "not-an-array", "redirect-elsewhere", "500-echo"],
)
def test_failures_that_echo_the_secrets(
    env: Path,
    sources: SourceWriter,
    api: LoopbackServer,
    other: LoopbackServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    answer: Flow,
) -> None:
    api.routes["/v1/events"] = lambda r: answer(api, other)
    sources.write(canary_source(api.url("/v1/events"), env))
    drive_and_check("FAILED", caplog, tmp_path, env, other=other)  # redirects are not followed, credentials or not


def test_a_post_body_with_a_credential_is_never_sent_to_another_origin(
    env: Path,
    sources: SourceWriter,
    api: LoopbackServer,
    other: LoopbackServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    api.routes["/v1/search"] = lambda r: Response(200, {"data": make_events(3), "next": other.url("/v1/more")})
    other.routes["/v1/more"] = lambda r: Response(200, {"data": [], "next": None})
    sources.write(
        canary_source(
            api.url("/v1/search"),
            env,
            method="POST",
            body='{"key": "${{credentials.key}}", "uni": "${{credentials.uni}}"}',
            cursorJsonPath="$.next",
        )
    )
    drive_and_check("request body references a credential", caplog, tmp_path, env, other=other)


def test_a_next_link_elsewhere_that_carries_a_secret_in_its_path_is_refused(
    env: Path,
    sources: SourceWriter,
    api: LoopbackServer,
    other: LoopbackServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    link = other.url(f"/v1/{urllib.parse.quote(TOKEN)}/more")
    api.routes["/v1/events"] = lambda r: Response(200, {"data": make_events(3), "next": link})
    sources.write(canary_source(api.url("/v1/events"), env, cursorJsonPath="$.next"))
    drive_and_check("carries a credential in its address; not requested", caplog, tmp_path, env, other=other)


def test_network_errors_with_a_credential_in_the_path(
    env: Path, sources: SourceWriter, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from .helpers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1/${{{{credentials.token}}}}/events"
    sources.write(canary_source(url, env))
    drive_and_check("network error", caplog, tmp_path, env)


@pytest.fixture
def denying_proxy(s3: Any, moto_url: str) -> Iterator[tuple[S3Proxy, str]]:
    recorder = S3Proxy(moto_url)
    with LoopbackServer(fallback=recorder) as server:
        yield recorder, server.base_url


def test_s3_success_and_access_denied(
    env: Path,
    sources: SourceWriter,
    s3: Any,
    denying_proxy: tuple[S3Proxy, str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder, endpoint = denying_proxy
    monkeypatch.setenv("CNRY_AWS_ID", "AKIACNRYKEYID00001")
    s3.put_object(Bucket="audit-drops", Key="audit/0.ndjson", Body=ndjson(make_events(4)))
    s3.put_object(Bucket="audit-drops", Key="audit/1.ndjson", Body=ndjson(make_events(4, start=4)))
    sources.write(
        s3_source(
            endpoint,
            name="canary",
            credentials={
                "aws_access_key_id": {"env": "CNRY_AWS_ID"},
                "aws_secret_access_key": {"file": str(env / "key")},
                "aws_session_token": {"env": "CNRY_TOKEN"},
            },
        )
    )
    caplog.set_level(logging.DEBUG)
    output = drive("canary")
    assert "canary: 8 written" in output
    s3.put_object(Bucket="audit-drops", Key="audit/2.ndjson", Body=ndjson(make_events(4, start=8)))
    recorder.denied.add("audit/2.ndjson")
    output += drive("canary")
    assert "AccessDenied" in output
    assert_nothing_leaked(output, caplog, tmp_path, env)


def test_the_redactor_covers_every_form() -> None:
    redact = Redactor(CANARIES)
    assert leaks(redact(echo_everything())) == []
    assert redact("host cnry-tok-9f8e7d6c5b4a3210.example") == "host ***.example"
    assert redact("HOST CNRY-TOK-9F8E7D6C5B4A3210.EXAMPLE") == "HOST ***.EXAMPLE"
    assert redact(json.dumps({"k": KEY})) == '{"k": "***"}'
    assert redact("a\ncnry-multi-line-two-BBBB\nb") == "a\n***\nb"


def test_exceptions_inside_a_custom_puller(
    env: Path,
    sources: SourceWriter,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    package = tmp_path / "canary_pullers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "leaky.py").write_text(
        "from pullmode_dagster import Puller\n\n"
        "class Leaky(Puller):\n"
        "    def pages(self, start, *, window=None):\n"
        "        raise ValueError('could not use ' + ' and '.join(self.credentials.values()))\n"
        "        yield\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sources.write(canary_custom_source("canary_pullers.leaky:Leaky", env))
    drive_and_check(
        "custom puller canary_pullers.leaky:Leaky raised: ValueError: could not use ***", caplog, tmp_path, env
    )


# --- Every spelling, one chokepoint: positions sealed or refused (issue 19, items 1 and 3) ---

NODE_SPELLINGS = {  # what node prints for JS: the encoders themselves, not a reimplementation
    "encodeURIComponent": "cnry-js(!*')~key%2F%C3%BC%2B%20%26x",
    "encodeURI": "cnry-js(!*')~key/%C3%BC+%20&x",
    "escape": "cnry-js%28%21*%27%29%7Ekey/%FC+%20%26x",
    "URLSearchParams": "cnry-js%28%21*%27%29%7Ekey%2F%C3%BC%2B+%26x",
}
NEW_SPELLINGS = {
    **NODE_SPELLINGS,
    **{f"{name} of JS": url_spellings(JS)[name] for name in ("component", "whatwg", "dotnet", "twice")},
    "twice of KEY": url_spellings(KEY)["twice"],
}


@pytest.mark.parametrize("spelled", NEW_SPELLINGS.values(), ids=list(NEW_SPELLINGS))
def test_the_redactor_knows_each_url_spelling(spelled: str) -> None:
    assert (
        Redactor(CANARIES)(f"https://api.example/v1?next={spelled}&page=2") == "https://api.example/v1?next=***&page=2"
    )


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(st.characters(blacklist_categories=("Cs",)), min_size=4, max_size=16),
    form=st.sampled_from(sorted(ENCODINGS)),
    head=st.text("?&=/:#", max_size=6),
    tail=st.text("?&=/:#", max_size=6),
)
def test_a_sealed_spelling_unseals_to_exactly_the_text_that_was_sealed(
    secret: str, form: str, head: str, tail: str
) -> None:
    sealer = Sealer({"key": secret}, Redactor([secret]))
    text = head + ENCODINGS[form](secret) + tail
    sealed = sealer.seal(text)
    assert not sealer.holds_secret(sealed), (text, sealed)
    assert sealer.unseal(sealed, source="s") == text


def test_markers_stored_before_keep_their_meaning_and_an_unknown_one_is_refused() -> None:
    sealer = Sealer({"key": KEY}, Redactor([KEY]))
    stored = {"page_cursor": "?a=${{credentials.key}}&b=${{credentials.key:url}}&c=${{credentials.key:form}}"}
    assert sealer.unseal_position(stored, source="s") == {
        "page_cursor": f"?a={KEY}&b={urllib.parse.quote(KEY, safe='')}&c={urllib.parse.quote_plus(KEY)}"
    }
    with pytest.raises(PullError) as error:
        sealer.unseal_position({"page_cursor": "${{credentials.key:rot13}}"}, source="s")
    assert str(error.value) == (
        "source 's': the stored cursor marks credential 'key' with an unknown encoding 'rot13'; rewind the cursor"
    )


def test_a_position_that_cannot_be_sealed_is_refused_naming_the_source_and_the_field() -> None:
    sealer = Sealer({"key": KEY}, Redactor([KEY]))
    mixed = "cnry-key%2f%2B" + urllib.parse.quote(KEY, safe="")[len("cnry-key%2F%2B") :]  # hex of both cases
    with pytest.raises(PullError) as error:
        sealer.seal_position({"streams": {"a": {"next": f"https://x/?k={mixed}"}}}, source="canary")
    assert str(error.value) == (
        "source 'canary': cursor field 'streams.a.next' holds a credential in a spelling that cannot be sealed "
        "(no encoding reproduces it exactly); refused, never stored or shown"
    )
    assert KEY not in str(error.value) and mixed not in str(error.value)


@pytest.mark.slow
def test_a_same_origin_next_link_echoing_every_spelling_is_sealed_through_pull_and_the_poller(
    env: Path, sources: SourceWriter, api: LoopbackServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    echoed = [f"{name}{i}={spelled}" for i, s in enumerate((KEY, JS)) for name, spelled in url_spellings(s).items()]
    link = api.url("/v1/events?page=2&" + "&".join(echoed))

    def feed(request: Request) -> Response:
        if request.arg("page") == "2":
            return Response(200, {"data": make_events(5, start=5), "next": None})
        return Response(200, {"data": make_events(5), "next": link})

    api.routes["/v1/events"] = feed
    sources.write(canary_source(api.url("/v1/events"), env, cursorJsonPath="$.next", maxPagesPerRun=1))
    caplog.set_level(logging.DEBUG)
    output = run_cli("pull", "canary", "-v", "--workspace", str(WORKSPACE))
    assert "canary: 5 written" in output
    for marker in ("key:url_lower", "key:path", "key:url_twice", "js:component", "js:www_form", "js:dotnet_lower"):
        assert "${{credentials." + marker + "}}" in output, marker

    # The poller pulls on (more to pull): its cursor, the next run's config, that run's checkpoint
    # and cursor_after, and its settled cursor; the next page is requested exactly as the server wrote it.
    project = build_project()
    with dg.DagsterInstance.get() as instance:
        stored = SensorCursors(instance, WORKSPACE).get("canary_poller")
        tick = evaluate_sensor(project.defs, "canary_poller", instance, stored)
        (request,) = tick.run_requests
        assert "${{credentials.js:component}}" in request.run_config["ops"]["ingestion__canary"]["config"]["cursor"]
        run = project.defs.resolve_job_def("canary_pull").execute_in_process(
            run_config=request.run_config,
            instance=instance,
            partition_key=request.partition_key,
            tags=request.tags,
            raise_on_error=False,
        )
        assert run.success
        settled = evaluate_sensor(project.defs, "canary_poller", instance, tick.cursor)
        seen = f"{stored} {tick.cursor} {request.run_config} {request.tags} {settled.cursor} {settled.skip_reason}"
    assert leaks(seen) == []
    (page2,) = [r for r in api.requests if r.arg("page") == "2"]
    assert page2.url == api.base_url + httpx.URL(link).raw_path.decode()
    assert_nothing_leaked(output, caplog, tmp_path, env)


CUSTOM_ECHO = """
import urllib.parse
from pullmode_dagster import Page, Puller
from pullmode_dagster.engine.adapters.base import Position
from pullmode_dagster_tests.fakes import make_events


class NextLink(Position):
    next: str | None = None


class Echoing(Puller):
    position_model = NextLink
    spelling = "{spelling}"

    def pages(self, start, *, window=None):
        token, key = self.credentials["token"], self.credentials["key"]
        link = self.position(start).next
        if link is not None and token not in link:
            raise ValueError("the position came back without the credential")
        mixed = "cnry-key%2f" + urllib.parse.quote(key, safe="")[len("cnry-key%2F"):]
        echo = token if self.spelling == "sealed" else mixed
        yield Page(make_events(3, start=3 if link else 0), nbytes=1, location="page",
                   resume={{"next": f"https://api.example/v1?token={{token}}&key={{echo}}"}}, drained=False)
"""


@pytest.mark.slow
@pytest.mark.parametrize("spelling", ["sealed", "refused"])
def test_a_custom_pullers_position_holding_a_credential_is_sealed_or_refused(
    env: Path,
    sources: SourceWriter,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spelling: str,
) -> None:
    package = tmp_path / f"canary_echo_{spelling}"  # one module per case: an imported one stays imported
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "echoing.py").write_text(CUSTOM_ECHO.format(spelling=spelling))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = f"canary_echo_{spelling}.echoing:Echoing"
    sources.write(canary_custom_source(module, env))
    caplog.set_level(logging.DEBUG)
    output = run_cli("pull", "canary", "--workspace", str(WORKSPACE))
    output += run_cli("pull", "canary", "--workspace", str(WORKSPACE))
    if spelling == "sealed":
        assert "canary: 3 written" in output and "FAILED" not in output, output
        assert '"next":"https://api.example/v1?token=${{credentials.token}}&key=${{credentials.token}}"' in output
    else:
        assert (
            output.count(
                "FAILED: source 'canary': position field 'next' holds a credential in a spelling that cannot be sealed "
                "(no encoding reproduces it exactly); refused, never stored or shown"
            )
            == 2
        ), output
        assert 'committed cursor {"v":1}' in output
    assert_nothing_leaked(output, caplog, tmp_path, env)


@pytest.mark.parametrize(
    "url",
    ["https://user:pa55word@api.example.com/v1/logs?key=k3y#frag", "https://pa55word@api.example.com/v1/logs"],
)
def test_a_url_shown_in_a_message_keeps_no_user_info_query_or_fragment(url: str) -> None:
    shown = safe_url(url)
    assert shown == "https://api.example.com/v1/logs"
    assert "pa55word" not in shown and "user" not in shown and "k3y" not in shown


# --- Spellings the review found (issue 19, item 1): twice-encoded, opaque base64, hex, split, planted ---

ACME = "Sk/Te+st=Key9xQ7"  # the review's key: '/', '+' and '=' are spelled differently by every encoder
ENCODERS_ONCE: dict[str, Callable[[str], str]] = {  # the test's own list of what a URL library writes
    "quote": lambda s: urllib.parse.quote(s, safe=""),
    "quote_slash": urllib.parse.quote,
    "quote_plus": urllib.parse.quote_plus,
    "component": lambda s: urllib.parse.quote(s, safe="!~*'()"),
    "encodeURI": lambda s: urllib.parse.quote(s, safe=";/?:@&=+$,#!~*'()"),
    "whatwg": lambda s: urllib.parse.quote(s, safe="*").replace("~", "%7E").replace("%20", "+"),
    "dotnet": lambda s: lower_hex(urllib.parse.quote(s, safe="!*()").replace("~", "%7E").replace("%20", "+")),
    "go_path": lambda s: urllib.parse.quote(s, safe="$&+,:;=@~"),
}


def twice_spellings(secret: str) -> dict[str, str]:
    """Each encoder applied twice, with either hex case."""
    out: dict[str, str] = {}
    for name, once in ENCODERS_ONCE.items():
        out[f"{name} twice"] = once(once(secret))
        out[f"{name} twice, lower"] = lower_hex(once(lower_hex(once(secret))))
    return out


def opaque(secret: str, before: str) -> str:
    """An opaque cursor: base64 of JSON holding the secret after ``before`` (its length sets the alignment)."""
    return base64.b64encode(json.dumps({before: secret, "p": 2}).encode()).decode()


def hidden_in_base64(secret: str, text: str) -> bool:
    """Whether any base64 or base64url run of ``text``, decoded from any of its four offsets, holds
    ``secret``: independent of how the redactor spells the alignments."""
    needle = secret.encode()
    for run in re.findall(r"[A-Za-z0-9+/_-]{8,}", text):
        for offset in range(4):
            chunk = run[offset:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            for altchars in (b"+/", b"-_"):
                try:
                    if needle in base64.b64decode(chunk, altchars=altchars):
                        return True
                except ValueError:
                    continue
    return False


def review_leaks(text: str, secrets: tuple[str, ...] = (ACME, JS)) -> list[str]:
    """Every spelling of :func:`forms`, twice-encoded, hex or inside base64 of ``secrets`` in ``text``."""
    lowered = text.lower()
    found: set[str] = set()
    for secret in secrets:
        spelled = {*forms(secret), *(s.lower() for s in twice_spellings(secret).values()), secret.encode().hex()}
        found |= {form for form in spelled if form in lowered}
        found |= {f"base64 of {secret}"} if hidden_in_base64(secret, text) else set()
    return sorted(found)


REVIEW_SPELLINGS = {
    "quote_slash twice": twice_spellings(ACME)["quote_slash twice"],  # as in the review
    # The twice-applied forms of JS the redactor did not know (quote and quote_plus twice it did).
    **{f"{n} of JS": v for n, v in twice_spellings(JS).items() if not n.startswith(("quote ", "quote_plus "))},
    "base64 cursor": opaque(ACME, "k"),  # 'eyJrIjogIlNrL1RlK3N0PUtleTl4UTciLCAicCI6IDJ9', as in the review
    **{f"base64 at {len(b) % 3}": opaque(ACME, b) for b in ("kk", "kkk")},
    "base64url cursor": base64.urlsafe_b64encode(b'{"k":"' + ACME.encode() + b'"}').decode(),
    "hex": ACME.encode().hex(),
    "HEX": ACME.encode().hex().upper(),
}


@pytest.mark.parametrize("spelled", REVIEW_SPELLINGS.values(), ids=list(REVIEW_SPELLINGS))
def test_the_redactor_knows_each_spelling_the_review_found(spelled: str) -> None:
    assert review_leaks(spelled), "the test's own scan must see the secret in this spelling"
    redacted = Redactor([*CANARIES, ACME])(f"https://api.example/v1?api_key={spelled}&p=2")
    assert "***" in redacted and review_leaks(redacted) == [], redacted


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(st.characters(blacklist_categories=("Cs",)), min_size=4, max_size=16),
    form=st.sampled_from(sorted(ENCODINGS)),
    head=st.lists(st.sampled_from(["$", "{{", "}}", "${{credentials.key}}", "x", "?a=", "&"]), max_size=6),
    tail=st.lists(st.sampled_from(["$", "{{", "}}", "${{credentials.key:url}}", "$${{", "x", "&"]), max_size=6),
)
def test_server_text_that_looks_like_a_marker_comes_back_as_it_was(
    secret: str, form: str, head: list[str], tail: list[str]
) -> None:
    sealer = Sealer({"key": secret}, Redactor([secret]))
    text = "".join(head) + ENCODINGS[form](secret) + "".join(tail)
    sealed = sealer.seal(text)
    assert sealer.unseal(sealed, source="s") == text, (text, sealed)
    assert sealer.reseal(sealed) == sealed  # a stored cursor sealed again is the same cursor
    assert sealer.unseal(sealer.seal("".join(head + tail)), source="s") == "".join(head + tail)


def test_a_secret_split_across_query_parameters_is_refused() -> None:
    sealer = Sealer({"token": ACME}, Redactor([ACME]))
    with pytest.raises(PullError) as error:
        sealer.seal_position({"page_cursor": "https://x/v1?a=Sk%2FTe%2B&b=st%3DKey9xQ7&p=2"}, source="acme")
    assert str(error.value) == (
        "source 'acme': cursor field 'page_cursor' holds a credential split across query parameters, which cannot "
        "be sealed; refused, never stored or shown"
    )
    assert sealer.seal_position({"page_cursor": "https://x/v1?a=Sk%2FTe%2B&p=2"}, source="acme")  # a piece alone


def acme_source(url: str) -> dict[str, Any]:
    return http_source(
        url,
        name="acme",
        credentials={"token": {"env": "ACME_TOKEN"}},
        headers=None,
        params={"api_key": "${{credentials.token}}"},
        cursorJsonPath="$.next",
        maxPagesPerRun=1,
    )


SPLIT = "a=Sk%2FTe%2B&b=st%3DKey9xQ7"


def written_everywhere(output: str, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> str:
    """The CLI output, the logs and every file the project wrote (Dagster's storage, the trace store)."""
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path / "sources")]
    return "\n".join([output, caplog.text, *(p.read_bytes().decode("latin-1") for p in files)])


@pytest.mark.slow
@pytest.mark.parametrize(
    "echo",
    [REVIEW_SPELLINGS[k] for k in ("quote_slash twice", "base64 cursor", "base64 at 2", "hex", "HEX")] + [SPLIT],
    ids=["quote_slash twice", "base64 cursor", "base64 at 2", "hex", "HEX", "split"],
)
def test_a_next_link_echoing_a_review_spelling_is_sealed_or_refused_through_pull(
    env: Path,
    sources: SourceWriter,
    api: LoopbackServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    echo: str,
) -> None:
    monkeypatch.setenv("ACME_TOKEN", ACME)
    link = api.url("/v1/events?" + (echo if echo == SPLIT else f"api_key={echo}") + "&p=2")

    def feed(request: Request) -> Response:
        if request.arg("p") == "2":
            return Response(200, {"data": make_events(5, start=5), "next": None})
        return Response(200, {"data": make_events(5), "next": link})

    api.routes["/v1/events"] = feed
    sources.write(acme_source(api.url("/v1/events")))
    caplog.set_level(logging.DEBUG)
    output = run_cli("pull", "acme", "-v", "--workspace", str(WORKSPACE))
    output += run_cli("pull", "acme", "-v", "--workspace", str(WORKSPACE))
    assert api.requests[0].arg("api_key") == ACME  # the key really went out
    if echo == SPLIT:
        refusal = (
            "FAILED: source 'acme': position field 'page_cursor' holds a credential split across query parameters, "
            "which cannot be sealed; refused, never stored or shown"
        )
        assert output.count(refusal) == 2, output
        assert 'committed cursor {"v":1}' in output
    else:
        assert "acme: 5 written" in output and "FAILED" not in output, output
        (page2,) = [r for r in api.requests if r.arg("p") == "2"]
        assert page2.url == api.base_url + httpx.URL(link).raw_path.decode()  # exactly as the server wrote it
        assert "${{credentials.token:" in output
    everything = written_everywhere(output, caplog, tmp_path)
    assert review_leaks(everything) == []
    assert echo != SPLIT or "Sk%2FTe%2B" not in everything  # no piece of the split key either


@pytest.mark.slow
def test_a_marker_planted_by_the_server_is_text_not_a_credential(
    env: Path,
    sources: SourceWriter,
    api: LoopbackServer,
    other: LoopbackServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACME_TOKEN", ACME)
    planted = other.url("/steal?x=${{credentials.token}}&p=2")
    api.routes["/v1/events"] = lambda r: Response(200, {"data": make_events(5), "next": planted})
    other.routes["/steal"] = lambda r: Response(200, {"data": make_events(5, start=5), "next": None})
    sources.write(acme_source(api.url("/v1/events")))
    caplog.set_level(logging.DEBUG)
    output = run_cli("pull", "acme", "-v", "--workspace", str(WORKSPACE))
    output += run_cli("pull", "acme", "-v", "--workspace", str(WORKSPACE))
    assert "FAILED" not in output and "not requested" not in output, output
    assert output.count("succeeded; committed cursor") == 2, output
    assert "x=$${{credentials.token}}" in output  # the server's text, escaped: not a marker
    (stolen,) = other.requests  # followed, and the source drained: not stuck
    assert stolen.arg("x") == "${{credentials.token}}" and stolen.arg("api_key") is None
    assert review_leaks(f"{stolen.url} {stolen.headers} {stolen.body!r}") == []
    assert review_leaks(written_everywhere(output, caplog, tmp_path)) == []


UNNAMED_SPELLINGS = {
    "every byte percent-encoded": "".join(f"%{b:02X}" for b in KEY.encode()),
    "decimal references": "".join(f"&#{ord(c)};" for c in KEY),
    "Go html/template": KEY.replace("+", "&#43;"),
    "hex references": KEY.replace("/", "&#x2F;").replace("+", "&#x2b;"),
    "JSON, every character": "".join(f"\\u{ord(c):04x}" for c in KEY),
    "percent, then references": "".join(f"&#{ord(c)};" for c in urllib.parse.quote(KEY, safe="")),
}


@pytest.mark.parametrize("spelled", UNNAMED_SPELLINGS.values(), ids=list(UNNAMED_SPELLINGS))
def test_an_escaped_spelling_no_encoder_names_is_redacted_by_unescaping(spelled: str) -> None:
    redact = Redactor([KEY])
    shown = redact(f"HTTP 403: <p>invalid key {spelled}</p>")
    assert shown == "HTTP 403: <p>invalid key ***</p>"
    assert redact.finds(spelled)
    assert not leaks(shown)


def test_text_with_escapes_but_no_secret_is_shown_as_it_was() -> None:
    text = "50% done; a%20b &amp; c \\u0041 &#43;"
    assert Redactor([KEY])(text) == text


def test_a_number_in_a_position_that_spells_a_credential_is_refused() -> None:
    sealer = Sealer({"token": "73918264"}, Redactor(["73918264"]))
    for position in ({"after": 73918264}, {"f": 73918264.0}, {"nested": [1, {"n": 73918264}]}):
        with pytest.raises(PullError, match=r"source 'numpos': cursor field '.*' is a number that spells a credential"):
            sealer.seal_position(position, source="numpos")
    assert sealer.seal_position({"after": 5, "ok": True}, source="numpos") == {"after": 5, "ok": True}
