"""Nobody else gets in: a private socket, TCP off unless asked for, then token (and TLS)."""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from conftest import Daemon, _cleanup, short_tmpdir
from flow import Flow, TaskStatus
from flow.errors import AuthenticationError
from flowapi.v1 import daemon_service_pb2, daemon_service_pb2_grpc

OTHER_USER = "flow-other"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def tcp_daemon() -> Iterator[tuple[Daemon, str]]:
    d = Daemon(short_tmpdir("flow-p-"))
    address = f"127.0.0.1:{free_port()}"
    d.start("--tcp", address)
    yield d, address
    _cleanup(d)


def _info(
    channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> daemon_service_pb2.GetDaemonInfoResponse:
    stub = daemon_service_pb2_grpc.DaemonServiceStub(channel)
    reply: daemon_service_pb2.GetDaemonInfoResponse = stub.GetDaemonInfo(
        daemon_service_pb2.GetDaemonInfoRequest(), timeout=10, metadata=metadata
    )
    return reply


def test_tcp_is_off_unless_asked_for(daemon: Daemon) -> None:
    assert daemon.client().daemon_info().addresses == (daemon.home.address,)
    listening = Path("/proc/net/tcp").read_text() + Path("/proc/net/tcp6").read_text()
    pid_fds = {os.readlink(f"/proc/{daemon.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{daemon.pid}/fd")}
    inodes = {link[len("socket:[") : -1] for link in pid_fds if link.startswith("socket:[")}
    tcp_lines = [line for line in listening.splitlines()[1:] if line.split()[9] in inodes]
    assert tcp_lines == []  # no TCP socket at all in the daemon


def test_tcp_needs_the_token(tcp_daemon: tuple[Daemon, str]) -> None:
    daemon, address = tcp_daemon
    token = (daemon.home.root / "daemon-token").read_text().strip()
    assert oct(os.stat(daemon.home.root / "daemon-token").st_mode & 0o777) == "0o600"
    with grpc.insecure_channel(address) as channel:
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", token),)):
            with pytest.raises(grpc.RpcError) as caught:
                _info(channel, metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            status = rpc_status.from_call(caught.value)
            assert status is not None and "token" in status.message
            assert token not in status.message
        assert _info(channel, (("authorization", f"Bearer {token}"),)).pid == daemon.pid


def test_the_sdk_over_tcp_with_the_token(tcp_daemon: tuple[Daemon, str], monkeypatch: pytest.MonkeyPatch) -> None:
    daemon, address = tcp_daemon
    monkeypatch.setenv("FLOW_DAEMON_ADDRESS", f"tcp://{address}")
    monkeypatch.setenv("FLOW_DAEMON_TOKEN", (daemon.home.root / "daemon-token").read_text().strip())
    remote = Flow(flow_home=short_tmpdir("flow-c-"))  # nothing local: everything goes over TCP
    task = remote.run(["echo", "over tcp"], upload_code=False).wait(timeout=30)
    assert (task.last_status, task.logs()) == (TaskStatus.COMPLETED, "over tcp\n")
    monkeypatch.setenv("FLOW_DAEMON_TOKEN", "not-the-token")
    with pytest.raises(AuthenticationError) as caught:
        Flow(flow_home=short_tmpdir("flow-c-"))
    assert any("daemon-token" in tip for tip in caught.value.suggestions)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_tls_with_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    d = Daemon(short_tmpdir("flow-s-"))
    port = free_port()
    d.start("--tcp", f"localhost:{port}", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        monkeypatch.setenv("FLOW_DAEMON_ADDRESS", f"tls://localhost:{port}")
        monkeypatch.setenv("FLOW_DAEMON_TOKEN", (d.home.root / "daemon-token").read_text().strip())
        monkeypatch.setenv("FLOW_DAEMON_CA", str(cert))
        assert Flow(flow_home=short_tmpdir("flow-c-")).daemon_info().pid == d.pid
        with grpc.insecure_channel(f"localhost:{port}") as plain, pytest.raises(grpc.RpcError):
            _info(plain, (("authorization", "Bearer x"),))  # plaintext to a TLS port fails
    finally:
        _cleanup(d)


def test_listening_beyond_loopback_needs_tls() -> None:
    root = short_tmpdir("flow-n-")
    done = subprocess.run(
        [sys.executable, "-m", "flowd", "--home", str(root), "--tcp", f"0.0.0.0:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "without TLS" in done.stderr and "--tls-cert" in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a second user account needs root (CI runs as root)")
def test_another_user_cannot_reach_the_socket_or_the_state(daemon: Daemon) -> None:
    if subprocess.run(["id", OTHER_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER], check=True)
    os.chmod(daemon.home.root.parent, 0o755)  # /tmp-like: the other user may walk to the home
    probe = (
        "import socket, os, sys\n"
        f"s = socket.socket(socket.AF_UNIX)\n"
        f"try:\n    s.connect({str(daemon.home.socket)!r}); print('connected')\n"
        "except PermissionError: print('socket: permission denied')\n"
        f"try:\n    os.listdir({str(daemon.home.root)!r}); print('listed')\n"
        "except PermissionError: print('state: permission denied')\n"
    )
    # The system interpreter: the test's own virtualenv may sit in root's home, out of reach.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    done = subprocess.run(
        ["runuser", "-u", OTHER_USER, "--", python, "-c", probe], capture_output=True, text=True, timeout=30
    )
    assert done.stdout.splitlines() == ["socket: permission denied", "state: permission denied"], done.stderr


def _refusal(
    channel: grpc.Channel, method: str, streaming: bool, metadata: tuple[tuple[str, str], ...]
) -> tuple[Any, ...]:
    """What a caller without the token learns from calling `method` (raw bytes, any shape)."""
    try:
        if streaming:
            list(channel.stream_stream(method)(iter([b"", b""]), timeout=10, metadata=metadata))
        else:
            channel.unary_unary(method)(b"", timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        error: Any = exc
    else:
        raise AssertionError(f"{method} answered a caller without the token")
    trailers = tuple(sorted((k, v) for k, v in error.trailing_metadata() or ()))
    return (error.code(), error.details(), trailers)


def test_without_the_token_known_and_unknown_methods_answer_alike(tcp_daemon: tuple[Daemon, str]) -> None:
    """Nobody can enumerate the daemon's methods without the token: every method, known or not,
    of any shape, answers exactly the same refusal."""
    _, address = tcp_daemon
    methods = [
        "/flowapi.v1.DaemonService/GetDaemonInfo",
        "/flowapi.v1.TaskService/ExecTask",
        "/flowapi.v1.TaskService/StreamTaskLogs",
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/flowapi.v1.TaskService/NoSuchMethod",
        "/no.such.Service/Call",
        "/x",
    ]
    with grpc.insecure_channel(address) as channel:
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            seen = {_refusal(channel, m, streaming, metadata) for m in methods for streaming in (False, True)}
            assert len(seen) == 1, seen
            ((code, details, _),) = seen
            assert code == grpc.StatusCode.UNAUTHENTICATED and "token" in details
