"""Mithril's REST API over httpx: the key as a Bearer token, retries that never double a bid.

- 429: waits what Retry-After says (capped at MAX_RETRY_AFTER), then asks again; a 429 means the
  request was not processed, so this holds for creates too.
- 5xx, timeouts and connection errors: retried with exponential backoff (capped) for reads and
  deletes. A create is never blindly re-posted: `create_bid` first looks the bid up by its unique
  name, and posts again only when the platform has no such bid.
- Errors become `MithrilError`s carrying the core's `DomainError` (flow.domain.mithril.errors).
The key is in one header of one client; it is never logged, and no error message holds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import httpx

from flow.domain.errors import DomainError
from flow.domain.mithril.errors import api_error, network_error
from flow.version import __version__

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 30.0
MAX_ATTEMPTS: Final = 5  # 5xx and network errors
MAX_THROTTLED: Final = 20  # 429s in a row
MAX_RETRY_AFTER: Final = 60.0
BACKOFF_BASE: Final = 0.25
BACKOFF_CAP: Final = 8.0
PAGE_LIMIT: Final = 100


class MithrilError(Exception):
    """A failed call; `error` is what users see."""

    def __init__(self, error: DomainError, status: int | None = None, raw: str = "", body: object = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status
        self.raw = raw
        self.body = body

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500


class MithrilAPI:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        observer: Callable[[MithrilError | None], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._observer = observer  # hears how each call ended (the provider's health)
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": f"flow/{__version__}",
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=False,
        )
        self.requests = 0  # sent, retries included (the benchmark reads it)

    def close(self) -> None:
        self._client.close()

    # --- one call ------------------------------------------------------------------------

    @staticmethod
    def _backoff(attempt: int) -> float:
        return float(min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))

    @staticmethod
    def _retry_after(response: httpx.Response, attempt: int) -> float:
        text = response.headers.get("retry-after", "")
        try:
            seconds = float(text)
        except ValueError:
            seconds = MithrilAPI._backoff(attempt)
        return min(max(seconds, 0.0), MAX_RETRY_AFTER)

    def _send(self, method: str, path: str, params: Mapping[str, Any] | None, body: object) -> httpx.Response:
        self.requests += 1
        return self._client.request(method, path, params=params, json=body)

    def call(
        self,
        method: str,
        path: str,
        action: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: object = None,
        retry: bool = True,
    ) -> Any:
        """The decoded JSON answer (None for 204). `retry`: 5xx and network errors are retried
        (reads and deletes); 429 always is."""
        try:
            answer = self._call(method, path, action, params, body, retry)
        except MithrilError as exc:
            if self._observer is not None:
                self._observer(exc)
            raise
        if self._observer is not None:
            self._observer(None)
        return answer

    def _call(
        self, method: str, path: str, action: str, params: Mapping[str, Any] | None, body: object, retry: bool
    ) -> Any:
        failures = 0
        throttled = 0
        while True:
            try:
                response = self._send(method, path, params, body)
            except httpx.TransportError as exc:  # timeouts, refused connections, resets
                problem = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
                failures += 1
                if not retry or failures >= self._max_attempts:
                    raise MithrilError(network_error(self.base_url, action, problem)) from None
                log.info("mithril: %s %s failed (%s); retrying", method, path, problem)
                self._sleep(self._backoff(failures))
                continue
            status = response.status_code
            if status == 429:
                throttled += 1
                if throttled > MAX_THROTTLED:
                    raise self._error(response, action)
                self._sleep(self._retry_after(response, throttled))
                continue
            if status >= 500 and retry:
                failures += 1
                if failures < self._max_attempts:
                    log.info("mithril: %s %s answered %d; retrying", method, path, status)
                    self._sleep(self._backoff(failures))
                    continue
            if status >= 400:
                raise self._error(response, action)
            if status == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise MithrilError(api_error(status, None, "the answer was not JSON", action), status=status) from None

    @staticmethod
    def _error(response: httpx.Response, action: str) -> MithrilError:
        raw = response.text[:4000]
        try:
            body: object = response.json()
        except ValueError:
            body = None
        request_id = response.headers.get("x-request-id")
        error = api_error(response.status_code, body, raw, action, request_id)
        return MithrilError(error, status=response.status_code, raw=raw, body=body)

    def pages(self, path: str, action: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a paginated listing ({data, next_cursor}), page by page."""
        query = {**params, "limit": PAGE_LIMIT}
        while True:
            page = self.call("GET", path, action, params=query)
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, list):
                raise MithrilError(api_error(200, None, f"{path} answered without a data list", action))
            yield from (item for item in data if isinstance(item, dict))
            cursor = page.get("next_cursor")
            if not cursor:
                return
            query = {**query, "next_cursor": cursor}

    # --- what the provider uses --------------------------------------------------------------

    def listing(self, path: str, action: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """A bare JSON array (projects, instance types, availability, ssh keys)."""
        found = self.call("GET", path, action, params=params)
        if not isinstance(found, list):
            raise MithrilError(api_error(200, None, f"{path} answered without a list", action))
        return [item for item in found if isinstance(item, dict)]

    def find_bid(self, project: str, name: str) -> dict[str, Any] | None:
        """The live bid of this name, if the platform has one."""
        for bid in self.pages("/v2/spot/bids", "look up a bid by name", {"project": project, "name": name}):
            if bid.get("name") == name and bid.get("status") != "Terminated":
                return bid
        return None

    def create_bid(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /v2/spot/bids, exactly once: after a timeout or 5xx the answer may have been lost
        with the bid created, so the bid is looked up by its unique name before any new post."""
        project, name = str(body["project"]), str(body["name"])
        failures = 0
        while True:
            try:
                created = self.call("POST", "/v2/spot/bids", "create the bid", body=body, retry=False)
                if not isinstance(created, dict) or not isinstance(created.get("fid"), str):
                    raise MithrilError(api_error(201, None, "the new bid has no fid", "create the bid"))
                return created
            except MithrilError as exc:
                if not exc.retryable:
                    raise
                failures += 1
                found = self.find_bid(project, name)
                if found is not None:
                    log.info("mithril: bid %s was created despite the error (%s)", found.get("fid"), exc.status)
                    return found
                if failures >= self._max_attempts:
                    raise
                self._sleep(self._backoff(failures))
