"""Credentials for s3:// data mounts that a remote machine fetches itself (a Mithril instance, a Kubernetes pod),
found where every AWS tool finds them: boto3's chain when it is installed (AWS_ACCESS_KEY_ID and
the other variables, AWS_PROFILE, ~/.aws/credentials and ~/.aws/config, ...), else the AWS_*
variables of flowd's environment; with the region and the endpoint of an S3-compatible server
(AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL). The values are secrets: they go only where the caller
sends them (a 0600 file over SFTP), never into a log or an error.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from flow.domain.errors import DomainError, ErrorReason


def storage_credentials(env: Mapping[str, str]) -> dict[str, str] | None:
    """The credentials document flow.runtime.s3_sync reads, or None when none can be found."""
    key_id = env.get("AWS_ACCESS_KEY_ID", "")
    secret = env.get("AWS_SECRET_ACCESS_KEY", "")
    token = env.get("AWS_SESSION_TOKEN", "")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    if not (key_id and secret) and importlib.util.find_spec("boto3") is not None:
        found = _from_boto3()
        if found is not None:
            key_id, secret, token, region = found[0], found[1], found[2], region or found[3]
    if not (key_id and secret):
        return None
    document = {"access_key_id": key_id, "secret_access_key": secret, "region": region or "us-east-1"}
    if token:
        document["session_token"] = token
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        document["endpoint_url"] = endpoint
    return document


def _from_boto3() -> tuple[str, str, str, str] | None:
    import boto3  # type: ignore[import-untyped]  # only when the variables do not say: ~0.3 s to import

    session: Any = boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        return None
    frozen = credentials.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token or "", session.region_name or ""


def no_storage_credentials(provider: str) -> DomainError:
    return DomainError(
        reason=ErrorReason.VALIDATION_FAILED,
        message=(
            f"s3:// data mounts on provider {provider} need storage credentials, and flowd finds none "
            "(its environment, AWS_PROFILE, ~/.aws)"
        ),
        suggestions=(
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for an S3-compatible "
            "server) where flowd starts, then flow daemon stop",
            "or configure a profile in ~/.aws/credentials",
        ),
        metadata=(("provider", provider),),
    )
