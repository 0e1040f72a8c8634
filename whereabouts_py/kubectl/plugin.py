"""``kubectl whereabouts``: look at pools, find leaks, release an address, check consistency.

Installed as the console script ``kubectl-whereabouts``, so kubectl finds it
on PATH. Reads go through the store; the only write (``release``) deletes the
reservation first and then the pool entry by compare-and-swap, exactly as the
daemon's DEL does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import netaddr

from whereabouts_py.core.codec import pool_name
from whereabouts_py.core.ownership import (
    HeldEntry,
    PodState,
    PoolObject,
    Verdict,
    entries_of,
    judge,
    network_name_of,
    reservation_held_by,
    same_attachment,
    unmirrored_entries,
)
from whereabouts_py.core.poolops import pool_size
from whereabouts_py.errors import ConflictError, StoreError, WhereaboutsError, describe
from whereabouts_py.store.kube import (
    DEFAULT_NAMESPACE,
    WHOLE_RANGE_ANNOTATION,
    KubeStore,
    PoolSnapshot,
    connect,
)

MAX_RELEASE_ATTEMPTS = 10


class UsageError(WhereaboutsError):
    """The operator asked for something that does not exist or is ambiguous."""


@dataclass(frozen=True)
class PoolView:
    """One range as an operator sees it: blocks of a large range summed up."""

    pool: str  # the Go project's name for the whole range
    network: str
    cidr: str
    size: int
    entries: tuple[HeldEntry, ...]
    objects: int = 1  # IPPool objects that store it: 1, or its blocks (and the Go plugin's)

    @property
    def allocated(self) -> int:
        # Distinct addresses: our entry in a block and its mirror in the Go
        # plugin's whole-range object are one allocation.
        return len({entry.address for entry in self.entries})

    @property
    def free(self) -> int:
        return max(self.size - self.allocated, 0)

    @property
    def used_percent(self) -> float:
        return 100.0 * self.allocated / self.size if self.size else 100.0


def pool_views(snapshots: Iterable[PoolSnapshot]) -> list[PoolView]:
    """Group IPPool objects by range: a block belongs to the range in its annotation."""
    groups: dict[tuple[str, str], list[HeldEntry]] = {}
    names: dict[tuple[str, str], str] = {}
    objects: dict[tuple[str, str], int] = {}
    for snapshot in snapshots:
        entries = entries_of(snapshot.name, snapshot.cidr, snapshot.allocations)
        whole = str(snapshot.metadata.get("annotations", {}).get(WHOLE_RANGE_ANNOTATION, ""))
        network = entries[0].network_name if entries else _network_of(snapshot)
        cidr = whole or snapshot.cidr
        key = (network or "", cidr)
        groups.setdefault(key, []).extend(entries)
        objects[key] = objects.get(key, 0) + 1
        if not whole or key not in names:
            names[key] = _pool_name(network, cidr)
    return [
        PoolView(names[key], key[0], key[1], pool_size(key[1]), tuple(entries), objects[key])
        for key, entries in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1]))
    ]


def _network_of(snapshot: PoolSnapshot) -> str | None:
    try:
        return network_name_of(snapshot.name, snapshot.cidr)
    except (ValueError, netaddr.AddrFormatError):
        return None


def _pool_name(network: str | None, cidr: str) -> str:
    return pool_name(cidr, network or None)


def _pods_by_ref(store: KubeStore) -> dict[str, PodState]:
    return {pod.podref: pod for pod in store.list_pods()}


# --- output -------------------------------------------------------------------------------


def _claim_refs(store: KubeStore) -> set[str] | None:
    """The IPAMClaims that exist; None (claim-owned addresses are kept) when unreadable."""
    try:
        return {claim.ref for claim in store.list_ipam_claims()}
    except StoreError:
        return None


def _emit(
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    output: str,
    wide: Sequence[str] = (),
) -> None:
    """Rows as kubectl prints them: a table (``wide`` adds columns), JSON or YAML."""
    if output == "wide":
        columns = [*columns, *wide]
    if output == "json":
        print(json.dumps(rows, indent=2))
        return
    if output == "yaml":
        import yaml  # type: ignore[import-untyped]  # a declared dependency

        print(yaml.safe_dump(rows, sort_keys=False), end="")
        return
    widths = [len(column) for column in columns]
    cells = [
        [str(row.get(column.lower().replace(" ", "_"), "")) for column in columns] for row in rows
    ]
    for line in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, line, strict=True)]
    print(
        "   ".join(
            column.ljust(width) for column, width in zip(columns, widths, strict=True)
        ).rstrip()
    )
    for line in cells:
        print(
            "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def _entry_row(entry: HeldEntry) -> dict[str, Any]:
    holder = entry.allocation
    return {
        "address": entry.address,
        "pod": holder.podref,
        "interface": holder.ifname,
        "container": holder.container_id,
        "node": holder.node or "",
        "pool": entry.pool,
        # The IPAMClaim (namespace/name) that owns the address: kept across its pods.
        "claim": holder.ipam_claim or "",
    }


# --- commands -----------------------------------------------------------------------------


def cmd_pools(store: KubeStore, args: argparse.Namespace) -> int:
    rows = [
        {
            "pool": view.pool,
            "network": view.network or "",
            "range": view.cidr,
            "allocated": view.allocated,
            "free": view.free,
            "used": f"{view.used_percent:.1f}%",
            "objects": view.objects,
            "claimed": len(
                {entry.address for entry in view.entries if entry.allocation.ipam_claim}
            ),
        }
        for view in pool_views(store.list_pools())
    ]
    _emit(rows, ["POOL", "NETWORK", "RANGE", "ALLOCATED", "FREE", "USED"], args.output, ["OBJECTS"])
    return 0


def cmd_show(store: KubeStore, args: argparse.Namespace) -> int:
    views = [view for view in pool_views(store.list_pools()) if view.pool == args.pool]
    if not views:
        known = ", ".join(view.pool for view in pool_views(store.list_pools())) or "none"
        raise UsageError(
            f"no pool named {args.pool} in namespace {store.namespace}", f"pools: {known}"
        )
    rows = [_entry_row(entry) for view in views for entry in view.entries]
    _emit(
        rows, ["ADDRESS", "POD", "INTERFACE", "CONTAINER", "NODE", "CLAIM"], args.output, ["POOL"]
    )
    return 0


def cmd_leaks(store: KubeStore, args: argparse.Namespace) -> int:
    views = pool_views(store.list_pools())
    pods = _pods_by_ref(store)
    claims = _claim_refs(store)
    rows = []
    for view in views:
        for entry in view.entries:
            verdict = judge(
                entry.address, entry.allocation, pods.get(entry.allocation.podref), claims
            )
            if verdict is not Verdict.KEEP:
                rows.append({**_entry_row(entry), "reason": verdict.value})
    _emit(
        rows, ["ADDRESS", "POD", "INTERFACE", "NODE", "POOL", "REASON"], args.output, ["CONTAINER"]
    )
    return 0


def _holders_of(store: KubeStore, address: str, network: str | None) -> list[HeldEntry]:
    try:
        wanted = str(netaddr.IPAddress(address))
    except (netaddr.AddrFormatError, ValueError):
        raise UsageError(f"{address} is not an IP address") from None
    found: list[HeldEntry] = []
    for view in pool_views(store.list_pools()):
        if network is not None and (view.network or "") != network:
            continue
        found.extend(entry for entry in view.entries if entry.address == wanted)
    return found


def cmd_release(store: KubeStore, args: argparse.Namespace) -> int:
    holders = _holders_of(store, args.address, args.network)
    if not holders:
        where = f"network {args.network}" if args.network else "any pool"
        raise UsageError(f"{args.address} is not allocated in {where}")
    if len({entry.network_name for entry in holders}) > 1 and args.network is None:
        networks = ", ".join(sorted(entry.network_name or '""' for entry in holders))
        raise UsageError(
            f"{args.address} is allocated in several networks ({networks})",
            "choose one with --network",
        )
    # With -o json|yaml, stdout carries only the released entries; the talk goes to stderr.
    talk = sys.stdout if args.output in ("table", "wide") else sys.stderr
    for entry in holders:
        print(f"{entry.address} in {entry.pool}: {entry.allocation.describe()}", file=talk)
    if not args.yes:
        print("release? [y/N] ", end="", file=talk, flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print("nothing released", file=sys.stderr)
            return 1
    for entry in holders:
        _release(store, entry)
        print(f"released {entry.address} from {entry.pool}", file=talk)
    if talk is sys.stderr:
        _emit([_entry_row(entry) for entry in holders], [], args.output)
    return 0


def _release(store: KubeStore, entry: HeldEntry) -> None:
    reservation = store.get_reservation(entry.reservation)
    # Strict: only a reservation naming exactly this entry's attachment goes,
    # never one a newer sandbox of the same pod has taken over.
    if reservation is not None and reservation_held_by(reservation.holder, entry.allocation):
        store.delete_reservation(reservation)
    for _ in range(MAX_RELEASE_ATTEMPTS):
        snapshot = store.get_pool(entry.pool, entry.cidr)
        if snapshot.allocations.get(entry.offset) != entry.allocation:
            return  # released or reassigned meanwhile
        remaining = dict(snapshot.allocations)
        del remaining[entry.offset]
        try:
            store.write_pool(snapshot, remaining)
            return
        except ConflictError:
            continue
    raise UsageError(f"IPPool {entry.pool} kept changing; try again")


def cmd_check(store: KubeStore, args: argparse.Namespace) -> int:
    reservations = {r.name: r.holder for r in store.list_reservations()}
    snapshots = store.list_pools()
    views = pool_views(snapshots)
    problems: list[dict[str, Any]] = []
    by_address: dict[tuple[str, str], list[HeldEntry]] = {}
    referenced: set[str] = set()
    for view in views:
        for entry in view.entries:
            by_address.setdefault((view.network or "", entry.address), []).append(entry)
            referenced.add(entry.reservation)
            holder = reservations.get(entry.reservation)
            if holder is not None and not same_attachment(holder, entry.allocation):
                problems.append(
                    {
                        "problem": "reservation held by another attachment",
                        "object": entry.reservation,
                        "detail": f"{entry.address} in {entry.pool} is "
                        f"{entry.allocation.describe()} but the reservation names "
                        f"{holder.describe()}",
                    }
                )
    for (network, address), entries in sorted(by_address.items()):
        owners = {(e.allocation.podref, e.allocation.ifname) for e in entries}
        if len(owners) > 1:
            problems.append(
                {
                    "problem": "address held twice",
                    "object": address,
                    "detail": f"network {network or '(default)'}: "
                    + "; ".join(f"{e.pool}: {e.allocation.describe()}" for e in entries),
                }
            )
    problems.extend(_hidden_from_go_plugin(snapshots))
    for name in sorted(set(reservations) - referenced):
        problems.append(
            {
                "problem": "reservation without pool entry",
                "object": name,
                "detail": f"held by {reservations[name].describe()}",
            }
        )
    _emit(problems, ["PROBLEM", "OBJECT", "DETAIL"], args.output)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print(
        "consistent: no address held twice, every reservation has its pool entry", file=sys.stderr
    )
    return 0


def _hidden_from_go_plugin(snapshots: Iterable[PoolSnapshot]) -> list[dict[str, Any]]:
    """Block entries that the Go plugin, running next to us, could hand out again.

    Once a range stored as blocks has the Go plugin's whole-range IPPool, that
    object is all the Go plugin reads (with reservations, which its DEL deletes
    by name): an entry of ours missing there is an address it may give to a
    second pod. The daemons mirror new entries; the reconciler catches up.
    """
    objects = [
        PoolObject(
            snapshot.name,
            snapshot.cidr,
            snapshot.allocations,
            snapshot.metadata.get("annotations", {}).get(WHOLE_RANGE_ANNOTATION),
        )
        for snapshot in snapshots
    ]
    return [
        {
            "problem": "hidden from the Go plugin",
            "object": item.entry.address,
            "detail": f"{item.entry.pool}: {item.entry.allocation.describe()}, but IPPool "
            f"{item.whole} (the Go plugin's) does not list it; the reconciler copies it there",
        }
        for item in unmirrored_entries(objects)
        if item.clash is None
    ]


OUTPUTS = ("table", "wide", "json", "yaml")


def _kubectl_flags(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The flags kubectl users type on every command, accepted before or after the command.

    The top-level parser holds the defaults; each command's parser repeats the
    flags with no default, so a flag given after the command overrides and one
    left out does not reset what was given before it.
    """

    def default(value: str | None) -> Any:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("kubectl flags")
    group.add_argument(
        "--kubeconfig",
        default=default(None),
        metavar="PATH",
        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)",
    )
    group.add_argument(
        "--context",
        default=default(None),
        metavar="NAME",
        help="kubeconfig context to use (default: its current-context)",
    )
    group.add_argument(
        "-n",
        "--namespace",
        default=default(DEFAULT_NAMESPACE),
        metavar="NAMESPACE",
        help=f"namespace of the IPPools and reservations (default: {DEFAULT_NAMESPACE})",
    )
    group.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default=default("table"),
        metavar="FORMAT",
        help="one of: " + ", ".join(OUTPUTS) + " (default: table; wide adds columns)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl whereabouts",
        description="Inspect and repair whereabouts IP pools.",
        epilog="Flags go before or after the command, as with kubectl: "
        "kubectl whereabouts pools -o json, kubectl whereabouts -n kube-system leaks.",
    )
    _kubectl_flags(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        _kubectl_flags(sub, defaults=False)
        return sub

    command("pools", "every pool with its size and use").set_defaults(handler=cmd_pools)
    show = command("show", "who holds which address of one pool")
    show.add_argument("pool", help="pool name, as 'pools' lists it")
    show.set_defaults(handler=cmd_show)
    command("leaks", "allocations whose pod is gone or does not list the address").set_defaults(
        handler=cmd_leaks
    )
    release = command("release", "free one address (asks first)")
    release.add_argument("address")
    release.add_argument("--network", default=None, help="network_name of the pool")
    release.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    release.set_defaults(handler=cmd_release)
    command(
        "check",
        "consistency: addresses held twice, orphaned reservations, addresses the Go "
        "plugin cannot see; exit 1 if any",
    ).set_defaults(handler=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        client = connect(kubeconfig or _default_kubeconfig(), context=args.context)
        store = KubeStore(client, args.namespace)
        result: int = args.handler(store, args)
        return result
    except (WhereaboutsError, ValueError) as error:
        print(f"kubectl whereabouts {args.command}: {describe(error)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("interrupted", file=sys.stderr)
        return 130


def _default_kubeconfig() -> str | None:
    default = os.path.expanduser("~/.kube/config")
    return default if os.path.exists(default) else None


if __name__ == "__main__":
    raise SystemExit(main())
