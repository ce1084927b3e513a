"""A custom puller for Workato job history, the README's worked example.

The first pull walks back from the newest job to the oldest; later pulls ask only for jobs newer than
the newest one committed. Position: ``{"newest_id": ..., "older_than": ...}``.
Design (the API, a source file): docs/design/adapters.md#workato-example
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pullmode_dagster import CursorState, Page, Position, Puller, Window, bearer
from pullmode_dagster.engine.errors import PullError

DEFAULT_BASE_URL = "https://www.workato.com"


class WorkatoPosition(Position):
    newest_id: int | None = None
    """The newest job committed: later pulls ask only for jobs newer than this."""
    older_than: int | None = None
    """A first pull in progress: the next page holds jobs older than this."""
    walk_newest: int | None = None
    """The newest job the walk in progress has seen (becomes ``newest_id`` when it ends)."""


class WorkatoJobsPuller(Puller):
    position_model = WorkatoPosition
    window_by_event_time = True  # a window re-pull walks the history and keeps the window's jobs

    def pages(self, start: CursorState, *, window: Window | None = None) -> Iterator[Page]:
        options = self.source.options  # type: ignore[attr-defined]  # a custom source's; Puller.source is the base model
        recipe = options.get("recipe_id")
        if not recipe:
            raise PullError(f"source {self.source.name!r}: options.recipe_id is required")
        base = str(options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        url = f"{base}/api/recipes/{recipe}/jobs"
        position = WorkatoPosition() if window is not None else self.position(start)
        with self.session(auth=bearer(self.credentials["token"], url)) as http:
            for number in self.page_numbers():
                if position.newest_id is not None and position.older_than is None:
                    params: dict[str, Any] = {"prev": "true", "offset_job_id": position.newest_id}
                else:
                    params = {} if position.older_than is None else {"offset_job_id": position.older_than}
                what = f"source {self.source.name!r}: page {number}"
                response = http.send("GET", url, what=what, params=params, accept=_items)
                if response.status_code >= 300:
                    raise PullError(self.redact(f"{what}: HTTP {response.status_code} from {url}"))
                items: list[dict[str, Any]] = response.extensions["accepted"]
                self.requests = http.requests
                ids = [int(item["id"]) for item in items if isinstance(item, dict) and "id" in item]
                if position.newest_id is not None and position.older_than is None:
                    # Newer jobs: one page, then the next pull asks again from the newest.
                    newest = max([position.newest_id, *ids])
                    position = WorkatoPosition(newest_id=newest)
                    drained = not ids
                else:
                    walk_newest = max([position.walk_newest or 0, *ids]) or None
                    if ids:
                        position = WorkatoPosition(
                            newest_id=position.newest_id, older_than=min(ids), walk_newest=walk_newest
                        )
                        drained = False
                    else:  # the walk reached the oldest job
                        position = WorkatoPosition(
                            newest_id=max(filter(None, [position.newest_id, walk_newest]), default=None)
                        )
                        drained = True
                yield Page(
                    records=items,
                    nbytes=len(response.content),
                    location=f"page {number}",
                    resume=position.model_dump(exclude_none=True),
                    drained=drained,
                )
                if drained:
                    return


def _items(response: Any) -> list[Any]:
    from pullmode_dagster.engine.fetch.session import BadBody, json_body

    doc = json_body(response, "a page of jobs")
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise BadBody("no items array in the answer")
    return doc["items"]
