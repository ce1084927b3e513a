"""``http_polling``: paginated REST APIs (audit logs, compliance APIs, job histories).

Pagination styles: a cursor from the body (``cursorJsonPath``) sent back as ``cursorQueryParam``; a
cursor that is an absolute URL (``@odata.nextLink``) requested as is; a cursor from a response header
(``cursorHeader``); ``hasMoreJsonPath`` to end paging. A page that hands back a cursor already seen
in this pull is a loop and stops the pull with an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal

import httpx
from pydantic import Field, field_validator

from ..cursor import CursorState
from ..declare.models import ConfigProblem
from ..declare.templating import Template
from ..errors import PullError
from ..events.jsonpath import MISSING, check_path, compile_path
from ..events.mapping import EventMapping
from ..events.rules import parse_timestamp
from ..fetch.auth import HeaderAuth
from ..fetch.session import BadBody, plain_json_body, safe_url, same_origin
from .base import NEW, HttpSourceConfig, Page, Position, ProbeAnswer, Puller, Window
from .registry import Adapter, register

ParamValue = str | int | float | bool | list[str]


class HttpPollingSource(HttpSourceConfig):
    """An ``http_polling`` source file."""

    adapter: Literal["http_polling"]
    url: str
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, ParamValue] = Field(default_factory=dict)
    body: str | None = None
    auth_mode: Literal["bearer", "header_template"] = "header_template"
    events_json_path: str
    cursor_json_path: str | None = None
    cursor_query_param: str = "cursor"
    cursor_header: str | None = None
    has_more_json_path: str | None = None
    event_mapping: EventMapping
    incremental_params: dict[str, ParamValue] = Field(default_factory=dict)
    window_params: dict[str, ParamValue] = Field(default_factory=dict)

    @field_validator("events_json_path", "cursor_json_path", "has_more_json_path")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return check_path(value)

    @field_validator("params", "incremental_params", "window_params")
    @classmethod
    def _stringify(cls, value: dict[str, ParamValue]) -> dict[str, ParamValue]:
        def text(v: Any) -> str:
            return ("true" if v else "false") if isinstance(v, bool) else str(v)

        return {k: [text(x) for x in v] if isinstance(v, list) else text(v) for k, v in value.items()}

    def watermark_rewind_problem(self) -> str | None:
        params = [t for v in self.incremental_params.values() for t in (v if isinstance(v, list) else [v])]
        if any(var.name == "cursor.watermark" for text in params for var in Template(text).variables):
            return None
        return "every pull starts from its first page (no incrementalParams use ${{cursor.watermark}})"

    def problems(self) -> list[ConfigProblem]:
        base = ("credentials", "ingestionSource")
        problems = self.template_problems({"url": self.url, "body": self.body}, scopes=base)
        problems += self.template_problems({f"headers.{k}": v for k, v in self.headers.items()}, scopes=base)
        for field, params, scopes in (
            ("params", self.params, base),
            ("incrementalParams", self.incremental_params, (*base, "cursor")),
            ("windowParams", self.window_params, (*base, "window")),
        ):
            problems += self.template_problems(
                {f"{field}.{k}": t for k, v in params.items() for t in (v if isinstance(v, list) else [v])},
                scopes=scopes,
            )
        if not self.url.startswith(("http://", "https://", "${{")):
            problems.append(("url", "must be an absolute http:// or https:// URL"))
        authority = re.split(r"[/?#]", self.url.partition("://")[2], maxsplit=1)[0]
        if "credentials." in authority and "${{" in authority:
            problems.append(
                (
                    "url",
                    "a credential must not be part of the host, port or user info: it would travel in the "
                    "address itself; send it in a header or a query parameter",
                )
            )
        if self.auth_mode == "bearer" and "token" not in self.credentials:
            problems.append(("authMode", "bearer needs a credential named 'token'"))
        if self.cursor_json_path and self.cursor_header:
            problems.append(("cursorHeader", "set cursorJsonPath or cursorHeader, not both"))
        if self.body is not None and self.method == "GET":
            problems.append(("body", "a body needs method: POST"))
        return problems

    def describe(self) -> str:
        return f"Pulls {self.method} {safe_url(self.url)} (http_polling, {self.events_json_path})"


def _is_absolute(cursor: str) -> bool:
    return cursor.startswith(("http://", "https://"))


class HttpPosition(Position):
    page_cursor: str | None = None
    """The next page of an unfinished pagination (a pull stopped by maxPagesPerRun or its deadline)."""


class HttpPollingPuller(Puller):
    config_model = HttpPollingSource
    position_model = HttpPosition
    source: HttpPollingSource

    def _render_params(self, params: dict[str, ParamValue], ctx: dict[str, Any]) -> dict[str, Any]:
        return {
            k: [Template(x).render(ctx) for x in v] if isinstance(v, list) else Template(v).render(ctx)
            for k, v in params.items()
        }

    def _headers(self, ctx: dict[str, Any], body: str | None) -> tuple[dict[str, str], HeaderAuth]:
        """Headers as rendered: the plain ones, and an auth holding those that carry a credential
        (the session sends them to the configured origin only)."""
        src = self.source
        headers: dict[str, str] = {}
        secret: set[str] = set()
        for key, text in src.headers.items():
            template = Template(text)
            headers[key] = template.render(ctx)
            if template.uses_scope("credentials"):
                secret.add(key.lower())
        if src.auth_mode == "bearer" and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = f"Bearer {self.credentials['token']}"
            secret.add("authorization")
        if body is not None and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json" if body.lstrip()[:1] in ("{", "[") else "text/plain"
        for key, value in headers.items():
            if not value.isascii():
                uses = "a credential it uses holds" if key.lower() in secret else "it holds"
                raise PullError(
                    f"source {src.name!r}: headers.{key}: {uses} non-ASCII characters; HTTP headers must be ASCII"
                )
        url = Template(src.url).render(ctx)
        public = {k: v for k, v in headers.items() if k.lower() not in secret}
        return public, HeaderAuth({k: v for k, v in headers.items() if k.lower() in secret}, origin=url)

    def _start(
        self, ctx: dict[str, Any], start: CursorState, window: Window | None
    ) -> tuple[dict[str, Any], str | None]:
        """The query parameters of the first request and the page cursor to resume from: a window's
        parameters, or the incremental ones after a drained pull, or the stored page cursor."""
        src = self.source
        params = self._render_params(src.params, ctx)
        if window is not None:
            params.update(self._render_params(src.window_params, {**ctx, "window": vars(window)}))
            return params, None
        if start.watermark and src.incremental_params:
            cursor_ctx = {**ctx, "cursor": {"watermark": parse_timestamp(start.watermark)}}
            params.update(self._render_params(src.incremental_params, cursor_ctx))
        page_cursor = self.position(start).page_cursor
        return params, page_cursor  # unsealed by the engine (fetch/sealing.py)

    def probe(self, start: CursorState) -> ProbeAnswer:
        """The run's first request, with the incremental parameters; a stored page cursor is an
        unfinished pagination: news without asking."""
        if self.position(start).page_cursor is not None:
            return NEW
        return self.first_page_probe(start)

    def pages(self, start: CursorState, *, window: Window | None = None) -> Iterator[Page]:
        src = self.source
        ctx: dict[str, Any] = {"credentials": self.credentials, "ingestionSource": src.template_fields()}
        url = Template(src.url).render(ctx)
        body = Template(src.body).render(ctx) if src.body is not None else None
        public_headers, auth = self._headers(ctx, body)
        params, cursor = self._start(ctx, start, window)
        secret_params = {
            k for k, v in src.params.items() if any(Template(t).uses_scope("credentials") for t in _texts(v))
        }

        events_path = compile_path(src.events_json_path)
        cursor_path = compile_path(src.cursor_json_path) if src.cursor_json_path else None
        has_more_path = compile_path(src.has_more_json_path) if src.has_more_json_path else None
        seen: set[str] = {cursor} if cursor else set()

        with self.session(auth=auth) as http:
            for number in self.page_numbers():
                what = f"source {src.name!r}: page {number}"
                if cursor is None:
                    request_url, request_params = url, params
                elif _is_absolute(cursor):
                    request_url, request_params = cursor, None
                else:
                    request_url, request_params = url, {**params, src.cursor_query_param: cursor}
                trusted = same_origin(request_url, url)
                if not trusted:
                    request_url, request_params = self._to_foreign_origin(
                        what, url, request_url, request_params, secret_params
                    )
                try:
                    response = http.send(
                        src.method,
                        request_url,
                        what=what,
                        headers=public_headers,
                        params=request_params,
                        content=body,
                        accept=lambda r, what=what: self._page_body(r, events_path, what),
                    )
                finally:
                    self.requests = http.requests
                self._check_status(response, what)
                doc, records, plain = response.extensions["accepted"]
                next_cursor = self._next_cursor(cursor_path, response, doc)
                has_more = has_more_path.first(doc) if has_more_path else MISSING
                drained = next_cursor is None or has_more is False or has_more in ("false", "False", 0)
                yield Page(
                    records=records,
                    nbytes=len(response.content),
                    location=f"page {number}",
                    resume={"page_cursor": None if drained else next_cursor},  # the engine seals it
                    drained=drained,
                    plain=plain,
                )
                if drained:
                    return
                assert next_cursor is not None
                if next_cursor in seen:
                    raise PullError(
                        f"{what}: pagination loop: the response returned a cursor already requested in "
                        f"this pull ({_short(self.redact(next_cursor))}); check "
                        f"{'cursorHeader' if src.cursor_header else 'cursorJsonPath'}"
                    )
                seen.add(next_cursor)
                cursor = next_cursor

    def _to_foreign_origin(
        self, what: str, url: str, request_url: str, params: dict[str, Any] | None, secret_params: set[str]
    ) -> tuple[str, dict[str, Any] | None]:
        """A next page on another origin gets nothing that references a credential: no credential
        header or parameter, no body that templates one, and no secret the link itself carries."""
        src = self.source
        where = self.redact(safe_url(request_url))
        if src.body is not None and Template(src.body).uses_scope("credentials"):
            raise PullError(
                f"{what}: the next page is on another origin ({where}) and the request body references a "
                f"credential, which is only ever sent to {safe_url(httpx.URL(url).copy_with(path='/'))}; not requested"
            )
        link = httpx.URL(request_url)
        kept = [(k, v) for k, v in link.params.multi_items() if self.redact(k) == k and self.redact(v) == v]
        dropped = len(link.params.multi_items()) - len(kept)
        link = link.copy_with(params=kept) if dropped else link
        if self.redact(str(link)) != str(link):
            raise PullError(
                f"{what}: the next page link is on another origin ({where}) and carries a credential in its "
                "address; not requested"
            )
        note = f" and {dropped} query parameter(s) holding a credential removed from the link" if dropped else ""
        self.context.logger.warning(
            f"{what}: next page is on another origin ({where}); requested without credentials{note}"
        )
        if params is not None:
            params = {k: v for k, v in params.items() if k not in secret_params}
        return str(link), params

    def _check_status(self, response: Any, what: str) -> None:
        if response.status_code >= 300:
            where = self.redact(safe_url(response.request.url))
            snippet = self.quote(response.text) if response.content else ""
            kind = "redirect (redirects are not followed)" if response.status_code < 400 else "error"
            raise PullError(
                f"{what}: HTTP {response.status_code} {kind} from {where}" + (f": {snippet}" if snippet else "")
            )

    def _page_body(self, response: Any, events_path: Any, what: str) -> tuple[Any, list[Any], bool]:
        """The page's JSON, its records and whether they are plain JSON. A body that is not the
        promised JSON (an HTML error page under 200, a body cut short) raises BadBody, and the
        request is tried again."""
        doc, plain = plain_json_body(response, what)
        # A general path's matches may be values it computed (jsonpath-ng arithmetic): not plain.
        return doc, self._records(events_path, doc, what), plain and events_path.is_simple

    def _records(self, path: Any, doc: Any, what: str) -> list[Any]:
        if path.is_simple:
            value = path.first(doc)
            if value is MISSING:
                raise BadBody(f"eventsJsonPath {path.text} matched nothing in the response")
            if value is None:
                return []
            if not isinstance(value, list):
                raise BadBody(f"eventsJsonPath {path.text} is a {type(value).__name__}, not an array")
            return value
        matches = path.all(doc)
        if len(matches) == 1 and isinstance(matches[0], list):
            return matches[0]
        return matches

    def _next_cursor(self, cursor_path: Any, response: Any, doc: Any) -> str | None:
        if self.source.cursor_header:
            value: Any = response.headers.get(self.source.cursor_header)
        elif cursor_path is not None:
            value = cursor_path.first(doc)
        else:
            return None
        if value is MISSING or value is None or value == "" or isinstance(value, bool):
            return None
        return value if isinstance(value, str) else str(value)


def _texts(value: ParamValue) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


register(Adapter("http_polling", HttpPollingSource, HttpPollingPuller, kind="http"))
