"""The one place that talks to the Kubernetes API.

Everything above this module sees plain values (``PoolSnapshot``,
``Reservation``, ``LeaseRecord``, ``PodState``) and the errors of
``whereabouts_py.errors``; no kubernetes-client type leaks out. Every write
is a compare-and-swap on ``metadata.resourceVersion``: a lost race raises
``ConflictError`` and the caller re-reads and retries. (Events are the
exception: they are only ever created.)
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import orjson
import urllib3
import urllib3.connection
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from whereabouts_py.core.allocator import Allocation
from whereabouts_py.core.claims import NETWORKS_ANNOTATION, ClaimState, allocated_conditions
from whereabouts_py.core.codec import (
    DecodedEntries,
    decode_allocations,
    decode_reservation,
    encode_allocations,
    encode_reservation,
)
from whereabouts_py.core.ownership import PodState, disruption_targeted, network_status_of
from whereabouts_py.errors import (
    AlreadyExistsError,
    ApiUnavailableError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    StoreError,
)
from whereabouts_py.store.values import (
    WHOLE_RANGE_ANNOTATION,
    LeaseRecord,
    ObjectRef,
    PoolMark,
    PoolSnapshot,
    Reservation,
    checked_name,
    checked_namespace,
    kept_metadata,
    pool_status,
)

# The values are defined in store.values; they are named here too for the
# modules that take everything from the store they use.
__all__ = [
    "DEFAULT_NAMESPACE",
    "WHOLE_RANGE_ANNOTATION",
    "KubeStore",
    "LeaseRecord",
    "ObjectRef",
    "PoolSnapshot",
    "Reservation",
    "WatchEvent",
    "connect",
    "pool_status",
]

GROUP = "whereabouts.cni.cncf.io"
VERSION = "v1alpha1"
POOLS = "ippools"
RESERVATIONS = "overlappingrangeipreservations"
LEASE_GROUP, LEASE_VERSION, LEASES = "coordination.k8s.io", "v1", "leases"
LEASE_API_VERSION = f"{LEASE_GROUP}/{LEASE_VERSION}"
# Objects' metadata only, in watches (and lists) of them.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
# A JSON merge patch (RFC 7386): null removes a key.
MERGE_PATCH = "application/merge-patch+json"
# IPAMClaims (k8snetworkplumbingwg/ipamclaims), read and given a status; KubeVirt makes them.
CLAIM_GROUP, CLAIM_VERSION, CLAIMS = "k8s.cni.cncf.io", "v1alpha1", "ipamclaims"
# Collections (pods, pools, reservations) are listed in pages of this many, so
# that a large cluster never arrives in one piece.
LIST_PAGE_SIZE = 500
DEFAULT_NAMESPACE = "kube-system"
# How many pools' decoded entries a store keeps (a node writes few pools at once).
DECODED_POOLS = 256
# (connect, read) seconds for one API request.
REQUEST_TIMEOUT = (3.0, 15.0)
# How long a bearer token is used before asking the client for it again.
TOKEN_TTL_S = 60.0
# Answers that mean "not now" rather than "no".
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "whereabouts-py"
# Readable by every client (the apiserver's --authorization-always-allow-paths).
READYZ = "/readyz?verbose"


def connect(
    kubeconfig: str | None = None, pool_size: int = 32, context: str | None = None
) -> client.ApiClient:
    """An API client from a kubeconfig file (``context``, else its current-context), else
    from the in-cluster service account."""
    configuration = client.Configuration()
    if context and not kubeconfig:
        raise StoreError(
            f"context {context} needs a kubeconfig", "give --kubeconfig or set KUBECONFIG"
        )
    try:
        if kubeconfig:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        else:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
    except (config.ConfigException, OSError) as error:
        where = kubeconfig or "the in-cluster service account"
        raise StoreError(f"cannot load Kubernetes credentials from {where}", str(error)) from None
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def _reason(error: ApiException) -> str:
    try:
        body = json.loads(error.body or "{}")
        return str(body.get("message") or error.reason)
    except (ValueError, AttributeError):
        return str(error.reason)


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn client exceptions into ours, naming what we were doing."""
    try:
        yield
    except _StartingForbidden as error:
        raise ApiUnavailableError(
            f"{action}: the Kubernetes API server is still starting",
            f"it answered 403 Forbidden before it was ready ({error.not_ready}); "
            f"retry in a moment. It said: {_reason(error)}",
        ) from None
    except ApiException as error:
        if error.status == 403:
            raise ForbiddenError(
                f"{action}: forbidden: {_reason(error)}",
                "this identity lacks the right named above; grant it through the "
                "whereabouts-py Role and ClusterRole (manifests/)",
            ) from None
        if error.status == 409:
            if "already exists" in (error.body or ""):
                raise AlreadyExistsError(f"{action}: already exists", _reason(error)) from None
            raise ConflictError(f"{action}: conflict", _reason(error)) from None
        if error.status == 404:
            raise NotFoundError(f"{action}: not found", _reason(error)) from None
        if error.status in TRANSIENT_STATUSES:
            raise ApiUnavailableError(
                f"{action}: Kubernetes API answered {error.status}", _reason(error)
            ) from None
        raise StoreError(f"{action}: API answered {error.status}", _reason(error)) from None
    except (OSError, ValueError) as error:  # urllib3 errors are OSError/ValueError subclasses
        raise ApiUnavailableError(f"{action}: Kubernetes API not reachable", str(error)) from None
    except Exception as error:  # urllib3.exceptions.HTTPError is neither
        if type(error).__module__.startswith("urllib3"):
            raise ApiUnavailableError(
                f"{action}: Kubernetes API not reachable", str(error)
            ) from None
        raise


class _StartingForbidden(ApiException):
    """A 403 from an apiserver whose /readyz fails: its authorizer is not ready yet."""

    def __init__(self, status: int, reason: str | None, body: str, not_ready: str) -> None:
        super().__init__(status=status, reason=reason)
        self.body = body
        self.not_ready = not_ready


def _not_ready_checks(body: str) -> str:
    """The failing checks of a /readyz answer ("[-]informer-sync failed: ...")."""
    failed = [
        line[3:].split(" failed", 1)[0] for line in body.splitlines() if line.startswith("[-]")
    ]
    return "readyz fails: " + ", ".join(failed) if failed else "readyz fails"


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _micro_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


T = TypeVar("T")


@dataclass(frozen=True)
class WatchEvent(Generic[T]):
    """One event of a watched collection.

    ``kind`` is ADDED, MODIFIED or DELETED (``value`` the object as it was
    then), BOOKMARK (no value: the collection is current up to
    ``resource_version``) or EXPIRED (the server no longer has the history
    since the version asked for, a 410 Gone: list again).
    """

    kind: str
    value: T | None
    resource_version: str


def _pod_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a pod the reconciler's pod watch reads, in the API's own shape: its
    namespace, name and UID, its phase and conditions (the rest is dropped at once)."""
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        "metadata": {key: metadata.get(key) for key in ("namespace", "name", "uid")},
        "status": {"phase": status.get("phase"), "conditions": status.get("conditions") or []},
    }


def _object_ref(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata") or {}
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"


class _Connections:
    """Keep-alive connections to the apiserver, each used by one request at a time.

    Each connection is made by the kubernetes client's urllib3 pool, so that
    every setting of the client configuration applies to it (CA, client
    certificates, server name, proxy, socket options); requests and answers
    then go over it with http.client alone. urllib3's request and response
    layers cost 0.66 ms of CPU per small request here, http.client 0.34 ms
    (BENCHMARKS.md, "The HTTP client"), and a node daemon makes about two
    requests per address. Bodies are encoded and decoded by orjson: a 250-entry
    pool in 0.02 and 0.10 ms, against 0.28 and 0.34 ms for the json module.
    """

    def __init__(self, pool_manager: urllib3.PoolManager, url: str, keep: int) -> None:
        parts = urllib.parse.urlsplit(url)
        self._pool = pool_manager.connection_from_url(url)
        self._https = parts.scheme == "https"
        self._proxied = getattr(self._pool, "proxy", None) is not None
        # Through an HTTP proxy without a tunnel, requests name the whole URL.
        origin = f"{parts.scheme}://{parts.netloc}" if self._proxied and not self._https else ""
        self._prefix = origin + parts.path.rstrip("/")
        self._keep = keep
        # The first connection's TLS context, server name and socket options,
        # when later connections may use them (see _first).
        self._tls: tuple[ssl.SSLContext, str | None, tuple[Any, ...]] | None = None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connect(self, timeout_s: float) -> http.client.HTTPConnection:
        tls = self._tls
        if tls is not None:
            sock: socket.socket = self._reconnect(tls, timeout_s)
        else:
            sock = self._first(timeout_s)
        # A plain HTTPConnection carries the TLS socket: HTTPSConnection would
        # build a TLS context of its own (the system's CAs: 37 ms) it never uses.
        connection = http.client.HTTPConnection(self._pool.host, self._pool.port)
        if self._https:
            connection.default_port = http.client.HTTPS_PORT  # the Host header as for https
        connection.sock = sock
        connection.auto_open = 0  # never reconnect by itself (it would skip TLS)
        return connection

    def _first(self, timeout_s: float) -> socket.socket:
        """A connection made by the pool itself (a private method, the one that
        applies its settings), then taken over: the pool never sees it again."""
        made = cast(urllib3.connection.HTTPConnection, self._pool._new_conn())
        made.timeout = timeout_s
        if self._https and self._proxied:
            self._pool._prepare_proxy(made)  # the CONNECT tunnel through the proxy
        if made.sock is None:
            made.connect()
        sock, made.sock = made.sock, None
        assert sock is not None
        if (
            isinstance(sock, ssl.SSLSocket)
            and not self._proxied
            and getattr(self._pool, "assert_fingerprint", None) is None
            and (sock.context.check_hostname or sock.context.verify_mode == ssl.CERT_NONE)
        ):
            # The pool builds a TLS context for every connection (its CA and
            # client certificate read again: 2.75 ms of CPU against 1.29 ms for
            # a connection with this one). Later connections use this one, with
            # the same server name, when its own checks are all there is (no
            # proxy, no fingerprint, the hostname checked by the context).
            options = tuple(made.socket_options or ())
            self._tls = (sock.context, sock.server_hostname, options)
        return sock

    def _reconnect(
        self, tls: tuple[ssl.SSLContext, str | None, tuple[Any, ...]], timeout_s: float
    ) -> socket.socket:
        context, server_hostname, options = tls
        raw = socket.create_connection((self._pool.host, self._pool.port), timeout_s)
        try:
            for option in options:
                raw.setsockopt(*option)
            return context.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise

    def _take(self, timeout_s: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection the server has not closed (True), else a new one."""
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not _dropped(connection):
                    return connection, True
                connection.close()
        return self._connect(timeout_s), False

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if connection.sock is not None and len(self._idle) < self._keep:
                self._idle.append(connection)
                return
        connection.close()

    def open(
        self,
        method: str,
        path: str,
        payload: bytes | None,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request; the connection and its answer, headers read.

        A GET that finds its kept connection closed by the server is sent again
        on a new one; anything else that fails is ConnectionError (unreachable).
        """
        for attempt in (1, 2):
            connection, reused = self._take(timeout[0])
            try:
                assert connection.sock is not None
                connection.sock.settimeout(timeout[1])
                connection.request(method, self._prefix + path, body=payload, headers=headers)
                return connection, connection.getresponse()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                stale = isinstance(
                    error, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
                )
                if not (stale and reused and method == "GET" and attempt == 1):
                    raise _unreachable(error) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def finish(
        self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse
    ) -> None:
        """Keep the connection if its answer was read to the end and it stays open."""
        if response.isclosed() and not response.will_close:
            self._give_back(connection)
        else:
            connection.close()

    def request(
        self,
        method: str,
        path: str,
        payload: bytes | None,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> tuple[int, str, bytes]:
        """One request and its whole answer: status, reason and body."""
        connection, response = self.open(method, path, payload, headers, timeout)
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise _unreachable(error) from None
        self.finish(connection, response)
        return response.status, response.reason, data


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle kept connection was closed by the server (it reads as ready)."""
    sock = connection.sock
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _plain(value: object) -> object:
    """What orjson cannot encode by itself: other mappings, as dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _unreachable(error: BaseException) -> ConnectionError:
    # http.client's own errors are not OSErrors; the store reports both as unreachable.
    return ConnectionError(f"{type(error).__name__}: {error}")


class _Transport:
    """JSON over keep-alive connections made with the client's configuration.

    The generated API classes validate every call's arguments with pydantic
    and walk every body, which costs more CPU than the request itself on a
    busy node; custom objects and Leases need none of it. Authentication
    (TLS settings, client certificates, tokens and their refresh) still comes
    from the kubernetes client's configuration and connection pool.
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        self._client = api_client
        self._configuration = api_client.configuration
        self._connections = _Connections(
            api_client.rest_client.pool_manager,
            self._configuration.host,
            self._configuration.connection_pool_maxsize or 8,
        )
        self._token = ""
        self._token_read_at = -TOKEN_TTL_S
        self._token_lock = threading.Lock()

    def _authorization(self) -> str:
        """The bearer token, re-read (and refreshed by the client) once a minute."""
        now = time.monotonic()
        if now - self._token_read_at > TOKEN_TTL_S:
            with self._token_lock:
                if now - self._token_read_at > TOKEN_TTL_S:
                    token = self._configuration.get_api_key_with_prefix(
                        "BearerToken", alias="authorization"
                    )
                    self._token = str(token or "")
                    self._token_read_at = now
        return self._token

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        token = self._authorization()
        if token:
            headers["Authorization"] = token
        return headers

    def __call__(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = self._headers("application/json")
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type
            payload = orjson.dumps(body, default=_plain)
        status, reason, data = self._connections.request(method, path, payload, headers, timeout)
        if not 200 <= status <= 299:
            raise self._refusal(status, reason, data.decode("utf-8", errors="replace"), path)
        answer = orjson.loads(data) if data else {}
        return answer if isinstance(answer, dict) else {}

    def stream(
        self, path: str, timeout_s: float, accept: str = "application/json"
    ) -> Iterator[dict[str, Any]]:
        """The JSON lines of a streaming GET (a watch), each parsed, until the server ends it."""
        connection, response = self._connections.open(
            "GET", path, None, self._headers(accept), (REQUEST_TIMEOUT[0], timeout_s)
        )
        try:
            if not 200 <= response.status <= 299:
                text = response.read().decode("utf-8", errors="replace")
                raise self._refusal(response.status, response.reason, text, path)
            pending = b""
            while True:
                try:
                    chunk = response.read1(65536)
                except (OSError, http.client.HTTPException) as error:
                    raise _unreachable(error) from None
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        event = orjson.loads(line)
                        if isinstance(event, dict):
                            yield event
        except BaseException:
            connection.close()
            raise
        self._connections.finish(connection, response)

    def _refusal(self, status: int, reason: str | None, text: str, path: str) -> ApiException:
        """The error of a request the server did not grant; a 403 from an apiserver
        that is still starting says so (callers retry it as unavailable)."""
        if status == 403 and path != READYZ:
            not_ready = self._not_ready()
            if not_ready:
                return _StartingForbidden(status, reason, text, not_ready)
        return ApiException(status=status, reason=reason, body=text)

    def _not_ready(self) -> str:
        """Why the apiserver is not ready ("" when it is, or cannot say).

        A kube-apiserver that is starting serves requests before its RBAC
        caches are filled, and refuses them with 403 meanwhile; /readyz,
        which every client may read, tells that apart from a real denial.
        """
        try:
            self("GET", READYZ, timeout=(2.0, 3.0))
        except ApiException as error:
            return _not_ready_checks(error.body or "")
        except Exception:  # unreachable: not "starting"; the 403 stands
            return ""
        return ""


def _objects(group: str, version: str, namespace: str, plural: str, name: str = "") -> str:
    """The path of a namespaced collection or object; group "" is the core API.

    Every segment is percent-encoded, so that no name can reach another path.
    """
    prefix = "/api" if group == "" else f"/apis/{group}"
    quote = urllib.parse.quote
    path = f"{prefix}/{version}/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


class KubeStore:
    """IPPools and reservations in one namespace, all by compare-and-swap.

    Its coordination Leases live in ``lease_namespace`` (default: the same
    one), so that the right to write them can be granted in a namespace of
    their own instead of next to the control plane's Leases in kube-system.
    It also reads Pods (any namespace) and records Events, for the reconciler.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str = DEFAULT_NAMESPACE,
        lease_namespace: str | None = None,
    ) -> None:
        self.namespace = checked_namespace(namespace)
        self.lease_namespace = checked_namespace(lease_namespace or namespace)
        self._call = _Transport(api_client)
        # The pools this store read or wrote last, decoded (see DecodedEntries).
        self._decoded: dict[str, DecodedEntries] = {}
        self._decoded_lock = threading.Lock()

    # --- reachability -----------------------------------------------------------
    def ping(self) -> str:
        """The server's version; raises StoreError when the API cannot be reached."""
        with _translated("reading the server version"):
            info = self._call("GET", "/version", timeout=(2.0, 3.0))
        return str(info.get("gitVersion", "unknown"))

    # --- IPPools ------------------------------------------------------------------
    def get_pool(self, name: str, cidr: str) -> PoolSnapshot:
        """Read a pool; a missing one reads as empty with no resourceVersion."""
        checked_name("IPPool", name)
        try:
            with _translated(f"reading IPPool {self.namespace}/{name}"):
                body = self._call("GET", _objects(GROUP, VERSION, self.namespace, POOLS, name))
        except NotFoundError:
            return PoolSnapshot(name, cidr, {}, None)
        return self._pool_from(body, self._known(name))

    def list_pools(self) -> list[PoolSnapshot]:
        with _translated(f"listing IPPools in {self.namespace}"):
            body = self._call(
                "GET", _objects(GROUP, VERSION, self.namespace, POOLS), timeout=(3.0, 60.0)
            )
        return [self._pool_from(item) for item in body.get("items", [])]

    def write_pool(
        self,
        snapshot: PoolSnapshot,
        allocations: Mapping[int, Allocation],
        *,
        annotations: Mapping[str, str] | None = None,
        size: int | None = None,
        network: str | None = None,
        marks: Mapping[str, str] | None = None,
    ) -> PoolSnapshot:
        """Create the pool or replace it if unchanged since ``snapshot`` was read.

        ``annotations`` are set when the pool is created; ``marks`` are
        annotations set by this write whether it creates or replaces (the
        writers' turn). The counts in ``status`` (shown by ``kubectl get
        ippools``) are written in the same request; ``size`` and ``network``
        default to what the pool had.
        """
        checked_name("IPPool", snapshot.name)
        spec = {"range": snapshot.cidr, "allocations": encode_allocations(allocations)}
        status = pool_status(
            snapshot, allocations, size=size, network=network, annotations=annotations
        )
        where = f"IPPool {self.namespace}/{snapshot.name}"
        if snapshot.resource_version is None:
            metadata: dict[str, Any] = {"name": snapshot.name, "namespace": self.namespace}
            if annotations or marks:
                metadata["annotations"] = {**(annotations or {}), **(marks or {})}
            body: dict[str, Any] = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "IPPool",
                "metadata": metadata,
                "spec": spec,
                "status": status,
            }
            with _translated(f"creating {where}"):
                answer = self._call("POST", _objects(GROUP, VERSION, self.namespace, POOLS), body)
        else:
            kept = kept_metadata(snapshot.metadata)
            if marks:
                kept["annotations"] = {**kept.get("annotations", {}), **marks}
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "IPPool",
                "metadata": {
                    **kept,
                    "name": snapshot.name,
                    "namespace": self.namespace,
                    "resourceVersion": snapshot.resource_version,
                },
                "spec": spec,
                "status": status,
            }
            try:
                with _translated(f"updating {where}"):
                    answer = self._call(
                        "PUT", _objects(GROUP, VERSION, self.namespace, POOLS, snapshot.name), body
                    )
            except NotFoundError:
                # Deleted since read (an empty block): the writer reads again and
                # creates it, as after any lost compare-and-swap.
                raise ConflictError(f"updating {where}: conflict", "it no longer exists") from None
        return self._pool_from(answer, self._known(snapshot.name))

    def _known(self, pool: str) -> DecodedEntries:
        """The entries of ``pool`` as decoded last, kept for the most recent pools only."""
        with self._decoded_lock:
            known = self._decoded.get(pool)
            if known is None:
                if len(self._decoded) >= DECODED_POOLS:
                    self._decoded.clear()
                known = self._decoded[pool] = DecodedEntries()
            return known

    def _pool_from(
        self, body: Mapping[str, Any], known: DecodedEntries | None = None
    ) -> PoolSnapshot:
        metadata = body.get("metadata", {})
        spec = body.get("spec", {}) or {}
        name = str(metadata.get("name", ""))
        return PoolSnapshot(
            name=name,
            cidr=str(spec.get("range", "")),
            allocations=decode_allocations(spec, pool=name, known=known),
            resource_version=str(metadata.get("resourceVersion")),
            metadata=kept_metadata(metadata),
            status=dict(body.get("status") or {}),
        )

    def delete_pool(self, snapshot: PoolSnapshot) -> bool:
        """Delete it if unchanged since ``snapshot`` was read (ConflictError if it changed);
        False when it was already gone."""
        checked_name("IPPool", snapshot.name)
        return self._delete_as_read(
            _objects(GROUP, VERSION, self.namespace, POOLS, snapshot.name),
            f"IPPool {self.namespace}/{snapshot.name}",
            snapshot.resource_version,
        )

    def _delete_as_read(self, where: str, what: str, resource_version: str | None) -> bool:
        """DELETE ``where`` only at ``resource_version`` (ConflictError otherwise);
        False when it was already gone."""
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"resourceVersion": resource_version},
        }
        try:
            with _translated(f"deleting {what}"):
                self._call("DELETE", where, options)
        except NotFoundError:
            return False
        return True

    # --- OverlappingRangeIPReservations -------------------------------------------
    def get_reservation(self, name: str) -> Reservation | None:
        checked_name("OverlappingRangeIPReservation", name)
        try:
            with _translated(f"reading OverlappingRangeIPReservation {name}"):
                body = self._call(
                    "GET", _objects(GROUP, VERSION, self.namespace, RESERVATIONS, name)
                )
        except NotFoundError:
            return None
        return self._reservation_from(body)

    def list_reservations(self) -> list[Reservation]:
        with _translated(f"listing OverlappingRangeIPReservations in {self.namespace}"):
            body = self._call(
                "GET", _objects(GROUP, VERSION, self.namespace, RESERVATIONS), timeout=(3.0, 60.0)
            )
        return [self._reservation_from(item) for item in body.get("items", [])]

    def create_reservation(self, name: str, holder: Allocation) -> Reservation:
        """Reserve an address cluster-wide; AlreadyExistsError if someone has it."""
        checked_name("OverlappingRangeIPReservation", name)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "OverlappingRangeIPReservation",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": encode_reservation(holder),
        }
        with _translated(f"creating OverlappingRangeIPReservation {name}"):
            answer = self._call(
                "POST", _objects(GROUP, VERSION, self.namespace, RESERVATIONS), body
            )
        return self._reservation_from(answer)

    def update_reservation(self, reservation: Reservation, holder: Allocation) -> Reservation:
        checked_name("OverlappingRangeIPReservation", reservation.name)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "OverlappingRangeIPReservation",
            "metadata": {
                **kept_metadata(reservation.metadata),
                "name": reservation.name,
                "namespace": self.namespace,
                "resourceVersion": reservation.resource_version,
            },
            "spec": encode_reservation(holder),
        }
        with _translated(f"updating OverlappingRangeIPReservation {reservation.name}"):
            answer = self._call(
                "PUT",
                _objects(GROUP, VERSION, self.namespace, RESERVATIONS, reservation.name),
                body,
            )
        return self._reservation_from(answer)

    def delete_reservation(self, reservation: Reservation) -> bool:
        """Delete it if unchanged since read; False when it was already gone."""
        checked_name("OverlappingRangeIPReservation", reservation.name)
        return self._delete_as_read(
            _objects(GROUP, VERSION, self.namespace, RESERVATIONS, reservation.name),
            f"OverlappingRangeIPReservation {reservation.name}",
            reservation.resource_version,
        )

    # --- watched collections (the reconciler's caches) -------------------------------
    def list_pools_at(self) -> tuple[list[PoolSnapshot], str]:
        """Every IPPool, and the collection's resourceVersion to watch from."""
        where = _objects(GROUP, VERSION, self.namespace, POOLS)
        return self._list_at(where, f"listing IPPools in {self.namespace}", self._pool_from)

    def watch_pools(
        self, resource_version: str, timeout_s: float = 240.0
    ) -> Iterator[WatchEvent[PoolSnapshot]]:
        """IPPool changes after ``resource_version``, until about ``timeout_s`` have passed."""
        where = _objects(GROUP, VERSION, self.namespace, POOLS)
        what = f"IPPools in {self.namespace}"
        return self._watch(where, what, resource_version, timeout_s, self._pool_from)

    def list_reservations_at(self) -> tuple[list[Reservation], str]:
        """Every reservation, and the collection's resourceVersion to watch from."""
        where = _objects(GROUP, VERSION, self.namespace, RESERVATIONS)
        what = f"listing OverlappingRangeIPReservations in {self.namespace}"
        return self._list_at(where, what, self._reservation_from)

    def watch_reservations(
        self, resource_version: str, timeout_s: float = 240.0
    ) -> Iterator[WatchEvent[Reservation]]:
        """Reservation changes after ``resource_version``, until about ``timeout_s``."""
        where = _objects(GROUP, VERSION, self.namespace, RESERVATIONS)
        what = f"OverlappingRangeIPReservations in {self.namespace}"
        return self._watch(where, what, resource_version, timeout_s, self._reservation_from)

    def list_pod_summaries_at(self) -> tuple[list[dict[str, Any]], str]:
        """Every pod of the cluster, summarised (``_pod_summary``), read in pages."""
        return self._list_at("/api/v1/pods", "listing Pods in all namespaces", _pod_summary)

    def watch_pod_summaries(
        self, resource_version: str, timeout_s: float = 240.0
    ) -> Iterator[WatchEvent[dict[str, Any]]]:
        """Pod changes in every namespace after ``resource_version``, summarised."""
        return self._watch(
            "/api/v1/pods", "Pods in all namespaces", resource_version, timeout_s, _pod_summary
        )

    def list_ipam_claim_refs_at(self) -> tuple[list[str], str]:
        """Every IPAMClaim (``namespace/name``) of the cluster, and the version to watch
        from. NotFoundError while the IPAMClaim CRD is not installed."""
        where = f"/apis/{CLAIM_GROUP}/{CLAIM_VERSION}/{CLAIMS}"
        return self._list_at(where, "listing IPAMClaims in all namespaces", _object_ref)

    def watch_ipam_claim_refs(
        self, resource_version: str, timeout_s: float = 240.0
    ) -> Iterator[WatchEvent[str]]:
        """IPAMClaim changes (``namespace/name``) in every namespace after ``resource_version``."""
        where = f"/apis/{CLAIM_GROUP}/{CLAIM_VERSION}/{CLAIMS}"
        return self._watch(
            where, "IPAMClaims in all namespaces", resource_version, timeout_s, _object_ref
        )

    def _list_at(
        self, where: str, action: str, decode: Callable[[Mapping[str, Any]], T]
    ) -> tuple[list[T], str]:
        """One consistent listing of a collection, in pages, decoded page by page (so a
        large collection is never held raw at once), and its resourceVersion."""
        items: list[T] = []
        token, version = "", ""
        while True:
            query = f"?limit={LIST_PAGE_SIZE}"
            if token:
                query += f"&continue={urllib.parse.quote(token, safe='')}"
            with _translated(action):
                body = self._call("GET", where + query, timeout=(3.0, 60.0))
            items.extend(decode(item) for item in body.get("items", []) if isinstance(item, dict))
            metadata = body.get("metadata") or {}
            version = version or str(metadata.get("resourceVersion") or "")
            token = str(metadata.get("continue") or "")
            if not token:
                return items, version

    def _watch(
        self,
        where: str,
        what: str,
        resource_version: str,
        timeout_s: float,
        decode: Callable[[Mapping[str, Any]], T],
    ) -> Iterator[WatchEvent[T]]:
        """The events of a watch of a collection, decoded.

        A 410 Gone (asked for history the server no longer keeps) ends it
        with an EXPIRED event; any other error raises StoreError. Bookmarks
        are asked for, so that a quiet collection's version stays recent.
        """
        query = urllib.parse.urlencode(
            {
                "watch": "1",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(max(1, round(timeout_s))),
            }
        )
        with _translated(f"watching {what}"):
            for event in self._call.stream(f"{where}?{query}", timeout_s + 10.0):
                kind, body = str(event.get("type") or ""), event.get("object")
                if not isinstance(body, dict):
                    continue
                version = str((body.get("metadata") or {}).get("resourceVersion") or "")
                if kind == "ERROR":
                    if body.get("code") == 410:
                        yield WatchEvent("EXPIRED", None, resource_version)
                        return
                    raise StoreError(
                        f"watching {what}: the watch failed", str(body.get("message") or body)
                    )
                if kind == "BOOKMARK":
                    yield WatchEvent(kind, None, version)
                elif kind in {"ADDED", "MODIFIED", "DELETED"}:
                    yield WatchEvent(kind, decode(body), version)

    def _reservation_from(self, body: Mapping[str, Any]) -> Reservation:
        metadata = body.get("metadata", {})
        name = str(metadata.get("name", ""))
        return Reservation(
            name=name,
            holder=decode_reservation(body.get("spec", {}) or {}, name=name),
            resource_version=str(metadata.get("resourceVersion")),
            metadata=kept_metadata(metadata),
        )

    # --- Leases --------------------------------------------------------------------
    def get_lease(self, name: str) -> LeaseRecord | None:
        checked_name("Lease", name)
        try:
            with _translated(f"reading Lease {self.lease_namespace}/{name}"):
                body = self._call(
                    "GET", _objects(LEASE_GROUP, LEASE_VERSION, self.lease_namespace, LEASES, name)
                )
        except NotFoundError:
            return None
        return self._lease_from(body)

    def write_lease(
        self,
        current: LeaseRecord | None,
        name: str,
        holder: str,
        duration_s: float,
        notes: Mapping[str, str] | None = None,
    ) -> LeaseRecord:
        """Take, renew or (holder "") give up a Lease, by compare-and-swap.

        Its annotations are kept, with ``notes`` set on top.
        """
        checked_name("Lease", name)
        now = dt.datetime.now(dt.UTC)
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": max(1, round(duration_s)),
            "renewTime": _micro_time(now),
        }
        if current is None or current.holder != holder:
            spec["acquireTime"] = _micro_time(now)
        metadata: dict[str, Any] = {"name": name, "namespace": self.lease_namespace}
        annotations = {**(current.notes if current is not None else {}), **(notes or {})}
        if annotations:
            metadata["annotations"] = annotations
        body = {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": metadata}
        body["spec"] = spec
        if current is None:
            with _translated(f"creating Lease {self.lease_namespace}/{name}"):
                answer = self._call(
                    "POST", _objects(LEASE_GROUP, LEASE_VERSION, self.lease_namespace, LEASES), body
                )
        else:
            metadata["resourceVersion"] = current.resource_version
            with _translated(f"updating Lease {self.lease_namespace}/{name}"):
                answer = self._call(
                    "PUT",
                    _objects(LEASE_GROUP, LEASE_VERSION, self.lease_namespace, LEASES, name),
                    body,
                )
        return self._lease_from(answer, duration_s)

    def note_lease(self, name: str, notes: Mapping[str, str | None]) -> LeaseRecord:
        """Set (None: remove) annotations of a Lease without reading it: a merge patch,
        which never conflicts with another; creates the Lease, held by nobody, if missing."""
        checked_name("Lease", name)
        collection = _objects(LEASE_GROUP, LEASE_VERSION, self.lease_namespace, LEASES)
        where = f"Lease {self.lease_namespace}/{name}"
        for _ in range(3):
            try:
                with _translated(f"annotating {where}"):
                    answer = self._call(
                        "PATCH",
                        f"{collection}/{name}",
                        {"metadata": {"annotations": dict(notes)}},
                        content_type=MERGE_PATCH,
                    )
                return self._lease_from(answer)
            except NotFoundError:
                pass
            kept = {key: value for key, value in notes.items() if value is not None}
            metadata: dict[str, Any] = {"name": name, "namespace": self.lease_namespace}
            if kept:
                metadata["annotations"] = kept
            body = {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": metadata}
            try:
                with _translated(f"creating {where}"):
                    answer = self._call("POST", collection, {**body, "spec": {}})
                return self._lease_from(answer)
            except AlreadyExistsError:
                continue  # made meanwhile: patch it
        raise ConflictError(f"annotating {where}: conflict", "it was deleted and made again")

    def delete_lease(self, record: LeaseRecord) -> bool:
        """Delete it if unchanged since read (ConflictError if it changed); False if gone."""
        checked_name("Lease", record.name)
        return self._delete_as_read(
            _objects(LEASE_GROUP, LEASE_VERSION, self.lease_namespace, LEASES, record.name),
            f"Lease {self.lease_namespace}/{record.name}",
            record.resource_version,
        )

    def watch_lease(self, name: str, timeout_s: float = 60.0) -> Iterator[LeaseRecord | None]:
        """Watch one Lease: its current state first (if it exists), then every change
        (None: deleted), until about ``timeout_s`` have passed.

        For a writer waiting for a Lease, so that it is told when the Lease is
        given back instead of reading it again and again. StoreError if the
        watch cannot be opened or breaks (e.g. 403 without the ``watch`` verb).
        """
        checked_name("Lease", name)
        where = _objects(LEASE_GROUP, LEASE_VERSION, self.lease_namespace, LEASES)
        what = f"Lease {self.lease_namespace}/{name}"
        for body in self._watch_one(where, name, what, timeout_s):
            yield None if body is None else self._lease_from(body)

    def watch_pool(self, name: str, timeout_s: float = 60.0) -> Iterator[PoolMark | None]:
        """Watch one IPPool's metadata: its current state first (if it exists),
        then every change (None: deleted), until about ``timeout_s`` have passed.

        For the writers of a shared pool, who follow whose turn it is and
        whether what they hold is current. Only the metadata travels (the API's
        PartialObjectMetadata), so that every node is not sent, and does not
        parse, every version of the pool's entries. StoreError if the watch
        cannot be opened or breaks (e.g. 403 without the ``watch`` verb).
        """
        checked_name("IPPool", name)
        where = _objects(GROUP, VERSION, self.namespace, POOLS)
        what = f"IPPool {self.namespace}/{name}"
        for body in self._watch_one(where, name, what, timeout_s, METADATA_ONLY):
            if body is None:
                yield None
                continue
            metadata = body.get("metadata") or {}
            yield PoolMark(
                name=str(metadata.get("name", "")),
                resource_version=str(metadata.get("resourceVersion")),
                annotations={
                    str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()
                },
            )

    def _watch_one(
        self,
        collection: str,
        name: str,
        what: str,
        timeout_s: float,
        accept: str = "application/json",
    ) -> Iterator[dict[str, Any] | None]:
        """The states of one object of ``collection`` by a watch (None: deleted)."""
        query = urllib.parse.urlencode(
            {
                "watch": "1",
                "fieldSelector": f"metadata.name={name}",
                "timeoutSeconds": str(max(1, round(timeout_s))),
            }
        )
        with _translated(f"watching {what}"):
            for event in self._call.stream(f"{collection}?{query}", timeout_s + 10.0, accept):
                kind, body = event.get("type"), event.get("object")
                if kind == "DELETED":
                    yield None
                elif kind in {"ADDED", "MODIFIED"} and isinstance(body, dict):
                    yield body
                elif kind == "ERROR":  # e.g. 410 Gone: the caller opens a new watch
                    return

    @staticmethod
    def _lease_from(body: Mapping[str, Any], duration_s: float | None = None) -> LeaseRecord:
        metadata = body.get("metadata", {})
        spec = body.get("spec", {}) or {}
        seconds = spec.get("leaseDurationSeconds")
        return LeaseRecord(
            name=str(metadata.get("name", "")),
            holder=str(spec.get("holderIdentity") or ""),
            renewed=_parse_time(spec.get("renewTime")),
            duration_s=float(seconds) if isinstance(seconds, int) else (duration_s or 0.0),
            resource_version=str(metadata.get("resourceVersion")),
            notes={str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()},
        )

    # --- Pods (read only) ----------------------------------------------------------
    def get_pod(self, namespace: str, name: str) -> PodState | None:
        """The pod as it is now, or None when no pod has that name."""
        checked_namespace(namespace)
        checked_name("Pod", name)
        try:
            with _translated(f"reading Pod {namespace}/{name}"):
                body = self._call("GET", _objects("", "v1", namespace, "pods", name))
        except NotFoundError:
            return None
        return _pod_from(body)

    def list_pods(self) -> list[PodState]:
        """Every pod of the cluster, read in pages (one consistent snapshot)."""
        pods, _ = self._list_at("/api/v1/pods", "listing Pods in all namespaces", _pod_from)
        return pods

    # --- IPAMClaims ------------------------------------------------------------------
    def get_ipam_claim(self, namespace: str, name: str) -> ClaimState | None:
        """The IPAMClaim, or None when there is none of that name (or no such CRD)."""
        checked_namespace(namespace)
        checked_name("IPAMClaim", name)
        try:
            with _translated(f"reading IPAMClaim {namespace}/{name}"):
                body = self._call(
                    "GET", _objects(CLAIM_GROUP, CLAIM_VERSION, namespace, CLAIMS, name)
                )
        except NotFoundError:
            return None
        return _claim_from(body)

    def list_ipam_claims(self) -> list[ClaimState]:
        """Every IPAMClaim of the cluster; none when the CRD is not installed."""
        try:
            with _translated("listing IPAMClaims in all namespaces"):
                body = self._call(
                    "GET", f"/apis/{CLAIM_GROUP}/{CLAIM_VERSION}/{CLAIMS}", timeout=(3.0, 60.0)
                )
        except NotFoundError:
            return []
        return [_claim_from(item) for item in body.get("items", [])]

    def write_ipam_claim_status(
        self, claim: ClaimState, ips: list[str], owner_pod: str
    ) -> ClaimState:
        """Set ``status.ips`` and ``status.ownerPod`` through the status subresource.

        A compare-and-swap on the claim as read: ConflictError if it changed.
        The condition ``IPsAllocated`` is set as OVN-Kubernetes sets it; other
        conditions are kept.
        """
        checked_namespace(claim.namespace)
        checked_name("IPAMClaim", claim.name)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": f"{CLAIM_GROUP}/{CLAIM_VERSION}",
            "kind": "IPAMClaim",
            "metadata": {
                "name": claim.name,
                "namespace": claim.namespace,
                "resourceVersion": claim.resource_version,
            },
            "spec": {"network": claim.network, "interface": claim.interface},
            "status": {
                "ips": list(ips),
                "ownerPod": {"name": owner_pod},
                "conditions": allocated_conditions(claim.conditions, now),
            },
        }
        path = _objects(CLAIM_GROUP, CLAIM_VERSION, claim.namespace, CLAIMS, claim.name)
        with _translated(f"writing the status of IPAMClaim {claim.namespace}/{claim.name}"):
            answer = self._call("PUT", f"{path}/status", body)
        return _claim_from(answer)

    # --- Events ----------------------------------------------------------------------
    def create_event(
        self,
        about: ObjectRef,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str = "whereabouts-py",
        instance: str = "",
    ) -> None:
        """Record a core/v1 Event on ``about`` (in its namespace, as the API requires)."""
        checked_namespace(about.namespace)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved: dict[str, Any] = {
            "apiVersion": about.api_version,
            "kind": about.kind,
            "namespace": about.namespace,
            "name": about.name,
        }
        if about.uid:
            involved["uid"] = about.uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{about.name}.", "namespace": about.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": instance,
        }
        with _translated(f"creating Event {reason} on {about.kind} {about.namespace}/{about.name}"):
            self._call("POST", _objects("", "v1", about.namespace, "events"), body)


def _pod_from(body: Mapping[str, Any]) -> PodState:
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    annotations = metadata.get("annotations") or {}
    disruption = disruption_targeted(status.get("conditions"))
    statuses = [s for s in status.get("containerStatuses") or [] if isinstance(s, Mapping)]
    stopped = bool(statuses) and all(
        isinstance(s.get("state"), Mapping) and set(s["state"]) == {"terminated"} for s in statuses
    )
    return PodState(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        phase=str(status.get("phase") or ""),
        disruption_target=disruption,
        containers_stopped=stopped,
        listed_addresses=network_status_of(
            {str(k): str(v) for k, v in annotations.items()}
            if isinstance(annotations, Mapping)
            else {}
        ),
        node=str(spec.get("nodeName") or ""),
        networks=str(annotations[NETWORKS_ANNOTATION])
        if isinstance(annotations, Mapping) and NETWORKS_ANNOTATION in annotations
        else None,
    )


def _claim_from(body: Mapping[str, Any]) -> ClaimState:
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    ips = status.get("ips") if isinstance(status, Mapping) else None
    owner = status.get("ownerPod") if isinstance(status, Mapping) else None
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    return ClaimState(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        network=str(spec.get("network") or "") if isinstance(spec, Mapping) else "",
        interface=str(spec.get("interface") or "") if isinstance(spec, Mapping) else "",
        ips=tuple(str(ip) for ip in ips) if isinstance(ips, list) else (),
        owner_pod=str(owner.get("name") or "") if isinstance(owner, Mapping) else "",
        resource_version=str(metadata.get("resourceVersion") or "") or None,
        uid=str(metadata.get("uid", "")),
        conditions=tuple(c for c in conditions if isinstance(c, Mapping))
        if isinstance(conditions, list)
        else (),
    )
