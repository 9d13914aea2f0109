"""The Kubernetes API as the kubernetes provider uses it: plain REST on dicts (the objects are
planned as data in flow.domain.kubernetes), a pod watch, byte-exact log streams, and exec.

lightkube reads the kubeconfig (contexts, client certificates, tokens, exec credential plugins)
and builds the HTTP client with the cluster's TLS settings; everything else is a few REST paths.
It is imported only here, and this module only where a kubernetes provider is configured.

Exec is a WebSocket (subprotocol v5.channel.k8s.io: stdin 0, stdout 1, stderr 2, status 3, resize
4, and a close-stdin frame), on a client of its own per session: a long exec must not hold one
of the pool's connections, and a failed upgrade must not spoil the pool.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from flow.domain.daemon_config import KubernetesSettings
from flow.domain.errors import DomainError, ErrorReason

WATCH_SECONDS: Final = 240  # a watch the server ends after this; the next one resumes


class KubeError(Exception):
    """A request the cluster refused or could not be sent; `error` says so to a user."""

    def __init__(self, error: DomainError, status: int | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status


class WatchExpiredError(Exception):
    """A watch whose resourceVersion is too old (410): list again."""


def _error(provider: str, reason: ErrorReason, message: str, *suggestions: str) -> DomainError:
    return DomainError(reason=reason, message=message, suggestions=suggestions, metadata=(("provider", provider),))


class KubeApi:
    """One cluster and namespace, as the provider's settings name them."""

    def __init__(self, settings: KubernetesSettings, env: Mapping[str, str]) -> None:
        from lightkube.config.client_adapter import ConnectionParams
        from lightkube.config.kubeconfig import KubeConfig
        from lightkube.core.exceptions import ConfigError

        self.provider = settings.name
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # not a line per request in flowd.log
        path = settings.kubeconfig or (env.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config")
        self.kubeconfig = os.path.expanduser(path)
        self.requests: dict[str, int] = {}  # API requests sent, by what for (the bench counts them)
        self._lock = threading.Lock()
        try:
            single = KubeConfig.from_file(Path(self.kubeconfig)).get(context_name=settings.context)
        except (ConfigError, OSError, ValueError, KeyError, TypeError) as exc:
            raise KubeError(
                _error(
                    self.provider,
                    ErrorReason.PROVIDER_ERROR,
                    f"Provider {self.provider} cannot use the kubeconfig {self.kubeconfig}: {exc}",
                    "check kubeconfig and context in the provider's settings ($FLOW_HOME/config.yaml)",
                )
            ) from None
        if single is None:
            raise KubeError(
                _error(
                    self.provider,
                    ErrorReason.PROVIDER_ERROR,
                    f"Provider {self.provider}: the kubeconfig {self.kubeconfig} has no current context",
                    "set context in the provider's settings",
                )
            )
        self._single = single
        self._params = ConnectionParams
        self.namespace = settings.namespace or single.namespace or "default"
        self.cluster = single.context.cluster or single.context_name
        self.server = single.cluster.server
        self._http = self._client(timeout=30.0)

    def _client(self, timeout: float | None) -> Any:
        import httpx2
        from lightkube.config.client_adapter import Client

        return Client(self._single, self._params(timeout=httpx2.Timeout(timeout, connect=10.0)))

    def path(self, kind: str, name: str = "") -> str:
        group = "/apis/batch/v1" if kind == "jobs" else "/api/v1"
        base = f"{group}/namespaces/{self.namespace}/{kind}"
        return f"{base}/{quote(name, safe='')}" if name else base

    # --- requests ------------------------------------------------------------------------------

    def _count(self, what: str = "other") -> None:
        with self._lock:
            self.requests[what] = self.requests.get(what, 0) + 1

    def _refused(self, status: int, body: bytes, doing: str) -> KubeError:
        try:
            message = str(json.loads(body).get("message", "")) or body.decode("utf-8", "replace")[:500]
        except (ValueError, AttributeError):
            message = body.decode("utf-8", "replace")[:500]
        said = f"Kubernetes refused to {doing}: {message} (HTTP {status})"
        where = f"{self.server}, namespace {self.namespace}"
        if status == 401:
            return KubeError(
                _error(
                    self.provider,
                    ErrorReason.AUTHENTICATION_FAILED,
                    f"Provider {self.provider}: the cluster ({where}) does not accept the kubeconfig's credentials: "
                    f"{message}",
                    f"refresh the credentials of {self.kubeconfig} (e.g. log in to the cluster again)",
                ),
                status,
            )
        if status == 403:
            return KubeError(
                _error(
                    self.provider,
                    ErrorReason.AUTHENTICATION_FAILED,
                    f"Provider {self.provider}: your identity may not do this ({where}): {message}",
                    "ask the cluster's administrator for a Role that allows Jobs, pods, pods/log, pods/exec, "
                    "Secrets, ConfigMaps and Services in the namespace",
                    "or set namespace in the provider's settings to one you may use",
                ),
                status,
            )
        if status == 422 or status == 400:
            return KubeError(
                _error(
                    self.provider,
                    ErrorReason.VALIDATION_FAILED,
                    said,
                    "fix the value the message names (image, env names, memory_mb, ...)",
                ),
                status,
            )
        if status == 409:
            return KubeError(_error(self.provider, ErrorReason.ALREADY_EXISTS, said, "wait, then retry"), status)
        if status == 404:
            return KubeError(_error(self.provider, ErrorReason.RESOURCE_NOT_FOUND, said, "check the namespace"), status)
        if status == 429 or status >= 500:
            return KubeError(_error(self.provider, ErrorReason.PROVIDER_ERROR, said, "retry in a moment"), status)
        return KubeError(_error(self.provider, ErrorReason.PROVIDER_ERROR, said, "see the message"), status)

    def unreachable(self, exc: Exception) -> KubeError:
        return KubeError(
            _error(
                self.provider,
                ErrorReason.NETWORK_ERROR,
                f"Provider {self.provider} cannot reach its Kubernetes API server {self.server}: {exc}",
                "check that the cluster is up and reachable from this machine (kubectl get nodes)",
                f"check the kubeconfig {self.kubeconfig} and the provider's context",
            )
        )

    def call(
        self, method: str, path: str, doing: str, body: object = None, params: Mapping[str, str] | None = None
    ) -> Any:
        import httpx2

        self._count(f"{method.lower()} {_resource(path)}")
        try:
            reply = self._http.request(method, path, json=body, params=params)
        except httpx2.HTTPError as exc:
            raise self.unreachable(exc) from None
        if reply.status_code >= 300:
            raise self._refused(reply.status_code, reply.content, doing)
        return reply.json() if reply.content else None

    def create(self, kind: str, manifest: Mapping[str, Any]) -> Any:
        return self.call("POST", self.path(kind), f"create a {kind[:-1]}", manifest)

    def delete(self, kind: str, name: str, grace: int | None = None, foreground: bool = False) -> bool:
        """Deletes the object with what it owns; False when it was not there."""
        body: dict[str, Any] = {"propagationPolicy": "Foreground" if foreground else "Background"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        try:
            self.call("DELETE", self.path(kind, name), f"delete {kind[:-1]} {name}", body)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def get(self, kind: str, name: str) -> Any | None:
        try:
            return self.call("GET", self.path(kind, name), f"read {kind[:-1]} {name}")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, kind: str, name: str, patch: Mapping[str, Any]) -> Any:
        import httpx2

        self._count(f"patch {kind}")
        try:
            reply = self._http.patch(
                self.path(kind, name),
                content=json.dumps(patch),
                headers={"Content-Type": "application/merge-patch+json"},
            )
        except httpx2.HTTPError as exc:
            raise self.unreachable(exc) from None
        if reply.status_code >= 300:
            raise self._refused(reply.status_code, reply.content, f"update {kind[:-1]} {name}")
        return reply.json()

    def nodes(self) -> list[dict[str, Any]]:
        listed = self.call("GET", "/api/v1/nodes", "list the nodes")
        return list(listed.get("items") or [])

    def items(self, kind: str, selector: str) -> list[dict[str, Any]]:
        listed = self.call("GET", self.path(kind), f"list {kind}", params={"labelSelector": selector})
        return list(listed.get("items") or [])

    def list_pods(self, selector: str) -> tuple[list[dict[str, Any]], str]:
        listed = self.call("GET", self.path("pods"), "list pods", params={"labelSelector": selector})
        return list(listed.get("items") or []), str((listed.get("metadata") or {}).get("resourceVersion", ""))

    def watch_pods(self, selector: str, version: str, stop: threading.Event) -> Iterator[tuple[str, dict[str, Any]]]:
        """The pod events after `version`, until the server ends the watch (raises WatchExpiredError on 410)."""
        import httpx2

        params = {
            "labelSelector": selector,
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        self._count("watch")
        try:
            with self._http.stream("GET", self.path("pods"), params=params, timeout=WATCH_SECONDS + 30) as reply:
                if reply.status_code == 410:
                    raise WatchExpiredError()
                if reply.status_code >= 300:
                    raise self._refused(reply.status_code, reply.read(), "watch pods")
                for line in reply.iter_lines():
                    if stop.is_set():
                        return
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = str(event.get("type", "")), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise WatchExpiredError()
                        raise self._refused(int(obj.get("code") or 500), json.dumps(obj).encode(), "watch pods")
                    yield kind, obj
        except httpx2.HTTPError as exc:
            raise self.unreachable(exc) from None

    def follow_log(self, pod: str, skip: int, stop: threading.Event) -> Iterator[bytes]:
        """The task container's output from its start, as bytes, the first `skip` left out;
        follows it until the container ends."""
        import httpx2

        params = {"container": "task", "follow": "true"}
        self._count("log")
        try:
            with self._http.stream("GET", self.path("pods", pod) + "/log", params=params, timeout=None) as reply:
                if reply.status_code >= 300:
                    raise self._refused(reply.status_code, reply.read(), f"read the log of {pod}")
                for chunk in reply.iter_raw():  # as it arrives (a chunk size would wait to fill it)
                    if stop.is_set():
                        return
                    if skip >= len(chunk):
                        skip -= len(chunk)
                        continue
                    yield chunk[skip:]
                    skip = 0
        except httpx2.HTTPError as exc:
            raise self.unreachable(exc) from None

    def exec(
        self, pod: str, argv: Sequence[str], tty: bool, rows: int = 24, columns: int = 80, container: str = "task"
    ) -> PodExec:
        return PodExec(self, pod, argv, tty, rows, columns, container)

    def close(self) -> None:
        self._http.close()


def _resource(path: str) -> str:
    """The kind of object a REST path names ("jobs" for /apis/batch/v1/namespaces/n/jobs/x)."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts and parts.index("namespaces") + 2 < len(parts):
        return parts[parts.index("namespaces") + 2]
    return parts[-1]


STDIN, STDOUT, STDERR, STATUS, RESIZE = 0, 1, 2, 3, 4


def _stream_errors() -> tuple[type[BaseException], ...]:
    import httpx2
    from httpx2.websockets import HTTPXWSException

    return (HTTPXWSException, httpx2.HTTPError, OSError, RuntimeError)


class PodExec:
    """A command in a container of a pod over the exec WebSocket (an ExecChannel)."""

    def __init__(
        self, api: KubeApi, pod: str, argv: Sequence[str], tty: bool, rows: int, columns: int, container: str
    ) -> None:
        self._output: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=256)
        self._code: int | None = None
        self.answered = False  # the status frame came: the command's end is known, not a broken stream
        self._done = threading.Event()
        self._client = api._client(timeout=None)
        params: list[tuple[str, str]] = [("container", container), ("stdin", "true"), ("stdout", "true")]
        params += [("tty", "true")] if tty else [("stderr", "true")]
        params += [("command", a) for a in argv]
        api._count("exec")
        self._context = self._client.websocket(
            api.path("pods", pod) + "/exec",
            subprotocols=["v5.channel.k8s.io"],
            params=params,
            keepalive_ping_interval_seconds=None,
        )
        try:
            self._ws = self._context.__enter__()
        except _stream_errors() as exc:
            self._client.close()
            raise KubeError(
                _error(api.provider, ErrorReason.PROVIDER_ERROR, f"cannot exec in pod {pod}: {exc}", "retry")
            ) from None
        if tty:
            self.resize(rows, columns)
        threading.Thread(target=self._pump, name=f"exec-{pod}", daemon=True).start()

    def _pump(self) -> None:
        try:
            while True:
                message = self._ws.receive_bytes()
                if not message:
                    continue
                channel, data = message[0], bytes(message[1:])
                if channel == STDOUT and data:
                    self._output.put(("stdout", data))
                elif channel == STDERR and data:
                    self._output.put(("stderr", data))
                elif channel == STATUS:
                    self._code = _exit_code(data)
                    self.answered = True
        except _stream_errors():  # the server closed the stream: the command has ended
            pass
        finally:
            self._output.put(None)
            self._done.set()

    def read(self, timeout: float | None = None) -> tuple[str, bytes] | None:
        return self._output.get(timeout=timeout)

    def write(self, data: bytes) -> None:
        with contextlib.suppress(*_stream_errors()):
            self._ws.send_bytes(bytes([STDIN]) + data)

    def close_stdin(self) -> None:
        with contextlib.suppress(*_stream_errors()):
            self._ws.send_bytes(bytes([255, STDIN]))

    def resize(self, rows: int, columns: int) -> None:
        if rows > 0 and columns > 0:
            with contextlib.suppress(*_stream_errors()):
                self._ws.send_bytes(bytes([RESIZE]) + json.dumps({"Width": columns, "Height": rows}).encode())

    def wait(self) -> int:
        self._done.wait()
        self._close()
        return self._code if self._code is not None else 1

    def kill(self) -> None:
        self._close()

    def _close(self) -> None:
        with contextlib.suppress(*_stream_errors()):
            self._context.__exit__(None, None, None)
        self._client.close()


def _exit_code(data: bytes) -> int:
    """The exit code in the status channel's metav1.Status (Success: 0)."""
    try:
        status = json.loads(data)
    except ValueError:
        return 1
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", "1"))
            except ValueError:
                return 1
    return 126 if "executable file not found" in str(status.get("message", "")) else 1
