"""The ``whereabouts-py`` command: one entry point for every process.

Each subcommand imports its implementation only when it runs, so that
``whereabouts-py --help`` and light subcommands stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def _install_cni(args: argparse.Namespace) -> int:
    from whereabouts_py.cni.install import image_bundle, install_cni

    bundle = Path(args.bundle) if args.bundle else image_bundle()
    print(install_cni(Path(args.bin_dir), args.name, bundle))
    if args.conf_dir:
        from whereabouts_py.cni.nodeconf import NodeConfig, write_node_config

        written = write_node_config(
            NodeConfig(Path(args.conf_dir), args.host_conf_dir, args.socket)
        )
        for path in written:
            print(path)
    return 0


def _add_install_cni(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    install = subparsers.add_parser(
        "install-cni", help="install the CNI IPAM plugin executable into a CNI bin directory"
    )
    install.add_argument("--bin-dir", required=True, help="CNI bin directory, e.g. /opt/cni/bin")
    install.add_argument(
        "--name",
        default="whereabouts",
        help="file name of the plugin, which NADs name as ipam.type (default: whereabouts)",
    )
    install.add_argument(
        "--bundle",
        default=None,
        help="self-contained shim made by build-shim, installed so that the node needs no"
        " Python (default: the image's /opt/whereabouts-py/shim if present, else a script"
        " that runs this Python)",
    )
    install.add_argument(
        "--conf-dir",
        default=None,
        help="also write whereabouts.conf (and, in a pod, whereabouts.kubeconfig) here, mode"
        " 0600, e.g. the host's /etc/cni/net.d/whereabouts.d as mounted in the container",
    )
    install.add_argument(
        "--host-conf-dir",
        default="/etc/cni/net.d/whereabouts.d",
        help="the same folder as the node sees it (used for paths inside the files)",
    )
    install.add_argument(
        "--socket",
        default="/run/whereabouts-py/daemon.sock",
        help="the daemon's socket, written into whereabouts.conf",
    )
    install.set_defaults(handler=_install_cni)


def _build_shim(args: argparse.Namespace) -> int:
    from whereabouts_py.cni.bundle import build_shim

    print(build_shim(Path(args.out)))
    return 0


def _add_build_shim(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    build = subparsers.add_parser(
        "build-shim",
        help="build the self-contained CNI shim (no Python needed on the node) with PyInstaller",
    )
    build.add_argument("--out", required=True, help="directory for the bundle (replaced)")
    build.set_defaults(handler=_build_shim)


def _add_api_options(parser: argparse.ArgumentParser) -> None:
    """What every long-running process takes: where the API and its pools are, metrics."""
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster credentials)"
    )
    parser.add_argument(
        "--namespace", default="kube-system", help="namespace of the IPPools (install namespace)"
    )
    parser.add_argument(
        "--lease-namespace",
        default=None,
        help="namespace of our coordination Leases (default: --namespace); the manifests give"
        " them one of their own, so that no right on kube-system's Leases is needed",
    )
    parser.add_argument("--metrics-address", default=None, help="HOST:PORT to serve /metrics on")


def _daemon(args: argparse.Namespace) -> int:
    from whereabouts_py.daemon.main import run_daemon

    return run_daemon(
        node_name=args.node_name,
        socket_path=args.socket,
        kubeconfig=args.kubeconfig,
        namespace=args.namespace,
        metrics_address=args.metrics_address,
        coordination=args.pool_leases,
        log_level=args.log_level,
        cni_conf_dir=args.cni_conf_dir,
        host_conf_dir=args.host_conf_dir,
        cni_conf_refresh_s=args.cni_conf_refresh,
        lease_namespace=args.lease_namespace,
    )


def _add_daemon(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    daemon = subparsers.add_parser(
        "daemon", help="the node daemon: serves the CNI shim and writes the IPPools"
    )
    daemon.add_argument(
        "--node-name", required=True, help="this node's name (recorded on allocations)"
    )
    daemon.add_argument(
        "--socket", default="/run/whereabouts-py/daemon.sock", help="unix socket for the shim"
    )
    _add_api_options(daemon)
    daemon.add_argument(
        "--cni-conf-dir",
        default=None,
        help="keep whereabouts.conf and whereabouts.kubeconfig current here (rewritten when the"
        " ServiceAccount token or CA rotates)",
    )
    daemon.add_argument(
        "--host-conf-dir",
        default="/etc/cni/net.d/whereabouts.d",
        help="--cni-conf-dir as the node sees it",
    )
    daemon.add_argument(
        "--cni-conf-refresh",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often to check the token and CA for rotation (default 30)",
    )
    daemon.add_argument(
        "--pool-leases",
        choices=["auto", "always", "never"],
        default="auto",
        help="coordinate pool writers through Leases: after a conflict (auto), always, never",
    )
    daemon.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    daemon.set_defaults(handler=_daemon)


def _reconciler(args: argparse.Namespace) -> int:
    from whereabouts_py.reconciler.operator import run_reconciler

    return run_reconciler(
        kubeconfig=args.kubeconfig,
        namespace=args.namespace,
        metrics_address=args.metrics_address,
        sweep_interval_s=args.sweep_interval,
        identity=args.identity,
        configuration_path=args.configuration_path,
        lease_duration_s=args.lease_duration,
        grace_period_s=args.grace_period,
        log_level=args.log_level,
        lease_namespace=args.lease_namespace,
    )


def _add_reconciler(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reconciler = subparsers.add_parser(
        "reconciler",
        help="the reconciler: frees the addresses of deleted pods (run 2+ replicas)",
    )
    _add_api_options(reconciler)
    reconciler.add_argument(
        "--sweep-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between full sweeps (default: the flat file's "
        "reconciler_cron_expression if it has one, else 300)",
    )
    reconciler.add_argument(
        "--configuration-path",
        default=None,
        help="flat file whereabouts.conf to read first (default: the standard locations)",
    )
    reconciler.add_argument(
        "--identity",
        default=None,
        help="this replica's name in the leader Lease (default: hostname)",
    )
    reconciler.add_argument(
        "--lease-duration",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="leader Lease duration: a follower takes over this long after the leader died "
        "(default 5)",
    )
    reconciler.add_argument(
        "--grace-period",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long an address contradicted by a live pod's network-status, or a "
        "reservation without pool entry (or the reverse), must stay so before it is repaired "
        "(default 60)",
    )
    reconciler.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    reconciler.set_defaults(handler=_reconciler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whereabouts-py",
        description="Cluster-wide IPAM for Kubernetes secondary networks.",
    )
    subparsers = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    _add_daemon(subparsers)
    _add_reconciler(subparsers)
    _add_install_cni(subparsers)
    _add_build_shim(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the CLI answers every error in one line
        from whereabouts_py.errors import describe

        print(f"whereabouts-py {args.subcommand}: {describe(error)}", file=sys.stderr)
        return 1
