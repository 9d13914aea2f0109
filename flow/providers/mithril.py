"""`Flow(provider=MithrilProvider(api_key=..., project=...))`: Mithril's GPU cloud.

Every setting left out is read from the environment, as flowd reads it: MITHRIL_API_KEY,
MITHRIL_PROJECT (or MITHRIL_DEFAULT_PROJECT), MITHRIL_REGION (or MITHRIL_DEFAULT_REGION),
MITHRIL_API_URL, MITHRIL_SSH_KEY (the private key flowd logs in to instances with),
MITHRIL_SSH_KEYS (comma-separated key names or fids) and MITHRIL_SSH_USER. The key is never
shown: not in repr, not in errors, not in task listings; flowd keeps it in a 0600 file.

No SSH setting is needed: without ssh_key_file (or MITHRIL_SSH_KEY) flowd makes a key of its own
($FLOW_HOME/keys/mithril_ed25519, 0600), registers its public half with the project once, and
reaches instances with it.

The settings are the provider's identity: two clients with different settings in one $FLOW_HOME
get two providers (flowd names them "mithril", "mithril-2", ...), and the same settings again get
the same one. `name` chooses the name instead (other settings under a taken name are refused).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from attrs import field, frozen

from flow.errors import ValidationError

if TYPE_CHECKING:
    from flow.connection import DaemonConnection

_KEY = re.compile(r"fkey_[A-Za-z0-9]{20,}")


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


@frozen
class MithrilProvider:
    """Mithril settings; None means "from the environment" (see the module docstring)."""

    api_key: str | None = field(default=None, repr=False)
    project: str | None = None
    region: str | None = None
    api_url: str | None = None
    ssh_key_file: str | None = None
    ssh_keys: tuple[str, ...] | None = None
    ssh_user: str | None = None
    name: str = ""  # "": flowd tells providers apart by their settings (see the module docstring)
    kind: str = "mithril"

    def settings(self) -> dict[str, str]:
        """The settings flowd is given (ConfigureProvider), with the environment filled in."""
        key = self.api_key or _env("MITHRIL_API_KEY")
        if not key or not _KEY.fullmatch(key):
            raise ValidationError(
                "MithrilProvider needs an API key (fkey_ followed by at least 20 letters or digits)"
                + ("" if key else "; none was given and MITHRIL_API_KEY is not set"),
                suggestions=["pass api_key='fkey_...' or export MITHRIL_API_KEY=fkey_... (from the Mithril console)"],
            )
        found: dict[str, str | None] = {
            "api_key": key,
            "project": self.project or _env("MITHRIL_PROJECT", "MITHRIL_DEFAULT_PROJECT"),
            "region": self.region or _env("MITHRIL_REGION", "MITHRIL_DEFAULT_REGION"),
            "api_url": self.api_url or _env("MITHRIL_API_URL"),
            "ssh_key_file": self.ssh_key_file or _env("MITHRIL_SSH_KEY"),
            "ssh_keys": ",".join(self.ssh_keys) if self.ssh_keys is not None else _env("MITHRIL_SSH_KEYS"),
            "ssh_user": self.ssh_user or _env("MITHRIL_SSH_USER"),
        }
        if found["ssh_key_file"]:
            found["ssh_key_file"] = os.path.abspath(os.path.expanduser(str(found["ssh_key_file"])))
        return {k: v for k, v in found.items() if v}

    def configure(self, conn: DaemonConnection) -> str:
        """Hands the settings to flowd (ConfigureProvider; it keeps the key in a 0600 file) and
        returns the name of the provider they configure there."""
        from flow.wire.provider_codec import configure_provider_call

        return conn.unary(configure_provider_call(self.name, self.kind, self.settings()), timeout=60).name

    @staticmethod
    def configured(env: Mapping[str, str] | None = None) -> bool:
        """Whether the environment names a Mithril key (what makes `Flow()` pick Mithril)."""
        return bool((os.environ if env is None else env).get("MITHRIL_API_KEY"))
