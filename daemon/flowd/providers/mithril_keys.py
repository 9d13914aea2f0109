"""The SSH key a Mithril provider reaches its instances with, managed for the user.

- A configured key (`ssh_key_file`, MITHRIL_SSH_KEY) wins: its public half is registered with the
  project when the project lacks it (as "flow-<provider>-<fingerprint>").
- Without one, Flow makes its own: an Ed25519 pair in $FLOW_HOME/keys/mithril_ed25519 (private
  half 0600, in a 0700 directory, never logged), registered with each project it is used in
  under one name per machine and $FLOW_HOME ("flow-<host>-<digest>"), reused afterwards, and said
  once in flowd's log when made or registered.
- A key the project has under that name whose private half is not here (the file was deleted, or
  this is another copy of $FLOW_HOME) is an error that says how to fix it, not a silent new key.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any, Final

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from flow.domain.errors import validation_error, violation
from flowd.providers.mithril_api import MithrilAPI, MithrilError

log = logging.getLogger(__name__)

MANAGED_KEY: Final = "mithril_ed25519"
_UNSAFE: Final = re.compile(r"[^a-z0-9-]+")
_CREATE_LOCK = threading.Lock()  # one flowd per $FLOW_HOME: providers of it share the key


def public_line(text: str) -> str:
    """'type base64' of an OpenSSH public key line (its comment left out)."""
    return " ".join(text.split()[:2])


def managed_key_name(keys_root: Path) -> str:
    host = _UNSAFE.sub("-", socket.gethostname().split(".")[0].lower()).strip("-")[:30] or "host"
    digest = hashlib.sha256(str(keys_root.resolve()).encode()).hexdigest()[:8]
    return f"flow-{host}-{digest}"


def create_key(path: Path) -> str:
    """Writes a new Ed25519 pair (private 0600, public beside it); returns the public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    for name, data in ((path.name + ".pub", public + b" flow\n"), (path.name, private)):
        partial = path.parent / f".{name}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(partial, path.parent / name)
    return public.decode()


def read_public(path: Path) -> str | None:
    """The public line of a private key file (from its .pub, else from the key), or None when
    there is no such key here."""
    pub = Path(str(path) + ".pub")
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.is_file() and pub.is_file():
            return public_line(pub.read_text())
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        with contextlib.suppress(paramiko.SSHException, ValueError, OSError):
            key = kind.from_private_key_file(str(path))
            return f"{key.get_name()} {key.get_base64()}"
    return None


class SshIdentity:
    def __init__(self, provider: str, configured: str | None, api: MithrilAPI, keys_root: Path) -> None:
        self._provider = provider
        self._api = api
        self.managed = configured is None
        self.key_file = str(Path(configured).expanduser()) if configured else str(keys_root / MANAGED_KEY)
        self._name = managed_key_name(keys_root) if self.managed else ""

    def _problem(self, problem: str, fixes: list[str], value: str | None = None) -> MithrilError:
        field = "ssh_key_file" if not self.managed else "SSH key"
        return MithrilError(
            validation_error(
                [violation(field, value or self.key_file, problem, "; or ".join(fixes))],
                subject=f"SSH settings of provider {self._provider}",
                suggestions=tuple(fixes),
            )
        )

    def fid(self, project: str, keys: list[dict[str, Any]]) -> str:
        """The fid of this key in the project, registering it when the project lacks it. Raises
        MithrilError: the configured key is not here, or the project's key of Flow's name has no
        private half here."""
        if not self.managed:
            public = read_public(Path(self.key_file))
            if public is None:
                raise self._problem(
                    "is not a private key this machine has",
                    ["give the private key you reach instances with (ssh_key_file, MITHRIL_SSH_KEY)",
                     "leave it out: Flow then makes and registers a key of its own"],
                )  # fmt: skip
            fingerprint = hashlib.sha256(public.encode()).hexdigest()[:10]
            return self._registered(project, keys, public, f"flow-{self._provider}-{fingerprint}", created=False)
        with _CREATE_LOCK:
            path = Path(self.key_file)
            public = read_public(path)
            named = [k for k in keys if k.get("name") == self._name]
            mine = [k for k in named if public is not None and public_line(str(k.get("public_key", ""))) == public]
            if named and not mine:
                fid = named[0].get("fid")
                raise self._problem(
                    f"{self._name} ({fid}) is registered with the project by Flow, but its private half "
                    f"{path} is {'another key' if public is not None else 'not on this machine'}",
                    [f"restore {path} from where it was kept",
                     f"or delete the key {self._name} from the project (in the Mithril console, or "
                     f"DELETE /v2/ssh-keys/{fid}): Flow then makes and registers a new one",
                     "or set ssh_key_file (MITHRIL_SSH_KEY) to a private key you have"],
                    value=self._name,
                )  # fmt: skip
            created = public is None
            if created:
                public = create_key(path)
            assert public is not None
            return self._registered(project, keys, public, self._name, created=created)

    def _registered(self, project: str, keys: list[dict[str, Any]], public: str, name: str, created: bool) -> str:
        match = [k for k in keys if public_line(str(k.get("public_key", ""))) == public_line(public)]
        if match:
            return str(match[0]["fid"])
        made = self._api.call(
            "POST",
            "/v2/ssh-keys",
            "register flowd's SSH key",
            body={"project": project, "name": name, "public_key": public_line(public)},
            retry=False,
        )
        fid = str(made["fid"])
        log.info(
            "provider %s: %s SSH key %s with project %s as %s (%s): flowd reaches instances with it, and so "
            "can you: ssh -i %s",
            self._provider,
            "made an" if created else "registered the",
            self.key_file + (" and registered it" if created else ""),
            project,
            name,
            fid,
            self.key_file,
        )
        return fid
