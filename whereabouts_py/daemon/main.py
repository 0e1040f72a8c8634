"""``whereabouts-py daemon``: wire the store, the service and the socket together."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from whereabouts_py.cni.nodeconf import NodeConfig, write_node_config
from whereabouts_py.daemon.batching import Coordination
from whereabouts_py.daemon.netns import address_configured
from whereabouts_py.daemon.server import DaemonServer
from whereabouts_py.daemon.service import IPAMService
from whereabouts_py.metrics import daemon as metrics
from whereabouts_py.metrics.health import Check, succeeds
from whereabouts_py.store.kube import KubeStore, connect

log = logging.getLogger("whereabouts_py.daemon")

# How long /healthz waits for the socket loop to go round once.
SOCKET_CHECK_TIMEOUT_S = 2.0


def raise_open_files_limit() -> None:
    """Let the socket hold as many connections as the hard limit allows (no privilege needed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as error:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, error)


def keep_node_config(config: NodeConfig, period_s: float, stop: threading.Event) -> None:
    """Rewrite whereabouts.d when the ServiceAccount token or CA rotates."""
    while not stop.wait(period_s):
        try:
            for path in write_node_config(config):
                log.info("rewrote %s (credentials rotated)", path)
        except OSError as error:
            log.warning("cannot refresh %s: %s", config.conf_dir, error)


def socket_loop_check(server: DaemonServer, timeout_s: float = SOCKET_CHECK_TIMEOUT_S) -> Check:
    """/healthz: the socket is still ours and accepts, and the loop serving it goes round.

    The connection is closed without a request, which the loop drops silently.
    """
    path = server.socket_path
    inode = os.stat(path).st_ino

    def check() -> str | None:
        asked = time.monotonic()
        try:
            if os.stat(path).st_ino != inode:
                return f"{path} was replaced by another socket"
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout_s)
                probe.connect(path)
        except OSError as error:
            return f"cannot connect to {path}: {error}"
        while server.last_turn < asked:
            if time.monotonic() - asked > timeout_s:
                return f"the socket loop has not gone round for {asked - server.last_turn:.1f}s"
            time.sleep(0.01)
        return None

    return check


def run_daemon(
    *,
    node_name: str,
    socket_path: str,
    kubeconfig: str | None,
    namespace: str,
    metrics_address: str | None,
    coordination: Coordination = "auto",
    log_level: str = "info",
    cni_conf_dir: str | None = None,
    host_conf_dir: str = "/etc/cni/net.d/whereabouts.d",
    cni_conf_refresh_s: float = 30.0,
    lease_namespace: str | None = None,
) -> int:
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    raise_open_files_limit()
    store = KubeStore(connect(kubeconfig), namespace, lease_namespace)
    service = IPAMService(
        store, node_name, coordination=coordination, netns_checker=address_configured
    )
    server = DaemonServer(socket_path, service)
    stop_refresh = threading.Event()
    if cni_conf_dir:
        node_config = NodeConfig(Path(cni_conf_dir), host_conf_dir, socket_path)
        write_node_config(node_config)
        threading.Thread(
            target=keep_node_config,
            args=(node_config, cni_conf_refresh_s, stop_refresh),
            name="cni-conf",
            daemon=True,
        ).start()
    if metrics_address:
        metrics.serve(
            metrics_address,
            live={"socket-loop": socket_loop_check(server)},
            ready={"kubernetes-api": succeeds(store.ping)},
        )

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "node %s serving %s (namespace %s, Leases in %s, API %s)",
        node_name,
        socket_path,
        namespace,
        store.lease_namespace,
        store.ping(),
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop_refresh.set()
        server.server_close()
        with contextlib.suppress(OSError):
            os.unlink(socket_path)
    return 0
