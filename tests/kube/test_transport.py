"""The store's HTTP transport: connections made with the client configuration's
settings (here a proxy the kubeconfig names), reused while the server keeps them."""

from __future__ import annotations

import select
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.store.kube import KubeStore, connect
from whereabouts_py_dev.controlplane import ControlPlane

pytestmark = pytest.mark.kube


class ConnectProxy:
    """An HTTP CONNECT proxy on loopback that counts the tunnels it opened."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.tunnels: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> ConnectProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._spawn(self._tunnel, client)

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(4096)
                if not data:
                    return
                head += data
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.tunnels.append(target)
            host, _, port = target.rpartition(":")
            with socket.create_connection((host, int(port))) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                ends = [client, upstream]
                while not self._stop.is_set():
                    ready, _, _ = select.select(ends, [], [], 0.5)
                    for end in ready:
                        data = end.recv(65536)
                        if not data:
                            return
                        (upstream if end is client else client).sendall(data)


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_requests_and_watches_go_through_the_proxy_the_kubeconfig_names(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    with ConnectProxy() as proxy:
        kubeconfig = yaml.safe_load(control_plane.kubeconfig.read_text())
        for cluster in kubeconfig["clusters"]:
            cluster["cluster"]["proxy-url"] = f"http://127.0.0.1:{proxy.port}"
        proxied = tmp_path / "kubeconfig"
        proxied.write_text(yaml.safe_dump(kubeconfig))
        api = connect(str(proxied))
        try:
            store = KubeStore(api, namespace)
            owner = Allocation("c-1", "ns/pod-a", "net1")
            written = store.write_pool(store.get_pool("10.7.0.0-29", "10.7.0.0/29"), {1: owner})
            for _ in range(20):
                assert store.get_pool("10.7.0.0-29", "10.7.0.0/29") == written
            marks = list(store.watch_pool("10.7.0.0-29", timeout_s=1.0))
            assert [mark.resource_version for mark in marks if mark] == [written.resource_version]
        finally:
            api.close()
        # Every request went through a tunnel to the apiserver, and the 23
        # requests kept their connections: far fewer tunnels than requests.
        servers = {urlsplit(c["cluster"]["server"]).netloc for c in kubeconfig["clusters"]}
        assert proxy.tunnels
        assert set(proxy.tunnels) <= servers
        assert len(proxy.tunnels) <= 3, proxy.tunnels


def test_a_kept_connection_the_server_closed_is_not_used_again(
    control_plane: ControlPlane, namespace: str
) -> None:
    api = connect(str(control_plane.kubeconfig))
    try:
        store = KubeStore(api, namespace)
        assert store.get_pool("10.8.0.0-29", "10.8.0.0/29").resource_version is None
        # The apiserver restarts: every kept connection is closed under us.
        control_plane.stop_apiserver()
        control_plane.start_apiserver()
        for _ in range(5):
            assert store.get_pool("10.8.0.0-29", "10.8.0.0/29").resource_version is None
    finally:
        api.close()


def test_later_connections_check_the_servers_certificate_as_the_first_did(
    control_plane: ControlPlane, namespace: str
) -> None:
    api = connect(str(control_plane.kubeconfig))
    try:
        store = KubeStore(api, namespace)
        connections = store._call._connections  # white box: the context kept for reuse
        store.ping()
        assert connections._tls is not None
        context, server_name, _options = connections._tls
        assert context.check_hostname
        assert context.verify_mode == ssl.CERT_REQUIRED
        # A new connection made with the kept context verifies the name...
        connections._connect(3.0).close()
        # ...and refuses a server that does not hold it.
        connections._tls = (context, "not-the-apiserver.example", _options)
        with pytest.raises(ssl.SSLCertVerificationError):
            connections._connect(3.0)
        connections._tls = (context, server_name, _options)
        assert store.ping()
    finally:
        api.close()
