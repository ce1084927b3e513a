"""The one-click connectors' contract table: each vendor fake (demo/vendors/) as data the contract suite
(test_connector_contract.py) and the probe table run over: how to start it, its source, how to publish
events on it, where its secret belongs, and what each shared scenario expects of it. The vendor test
modules take their constants and source builders from here."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pullmode_dagster.demo.server import LoopbackServer, Request
from pullmode_dagster.demo.vendors.claude import PATH as CLAUDE_PATH
from pullmode_dagster.demo.vendors.claude import ActivityFeedAPI, mixed_activities
from pullmode_dagster.demo.vendors.copilot import API_PATH, CLIENT_ID, TENANT_ID, CopilotStudioAPI, transcript
from pullmode_dagster.demo.vendors.openai import WORKSPACE_ID, ComplianceLogsAPI, auth_log_record

from .documents import connector_source, document

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY2 = T0 + timedelta(days=1, hours=9)
"""Where the Dagster scenario's second batch starts: the window run's partition is 2026-03-02."""
WRONG = "not-the-right-secret-31337"
FIXED = {"url": "https://example.com/x", "headers": {"x-api-key": "abc"}, "params": {"limit": "10"},
         "authMode": "bearer", "cursorJsonPath": "$.last_id", "eventMapping": {"event_timestamp": "$.t"}}  # fmt: skip
"""Fields a one-click connector fixes (reference.FIXED_HTTP_FIELDS), each with a value a source may not set."""

CLAUDE_ENV = "PULLMODE_CLAUDE_COMPLIANCE_BASE_URL"
CLAUDE_KEY = "sk-ant-api01-test-4242-claude-key"
CLAUDE_NAME = "claude_activity"
OPENAI_ENV = "PULLMODE_OPENAI_COMPLIANCE_BASE_URL"
OPENAI_KEY = "sk-oai-compliance-test-4242-key"
OPENAI_NAME = "chatgpt_compliance"
COPILOT_ENV = "PULLMODE_COPILOT_STUDIO_TOKEN_URL"
COPILOT_SECRET = "Xq8Q~copilot.test-secret_4242abcd"  # Entra secret values look like this
COPILOT_NAME = "copilot_transcripts"


def claude_source(**overrides: Any) -> dict[str, Any]:
    key = {"api_key": {"env": "ANTHROPIC_COMPLIANCE_KEY"}}
    return document(connector_source("claude_compliance", CLAUDE_NAME, key), overrides)


def openai_source(**overrides: Any) -> dict[str, Any]:
    key = {"api_key": {"env": "OPENAI_COMPLIANCE_KEY"}}
    fields = {"workspaceId": WORKSPACE_ID, "eventTypes": ["AUTH_LOG", "CODEX_LOG"], "schedule": "*/15 * * * *"}
    return document(connector_source("openai_compliance", OPENAI_NAME, key, **fields), overrides)


def copilot_source(environment_url: str | None, **overrides: Any) -> dict[str, Any]:
    keys = {n: {"env": f"COPILOT_{n.upper()}"} for n in ("tenant_id", "client_id", "client_secret")}
    fields = {"environmentUrl": environment_url, "schedule": "*/10 * * * *", "maxPageSize": 10}
    return document(connector_source("copilot_studio", COPILOT_NAME, keys, **fields), overrides)


def aid(i: int) -> str:
    """The id ``mixed_activities`` gives activity ``i``."""
    return f"activity_01{i:04d}"


def tid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def secret_seen_by(server: LoopbackServer, secret: str = COPILOT_SECRET) -> bool:
    return any(secret in r.url or secret in json.dumps(r.headers) or secret.encode() in r.body for r in server.requests)


@contextmanager
def _running(fake: Any, monkeypatch: pytest.MonkeyPatch, env: Callable[[Any], dict[str, str]]) -> Iterator[Any]:
    """The fake, started, with the environment its source reads (``env`` of the running fake)."""
    with fake as api:
        for name, value in env(api).items():
            monkeypatch.setenv(name, value)
        yield api


def claude_feed(secret: str, monkeypatch: pytest.MonkeyPatch) -> AbstractContextManager[ActivityFeedAPI]:
    env = {"ANTHROPIC_COMPLIANCE_KEY": secret}
    return _running(ActivityFeedAPI(secret), monkeypatch, lambda api: {CLAUDE_ENV: api.base_url, **env})


def openai_logs(secret: str, monkeypatch: pytest.MonkeyPatch) -> AbstractContextManager[ComplianceLogsAPI]:
    env = {"OPENAI_COMPLIANCE_KEY": secret}
    return _running(ComplianceLogsAPI(secret), monkeypatch, lambda api: {OPENAI_ENV: api.base_url, **env})


def copilot_dataverse(secret: str, monkeypatch: pytest.MonkeyPatch) -> AbstractContextManager[CopilotStudioAPI]:
    env = {"COPILOT_TENANT_ID": TENANT_ID, "COPILOT_CLIENT_ID": CLIENT_ID, "COPILOT_CLIENT_SECRET": secret}
    return _running(CopilotStudioAPI(secret), monkeypatch, lambda api: {COPILOT_ENV: api.token_url, **env})


def publish_openai(api: ComplianceLogsAPI, start: int, stop: int, at: datetime = T0) -> None:
    """One AUTH_LOG file of events ``start`` .. ``stop - 1``: event i at ``at`` + i minutes."""
    records = [
        auth_log_record(f"auth_{i:03d}", at + timedelta(minutes=i), email=f"user{i % 3}@acme.example")
        for i in range(start, stop)
    ]
    if records:
        api.add_file("AUTH_LOG", records, end_time=at + timedelta(minutes=stop))


@dataclass(frozen=True, kw_only=True)
class Vendor:
    """A vendor fake and what the contract expects of it. Texts may name ``{api}`` (the running fake),
    ``{name}`` (the source) and ``{path}`` (its file); ``sent`` maps a query argument to the values the
    data requests carried."""

    adapter: str
    name: str
    secret: str
    secret_env: str
    start: Callable[[str, pytest.MonkeyPatch], AbstractContextManager[Any]]
    source: Callable[..., dict[str, Any]]  # The contract's source document for a running fake (``**overrides``).
    publish: Callable[..., None]  # Events ``start`` .. ``stop - 1`` (``event_id``), from T0 or ``at`` on.
    event_id: Callable[[int], str]
    servers: Callable[[Any], tuple[LoopbackServer, ...]]
    data_path: str  # A regex of the paths whose requests carry the events (pages, listings).
    credential: Callable[[Any], set[str | None]]
    """The credential as the place it belongs received it (one value per request)."""
    credential_form: str
    leaked: Callable[[Any, str], bool]  # Whether a secret reached a request where it does not belong.
    blind: Callable[[Any], list[Request]] = lambda api: []
    """The requests that must hold the secret in no spelling (another host's)."""
    override_warning: str
    echo: dict[str, Any]
    """Attributes that make the fake's refusal quote the secret it was given (the redaction's test)."""
    refused: str  # What a wrong secret fails with: the start of the error (after ``source '<name>': ``).
    refused_paths: list[str]
    refused_data_requests: int
    bad_cursors: list[tuple[dict[str, Any], str]]
    credential_problems: tuple[str, ...]  # for credentials holding tenant_id and token
    lists: tuple[str, ...]  # fields that take a list
    bound: tuple[dict[str, Any], str]  # a limit past its bound, and what validation says
    patches: dict[str, Any] = field(default_factory=dict)
    """Module constants set for the deadline scenario (``monkeypatch.setattr`` targets)."""
    deadline: int
    deadline_reports: list[dict[str, Any]]
    """Each pull's report until drained, 30 events in 6 batches of 5, every page taking a second."""
    deadline_cursor: dict[str, Any]
    next_pulls: tuple[dict[str, Any], dict[str, Any]]
    """A quiet pull's report and the next one's (after 15 new events), both from the first pull's cursor."""
    next_sent: tuple[dict[str, list[str | None]], dict[str, list[str | None]]]
    query_keys: set[str]  # The query arguments of the quiet pull's requests.
    next_cursor: dict[str, Any]
    preview: tuple[str, ...]
    pulls: tuple[tuple[str, ...], tuple[str, ...]]  # What the CLI's first and second pulls print.
    faults: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    """Attributes set on the fake before the CLI's first and second pulls."""
    sent_second: dict[str, list[str | None]]
    calls_second: dict[str, int]
    """Path regexes and how many requests the second pull (its probe and its run) sent to each."""
    tail_row: tuple[int, tuple[str | None, ...]]  # An event (actor, action, target) as ``pullmode tail`` shows it.
    rotate: dict[str, Any]  # Attributes that make the fake refuse the secret it was started with.
    rotated: tuple[str, ...]  # What the pull then fails with.
    dagster_first: dict[str, Any]
    dagster_cursor: dict[str, Any]  # Dotted paths into the committed cursor and their values after the first run.
    dagster_calls: dict[str, int]  # The same for the sensor's first ticks and the run.
    window_sent: dict[str, list[str | None]]
    window_duplicates: int

    def seen(self, api: Any) -> list[Request]:
        return [r for server in self.servers(api) for r in server.requests]

    def data(self, api: Any) -> list[Request]:
        return [r for r in self.seen(api) if re.search(self.data_path, r.path)]

    def sent(self, api: Any, arg: str) -> list[str | None]:
        return [r.arg(arg) for r in self.data(api)]

    def calls(self, api: Any, paths: dict[str, int]) -> dict[str, int]:
        return {path: sum(bool(re.search(path, r.path)) for r in self.seen(api)) for path in paths}

    def apply(self, api: Any, attributes: dict[str, Any]) -> None:
        for attribute, value in attributes.items():
            setattr(api, attribute, value)

    def clear(self, api: Any) -> None:
        for server in self.servers(api):
            server.requests.clear()

    def text(self, template: str, api: Any, **more: Any) -> str:
        return template.format(api=api, name=self.name, **more)


CLAUDE = Vendor(
    adapter="claude_compliance",
    name=CLAUDE_NAME,
    secret=CLAUDE_KEY,
    secret_env="ANTHROPIC_COMPLIANCE_KEY",
    start=claude_feed,
    source=lambda api, **o: claude_source(**{"pageSize": 10, **o}),
    publish=lambda api, start, stop, at=T0: api.add(*mixed_activities(stop, at)[start:]),
    event_id=aid,
    servers=lambda api: (api.server,),
    data_path=f"^{CLAUDE_PATH}$",
    credential=lambda api: {r.header("x-api-key") for r in api.requests},
    credential_form="{}",
    leaked=lambda api, secret: any(secret in r.url for r in api.server.requests),
    override_warning="warning: {path}: source '{name}': adapter: " + CLAUDE_ENV + " is set: requests go to "
    "{api.base_url} instead of https://api.anthropic.com",
    echo={"echo_key": True},
    refused="backfill page 1: HTTP 401 the API key was rejected (check credentials.api_key) from "
    "{api.base_url}" + CLAUDE_PATH + ": authentication_error: invalid x-api-key: *** (request-id req_",
    refused_paths=[CLAUDE_PATH],
    refused_data_requests=2,
    bad_cursors=[
        ({"page_cursor": "abc"}, "the cursor does not fit claude_compliance: page_cursor: unknown field"),
        ({"since": "yesterday"}, "the cursor does not fit claude_compliance: since: Value error, must be an RFC 3339"),
        (
            {"before_id": "a", "after_id": "b"},
            "the cursor does not fit claude_compliance: .*before_id \\(incremental\\) does not go with",
        ),
        (
            {"after_id": "b"},
            "the cursor does not fit claude_compliance: "
            ".*after_id \\(an unfinished backfill\\) needs its since and until",
        ),
    ],
    credential_problems=(
        "credentials.api_key: required: a Compliance Access Key",
        "credentials.token: claude_compliance takes one credential, api_key",
    ),
    lists=("activityTypes", "actorIds"),
    bound=({"pageSize": 10_000}, "pageSize: Input should be less than or equal to 5000"),
    deadline=2,
    deadline_reports=[{"pages": 2, "written": 20, "duplicates": 0}, {"pages": 1, "written": 10, "duplicates": 0}],
    deadline_cursor={"": {"v": 1, "before_id": aid(29), "watermark": "2026-03-01T03:16:00.000000Z"}},
    next_pulls=({"written": 0, "requests": 1}, {"written": 15, "duplicates": 0, "requests": 2}),
    # Each page is the block right after the cursor; its first_id (its newest) is the next cursor.
    next_sent=(
        {"before_id": [aid(24)], "exclude_activity_types[]": ["compliance_api_accessed"]},  # the default
        {"before_id": [aid(24), aid(34)], "created_at.gte": [None, None], "after_id": [None, None]},
    ),
    query_keys={"before_id", "created_at.lt", "limit", "exclude_activity_types[]"},
    next_cursor={"": {"v": 1, "before_id": aid(39), "watermark": "2026-03-01T04:26:00.000000Z"}},
    preview=(
        "user0@acme.example  claude_chat_created  claude_chat_010024",
        "adminkey_010020  api_key_created  apikey_010020",
        "first page: 10 events, 0 rejected",
        "a next page exists",
    ),
    pulls=(
        ("{name}: 25 written, 0 duplicates skipped, 0 rejected, 3 pages",),
        ("{name}: 12 written, 0 duplicates skipped, 0 rejected, 2 pages",),
    ),
    # The probe's limit=1 question, then the run's pages: all after the committed activity.
    sent_second={"before_id": [aid(24), aid(24), aid(34)], "limit": ["1", "10", "10"]},
    calls_second={CLAUDE_PATH: 3},
    tail_row=(26, ("adminkey_010026", "api_key_created", "apikey_010026")),
    rotate={"api_key": "sk-ant-api01-rotated-elsewhere-0000"},
    rotated=("HTTP 401", "invalid x-api-key: ***"),
    dagster_first={"events_written": 24, "duplicates_skipped": 0, "drained": True},
    dagster_cursor={"before_id": aid(103), "watermark": "2026-03-02T21:01:00.000000Z"},
    dagster_calls={CLAUDE_PATH: 4},
    window_sent={
        "created_at.gte": ["2026-03-02T00:00:00Z"],
        "created_at.lt": ["2026-03-03T00:00:00Z"],
        "before_id": [None],
    },
    window_duplicates=4,
)

OPENAI = Vendor(
    adapter="openai_compliance",
    name=OPENAI_NAME,
    secret=OPENAI_KEY,
    secret_env="OPENAI_COMPLIANCE_KEY",
    start=openai_logs,
    source=lambda api, **o: openai_source(**{"eventTypes": ["AUTH_LOG"], **o}),
    publish=publish_openai,
    event_id=lambda i: f"auth_{i:03d}",
    servers=lambda api: (api.api, api.storage),
    data_path="/logs$",
    credential=lambda api: {r.header("authorization") for r in api.api.requests},
    credential_form="Bearer {}",
    # The signed-URL host on its other port never gets the key, nor any Authorization header.
    leaked=lambda api, secret: api.storage_saw_authorization or secret_seen_by(api.storage, secret),
    blind=lambda api: api.storage.requests,
    override_warning="warning: {path}: source '{name}': adapter: " + OPENAI_ENV + " is set: requests go to "
    "{api.base_url}",
    echo={},  # it always does
    refused="AUTH_LOG: listing 1: HTTP 401 the Compliance API key was rejected (check credentials.api_key) from "
    "{api.base_url}/workspaces/" + WORKSPACE_ID + '/logs: {{"error": {{"message": "Incorrect API key provided: ***", '
    '"type": "invalid_request_error", "code": "invalid_api_key"}}}}',
    refused_paths=[f"/v1/compliance/workspaces/{WORKSPACE_ID}/logs"],
    refused_data_requests=2,
    bad_cursors=[
        ({"page_cursor": "abc"}, "the cursor does not fit openai_compliance: page_cursor: unknown field"),
        (
            {"streams": {"AUTH_LOG": {"aftr": "2026-03-01T00:00:00Z"}}},
            "the cursor does not fit openai_compliance: .*streams.AUTH_LOG.aftr: unknown field",
        ),
        (
            {"streams": {"AUTH_LOG": {"after": "yesterday"}}},
            "the cursor does not fit openai_compliance: streams.AUTH_LOG.after: Value error, must be an ISO",
        ),
    ],
    credential_problems=(
        "credentials.api_key: required",
        "credentials.token: openai_compliance takes one credential, api_key",
    ),
    lists=("eventTypes",),
    bound=({"maxFileBytes": 1000}, "maxFileBytes: Input should be greater than or equal to 1048576"),
    # Files stream in pages of 2 records: 3 pages a file, and a pull stops only between files.
    patches={"pullmode_dagster.engine.adapters.openai_compliance.RECORDS_PER_PAGE": 2},
    deadline=4,
    deadline_reports=[{"pages": 6, "files": 2, "written": 10, "duplicates": 0}] * 3,
    deadline_cursor={"streams.AUTH_LOG.after": "2026-03-01T00:30:00Z"},
    next_pulls=({"written": 0, "files": 0, "requests": 1}, {"written": 15, "duplicates": 0, "files": 1}),
    next_sent=({"after": ["2026-03-01T00:25:00Z"]}, {"after": ["2026-03-01T00:25:00Z"]}),
    query_keys={"event_type", "limit", "after"},
    next_cursor={"streams.AUTH_LOG.after": "2026-03-01T00:40:00Z"},
    preview=("user1@acme.example  login", "first page: 25 events, 0 rejected"),
    pulls=(
        ("{name}: 25 written, 0 duplicates skipped, 0 rejected, 1 files",),
        ("{name}: 12 written, 0 duplicates skipped, 0 rejected, 1 files",),
    ),
    # The probe's listing, then the run's: both from the committed position.
    sent_second={"after": ["2026-03-01T00:25:00Z"] * 2},
    # The boundary file listed again is not downloaded again; the new one is, from the signed-URL host.
    calls_second={"/logs$": 2, "/logs/log_": 1, "^/signed/": 1},
    tail_row=(26, ("user2@acme.example", "login", None)),
    rotate={"api_key": "sk-rotated-elsewhere-0000"},
    rotated=("HTTP 401",),
    dagster_first={"events_written": 24, "duplicates_skipped": 0, "drained": True},
    dagster_cursor={"streams.AUTH_LOG.after": "2026-03-02T10:44:00Z"},
    dagster_calls={"/logs$": 2},
    window_sent={"after": ["2026-03-02T00:00:00Z"]},
    window_duplicates=4,
)

COPILOT = Vendor(
    adapter="copilot_studio",
    name=COPILOT_NAME,
    secret=COPILOT_SECRET,
    secret_env="COPILOT_CLIENT_SECRET",
    start=copilot_dataverse,
    source=lambda api, **o: copilot_source(api.environment_url, **o),
    publish=lambda api, start, stop, at=T0: api.add(
        *(transcript(tid(i), at + timedelta(minutes=i), aad_object_id=f"aad-user-{i % 3}") for i in range(start, stop))
    ),
    event_id=tid,
    servers=lambda api: (api.login, api.dataverse),
    data_path=f"^{API_PATH}$",
    blind=lambda api: api.dataverse.requests,
    credential=lambda api: {f["client_secret"] for f in api.token_requests()},
    credential_form="{}",
    # The secret goes to the token request only; the token endpoint never gets a bearer token.
    leaked=lambda api, secret: (
        secret_seen_by(api.dataverse, secret) or any("authorization" in r.headers for r in api.login.requests)
    ),
    override_warning="warning: {path}: source '{name}': adapter: " + COPILOT_ENV + " is set: token requests go to "
    "{api.login.base_url}/{{tenant_id}}/oauth2/v2.0/token instead of "
    "https://login.microsoftonline.com/{{tenant_id}}/oauth2/v2.0/token (meant for tests and private gateways only)",
    echo={},
    refused="token request refused, check credentials.client_secret: the client secret is not valid for this app "
    "(enter the secret's Value, not its Secret ID) (HTTP 401 invalid_client from {api.login.base_url}/***/oauth2/v2.0/"
    "token: AADSTS7000215: Invalid client secret provided.",
    refused_paths=[f"/{TENANT_ID}/oauth2/v2.0/token"],
    refused_data_requests=0,
    bad_cursors=[
        ({"page_cursor": "abc"}, "the cursor does not fit copilot_studio: page_cursor: unknown field"),
        ({"next_link": "https://evil.example/api/data/v9.2/conversationtranscripts?$skiptoken=x"}, "rewind the cursor"),
        (
            {"left_out_through": "yesterday"},
            r"left_out_through: Value error, must be an ISO 8601 timestamp with a zone \(the createdon of a test",
        ),
        ({"left_out_through": 5}, "left_out_through: Input should be a valid string"),
    ],
    credential_problems=(
        "credentials.client_id: required: the application (client) id",
        "credentials.client_secret: required: a client secret of that app registration",
        "credentials.token: copilot_studio takes three credentials: tenant_id, client_id",
    ),
    lists=("botIds",),
    bound=({"maxPageSize": 5001}, "maxPageSize: Input should be less than or equal to 5000"),
    deadline=2,
    deadline_reports=[{"pages": 2, "written": 20, "duplicates": 0}, {"pages": 1, "written": 10, "duplicates": 0}],
    deadline_cursor={"watermark": "2026-03-01T00:29:00.000000Z"},
    next_pulls=({"written": 0, "duplicates": 1, "requests": 1}, {"written": 15, "duplicates": 1, "pages": 2}),
    # ge: the watermark's own second is read again (1 row, skipped by the store's key), then the new ones.
    next_sent=(
        {"$filter": ["createdon ge 2026-03-01T00:24:00Z"]},
        {"$filter": ["createdon ge 2026-03-01T00:24:00Z"] * 2},
    ),
    query_keys={"$filter", "$orderby"},
    next_cursor={"watermark": "2026-03-01T00:39:00.000000Z"},
    preview=(
        "copilot_transcripts  aad-user-1  conversation_transcript  Contoso Helpdesk",
        "first page: 10 events, 0 rejected",
        "a next page exists",
    ),
    pulls=(
        ("{name}: 25 written, 0 duplicates skipped, 0 rejected, 3 pages", '"watermark":"2026-03-01T00:24:00.000000Z"'),
        ("{name}: 12 written, 1 duplicates skipped, 0 rejected, 2 pages",),
    ),
    # Every token expires at the server after one page; then one is revoked after the second pull's first page.
    faults=({"seconds_per_page": 3600}, {"seconds_per_page": 0, "revoke_after_pages": 1}),
    sent_second={"$filter": ["createdon ge 2026-03-01T00:24:00Z"] * 3},
    calls_second={"/oauth2/v2.0/token$": 2},  # one token, and one more after the revocation
    tail_row=(26, ("aad-user-2", "conversation_transcript", "Contoso Helpdesk")),
    rotate={"client_secret": "rotated-elsewhere-0000"},
    rotated=("AADSTS7000215",),
    dagster_first={"events_written": 24, "rejected": 0, "drained": True},
    dagster_cursor={"": {"v": 1, "watermark": "2026-03-02T10:43:00.000000Z"}},
    # The probe's token and the run's: no token outlives its process.
    dagster_calls={"/oauth2/v2.0/token$": 2},
    window_sent={"$filter": ["createdon ge 2026-03-02T00:00:00Z and createdon lt 2026-03-03T00:00:00Z"]},
    window_duplicates=4,
)

VENDORS = {v.adapter: v for v in (CLAUDE, OPENAI, COPILOT)}


def dig(doc: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path; the whole document at ``""``."""
    for key in filter(None, dotted.split(".")):
        doc = doc[key]
    return doc
