"""The ``whereabouts-py-dev`` command: the local cluster, the demo and their builds.

Development tooling only: it is installed with the repository's test set-up
(``make setup``), never with the product, and the product never imports it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_DEVCLUSTER_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "whereabouts-py-devcluster"

Handler = Callable[[argparse.Namespace], int]


def _devcluster_up(args: argparse.Namespace) -> int:
    if args.nodes is not None:
        from whereabouts_py_dev.cluster import Cluster

        cluster = Cluster.up(Path(args.dir), args.nodes)
        print(cluster.kubeconfig)
        return 0
    from whereabouts_py_dev.controlplane import ControlPlane

    plane = ControlPlane.start(Path(args.dir))
    print(plane.kubeconfig)
    return 0


def _node_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--nodes wants a whole number, not {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--nodes must be at least 1, not {count}")
    return count


def _devcluster_down(args: argparse.Namespace) -> int:
    from whereabouts_py_dev.cluster.lifecycle import STATE_FILE, Cluster
    from whereabouts_py_dev.controlplane import ControlPlane, ControlPlaneError

    directory = Path(args.dir)
    if (directory / STATE_FILE).exists():
        Cluster.load(directory).down()
        print(f"devcluster: stopped the cluster and removed {directory}", file=sys.stderr)
        return 0
    try:
        plane = ControlPlane.load(directory)
    except ControlPlaneError:
        print(f"devcluster: nothing running in {directory}", file=sys.stderr)
        return 0
    plane.stop(remove_directory=True)
    print(f"devcluster: stopped and removed {directory}", file=sys.stderr)
    return 0


def _devcluster_exec(args: argparse.Namespace) -> int:
    from whereabouts_py_dev.controlplane import ControlPlane

    command: list[str] = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("devcluster exec: give a command after '--'", file=sys.stderr)
        return 2
    plane = ControlPlane.start(Path(args.dir) if args.dir else None, die_with_parent=True)
    try:
        try:
            completed = subprocess.run(command, env=plane.environment(), check=False)
        except FileNotFoundError:
            print(f"devcluster exec: command not found: {command[0]}", file=sys.stderr)
            return 127
        return completed.returncode
    finally:
        plane.stop(remove_directory=plane.owns_directory or args.dir is not None)


def _devcluster_build(_args: argparse.Namespace) -> int:
    from whereabouts_py_dev.binaries import ensure_binaries
    from whereabouts_py_dev.goplugin import ensure_go_whereabouts
    from whereabouts_py_dev.helm import ensure_helm
    from whereabouts_py_dev.multus import ensure_multus

    print(ensure_binaries().directory)
    print(ensure_multus())
    print(ensure_go_whereabouts())
    print(ensure_helm())
    return 0


def _add_devcluster(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    devcluster = subparsers.add_parser(
        "devcluster",
        help="a local Kubernetes: control plane (kube-apiserver + etcd), optionally real nodes",
    )
    actions = devcluster.add_subparsers(dest="action", required=True, metavar="ACTION")

    up = actions.add_parser("up", help="start in the background and print the kubeconfig path")
    up.add_argument("--dir", default=str(DEFAULT_DEVCLUSTER_DIR), help="state directory")
    up.add_argument(
        "--nodes",
        type=_node_count,
        default=None,
        metavar="N",
        help="also run kube-controller-manager, kube-scheduler and N real nodes (kubelet, "
        "containerd, Multus) on one layer-2 segment; without it, the control plane only",
    )
    up.set_defaults(handler=_devcluster_up)

    down = actions.add_parser(
        "down", help="stop what 'up' started (control plane, nodes) and remove all it made"
    )
    down.add_argument("--dir", default=str(DEFAULT_DEVCLUSTER_DIR), help="state directory")
    down.set_defaults(handler=_devcluster_down)

    run = actions.add_parser(
        "exec", help="start a fresh control plane, run COMMAND with KUBECONFIG set, stop it"
    )
    run.add_argument("--dir", default=None, help="state directory (default: a temporary one)")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    run.set_defaults(handler=_devcluster_exec)

    build = actions.add_parser(
        "build",
        help="build (once) the control plane, Multus, the whereabouts Go plugin and Helm; "
        "print where they are cached",
    )
    build.set_defaults(handler=_devcluster_build)


def _demo(args: argparse.Namespace) -> int:
    if args.cluster:
        from whereabouts_py_dev.cluster_demo import run_cluster_demo

        return run_cluster_demo()
    if args.quick:
        from whereabouts_py_dev.demo import run_demo

        return run_demo()
    from whereabouts_py_dev.lab_demo import run_lab_demo

    return run_lab_demo()


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="show whereabouts-py on a local control plane: real Multus on two simulated nodes "
        "(needs root for network namespaces)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="only the IPAM: two node daemons and the CNI shim, no network namespaces",
    )
    demo.add_argument(
        "--cluster",
        action="store_true",
        help="on two real nodes (kubelet, containerd, Multus) with the product image and "
        "manifests; builds them the first time (tens of minutes), then about a minute",
    )
    demo.set_defaults(handler=_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whereabouts-py-dev",
        description="Development tooling of whereabouts-py: a local cluster and the demo.",
    )
    subparsers = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    _add_devcluster(subparsers)
    _add_demo(subparsers)
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

        print(f"whereabouts-py-dev {args.subcommand}: {describe(error)}", file=sys.stderr)
        return 1
