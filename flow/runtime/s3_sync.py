"""Copies the objects under s3:// prefixes into directories, on an instance that has nothing but
python3 (standard library only: requests are signed here with AWS Signature Version 4).

    python3 flow_s3_sync.py CREDENTIALS_JSON SOURCE TARGET [SOURCE TARGET ...]

CREDENTIALS_JSON holds {"access_key_id", "secret_access_key", "session_token" (optional),
"region", "endpoint_url" (optional: an S3-compatible server; path-style requests)}; it is read
once and never printed. A prefix names a "directory" (s3://b/data is data/...), or a single
object when nothing lies below it. Progress goes to stdout; a failure prints one line on stderr
naming the source (never a credential) and exits 1.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

WORKERS = 8
TIMEOUT = 60
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class SyncError(Exception):
    pass


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _quote(text: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(text, safe=safe)


class Client:
    def __init__(self, creds: dict[str, Any]) -> None:
        self.key_id = str(creds["access_key_id"])
        self.secret = str(creds["secret_access_key"])
        self.token = creds.get("session_token") or None
        self.region = str(creds.get("region") or "us-east-1")
        self.endpoint = (creds.get("endpoint_url") or "").rstrip("/")

    def url(self, bucket: str, key: str, query: dict[str, str]) -> tuple[str, str, str, str]:
        """(scheme, host, path, canonical query) of a request."""
        if self.endpoint:
            split = urllib.parse.urlsplit(self.endpoint)
            scheme, host, base = split.scheme, split.netloc, split.path.rstrip("/")
            path = f"{base}/{_quote(bucket)}" + (f"/{_quote(key, '-_.~/')}" if key else "")
        elif "." in bucket:  # dots break the certificate of the virtual host
            scheme, host = "https", f"s3.{self.region}.amazonaws.com"
            path = f"/{_quote(bucket)}" + (f"/{_quote(key, '-_.~/')}" if key else "")
        else:
            scheme, host = "https", f"{bucket}.s3.{self.region}.amazonaws.com"
            path = "/" + _quote(key, "-_.~/")
        canonical = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        return scheme, host, path or "/", canonical

    def headers(self, method: str, host: str, path: str, query: str, now: datetime.datetime) -> dict[str, str]:
        """The signed headers of a request without a body (AWS Signature Version 4)."""
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
        if self.token:
            headers["x-amz-security-token"] = str(self.token)
        names = sorted(headers)
        canonical = "\n".join(
            [
                method,
                path,
                query,
                "".join(f"{n}:{headers[n].strip()}\n" for n in names),
                ";".join(names),
                EMPTY_SHA256,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = _hmac(_hmac(_hmac(_hmac(("AWS4" + self.secret).encode(), day), self.region), "s3"), "aws4_request")
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.key_id}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return headers

    def request(self, method: str, bucket: str, key: str = "", query: dict[str, str] | None = None) -> Any:
        scheme, host, path, canonical = self.url(bucket, key, query or {})
        now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 - instances may have python3.10
        headers = self.headers(method, host, path, canonical, now)
        url = f"{scheme}://{host}{path}" + (f"?{canonical}" if canonical else "")
        return urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers), timeout=TIMEOUT)


def _problem(exc: BaseException, endpoint: str) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        try:
            body = ElementTree.fromstring(exc.read())
            code = body.findtext("Code") or str(exc.code)
            message = body.findtext("Message") or ""
        except (ElementTree.ParseError, OSError):
            code, message = str(exc.code), exc.reason or ""
        return f"{code} {message}".strip()
    if isinstance(exc, urllib.error.URLError):
        return f"cannot reach {endpoint or 'S3'}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def listing(client: Client, bucket: str, prefix: str) -> list[tuple[str, str, int]]:
    """(key, path below the target, size) of every object under the prefix."""
    wanted = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    found: list[tuple[str, str, int]] = []
    token = ""
    while True:
        query = {"list-type": "2", "prefix": wanted}
        if token:
            query["continuation-token"] = token
        with client.request("GET", bucket, "", query) as answer:
            tree = ElementTree.fromstring(answer.read())
        for item in tree.iter(f"{NS}Contents"):
            key = item.findtext(f"{NS}Key") or ""
            parts = [p for p in key[len(wanted) :].split("/") if p]
            if key.endswith("/") or not parts or any(p in (".", "..") for p in parts):
                continue  # "directory" markers, and keys that would escape the target
            found.append((key, "/".join(parts), int(item.findtext(f"{NS}Size") or 0)))
        token = tree.findtext(f"{NS}NextContinuationToken") or ""
        if (tree.findtext(f"{NS}IsTruncated") or "false") != "true" or not token:
            break
    if not found and prefix:  # a single object named exactly by the URL
        with client.request("HEAD", bucket, prefix) as answer:
            found.append((prefix, prefix.rstrip("/").rsplit("/", 1)[-1], int(answer.headers.get("Content-Length", 0))))
    return found


def fetch(client: Client, bucket: str, key: str, dest: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    partial = dest + ".flow-partial"
    with client.request("GET", bucket, key) as answer, open(partial, "wb") as out:
        while piece := answer.read(1 << 20):
            out.write(piece)
    os.replace(partial, dest)


def sync(client: Client, source: str, target: str) -> tuple[int, int]:
    bucket, _, prefix = source[len("s3://") :].partition("/")
    objects = listing(client, bucket, prefix)
    os.makedirs(target, exist_ok=True)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(lambda o: fetch(client, bucket, o[0], os.path.join(target, o[1])), objects))
    return len(objects), sum(size for _, _, size in objects)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or len(argv) % 2 == 0:
        print("usage: flow_s3_sync.py CREDENTIALS_JSON SOURCE TARGET [SOURCE TARGET ...]", file=sys.stderr)
        return 2
    try:
        with open(argv[0]) as handle:
            client = Client(json.load(handle))
    except (OSError, ValueError, KeyError) as exc:
        print(f"could not read the storage credentials: {type(exc).__name__}", file=sys.stderr)
        return 1
    for source, target in zip(argv[1::2], argv[2::2], strict=True):
        try:
            files, size = sync(client, source, target)
        except (OSError, ElementTree.ParseError, ValueError) as exc:
            print(f"could not read {source}: {_problem(exc, client.endpoint)}", file=sys.stderr)
            return 1
        print(f"synced {source} to {target}: {files} {'file' if files == 1 else 'files'}, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
