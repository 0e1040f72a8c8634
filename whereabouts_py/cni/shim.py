"""The CNI IPAM plugin executable (CNI spec 1.1.0): glue between the runtime and the daemon.

Standard library only, and runs once per pod attachment, so it imports as little
as it can. It reads ``CNI_*`` from the environment and the network configuration
from stdin, checks what it needs to route the request, forwards the request to
the node daemon (``wire.call``) and prints the result in the requested
cniVersion. The daemon validates the IPAM configuration fully.

Verbs: VERSION is answered here. ADD, DEL, CHECK, GC and STATUS go to the
daemon; only ADD prints a result, the others print nothing on success. Any
failure prints one CNI error object ``{"cniVersion", "code", "msg", "details"}``
on stdout and exits 1; stderr carries free-form logs only. Nothing escapes as
a traceback: an unexpected exception is answered as code 999.

GC and STATUS also accept a configuration list (``{"name", "cniVersion",
"plugins": [...]}``): the shim derives the plugin configuration whose
``ipam.type`` is this plugin, as the runtime does for each plugin of a list,
and forwards that. GC refuses to run without ``cni.dev/valid-attachments``,
because an absent list must never be read as "nothing is valid".

Which daemon socket, first match wins:

1. env ``WHEREABOUTS_PY_SOCKET`` (lets simulated nodes share one machine; Multus
   passes its environment to the plugins it runs);
2. ``ipam.daemon_socket`` in the network configuration;
3. ``daemon_socket`` in the flat file: the first existing file among
   ``ipam.configuration_path``, ``/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf``,
   ``/etc/cni/net.d/whereabouts.d/whereabouts.conf`` and
   ``/host/etc/cni/net.d/whereabouts.d/whereabouts.conf`` (a file that is not
   a JSON object is a configuration error);
4. ``/run/whereabouts-py/daemon.sock``.

Limits (``wire``): stdin larger than 4 MiB is refused with code 7 naming the
limit (permanent: a retry cannot help), JSON nested deeper than 64 levels with
code 6; ``CNI_*`` values are checked as the daemon checks them.

Timeouts: a missing socket fails at once; the answer may take 25 s for ADD, DEL
and GC, 5 s for CHECK and STATUS (env ``WHEREABOUTS_PY_TIMEOUT``, seconds,
overrides both). An unreachable or silent daemon is code 11 "try again later",
and code 50 "not available" for STATUS.
"""

from __future__ import annotations

import posix
import sys

from whereabouts_py.cni import limits, results, wire
from whereabouts_py.cni import quickjson as json
from whereabouts_py.errors import (
    CODE_INVALID_CONFIG,
    CODE_IO_FAILURE,
    ConfigError,
    DecodeError,
    IncompatibleVersionError,
    InvalidEnvironmentError,
    NotAvailableError,
    TryAgainError,
    WhereaboutsError,
)

# typing costs milliseconds at every CNI call; it is only needed to type-check.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

VERBS = wire.VERBS
TIMEOUT_ENV = "WHEREABOUTS_PY_TIMEOUT"
TIMEOUTS_S = {"ADD": 25.0, "DEL": 25.0, "GC": 25.0, "CHECK": 5.0, "STATUS": 5.0}
FLAT_FILES = (
    "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
    "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
    "/host/etc/cni/net.d/whereabouts.d/whereabouts.conf",
)
VALID_ATTACHMENTS = "cni.dev/valid-attachments"


# ``os`` is not imported: it costs this short-lived process more than the
# three things it would do here (the environment, a file test, a base name).
def _env(name: str) -> str | None:
    value = posix.environ.get(name.encode())
    return None if value is None else value.decode("utf-8", "surrogateescape")


def _is_file(path: str) -> bool:
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o100000  # S_ISREG
    except (OSError, ValueError):
        return False


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def run(plugin_type: str | None = None) -> NoReturn:
    """The executable's entry point: ``main``, then leave at once with its exit code.

    By then the answer is written; what is left is flushed here. The interpreter's
    teardown (freeing every module and object one by one) is skipped: it would
    cost each call about 2 ms of CPU for nothing (see BENCHMARKS.md).
    """
    try:
        code = main(plugin_type)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib would be one more import per call)
            stream.flush()
        except (OSError, ValueError):
            pass  # closed: nobody to tell
    posix._exit(code)


def main(plugin_type: str | None = None) -> int:
    """Run one CNI invocation; ``plugin_type`` defaults to this executable's file name."""
    cni_version = results.LATEST_VERSION
    try:
        command = _command()
        stdin = sys.stdin.buffer.read(wire.MAX_STDIN_BYTES + 1)
        if command == "VERSION":
            _write(_version_answer(stdin))
            return 0
        _check_size(stdin)
        config = _decode_config(stdin)
        cni_version = _cni_version(config)
        own_type = plugin_type or _basename(sys.argv[0])
        if command in ("GC", "STATUS"):
            config = _plugin_config(config, own_type)
        attachment = _attachment_environment()
        wire.check_environment(command, attachment)
        ipam = _ipam(config, own_type)
        if command == "GC":
            _check_valid_attachments(config)
        result = _forward(command, attachment, config, _socket_path(ipam), _timeout(command))
        if command == "ADD":
            _write(results.render(result, cni_version))
        return 0
    except WhereaboutsError as error:
        _write(error.to_cni(cni_version))
        return 1
    except SystemExit:
        raise
    except BaseException as error:  # the runtime must get a CNI error, never a traceback
        internal = _internal_error(error)
        print(f"whereabouts: {internal.msg} ({internal.details})", file=sys.stderr)
        _write(internal.to_cni(cni_version))
        return 1


def _command() -> str:
    command = _env("CNI_COMMAND")
    if not command:
        raise InvalidEnvironmentError(
            "CNI_COMMAND is not set",
            f"this is a CNI plugin; the runtime sets CNI_COMMAND to one of {', '.join(VERBS)}",
        )
    if command not in VERBS:
        raise InvalidEnvironmentError(
            f"CNI_COMMAND={command}: unknown command", f"expected one of {', '.join(VERBS)}"
        )
    return command


def _version_answer(stdin: bytes) -> dict[str, Any]:
    # A probe: answer even when stdin is empty or not JSON.
    requested: object = None
    try:
        config = json.loads(stdin) if stdin.strip() else None
    except (ValueError, RecursionError):
        config = None
    if isinstance(config, dict):
        requested = config.get("cniVersion")
    answered = requested if requested in results.SUPPORTED_VERSIONS else results.LATEST_VERSION
    return {"cniVersion": answered, "supportedVersions": list(results.SUPPORTED_VERSIONS)}


def _check_size(stdin: bytes) -> None:
    if len(stdin) > wire.MAX_STDIN_BYTES:
        raise WhereaboutsError(
            f"the network configuration on stdin is larger than the limit of "
            f"{wire.MAX_STDIN_BYTES} bytes ({wire.MAX_STDIN_BYTES // wire.MIB} MiB)",
            "this is permanent, a retry cannot succeed; make the configuration smaller",
            code=CODE_INVALID_CONFIG,
        )


def _decode_config(stdin: bytes) -> dict[str, Any]:
    try:
        config = json.loads(stdin)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise DecodeError(
            "the network configuration on stdin is not valid JSON", f"{error}"
        ) from None
    except RecursionError:
        raise DecodeError(
            "the network configuration on stdin nests JSON too deeply",
            f"at most {limits.MAX_DEPTH} levels of lists and objects are accepted",
        ) from None
    if not isinstance(config, dict):
        raise DecodeError(
            "the network configuration on stdin is not a JSON object",
            f"got a JSON {type(config).__name__}",
        )
    wire.check_config_depth(config)
    return config


def _cni_version(config: dict[str, Any]) -> str:
    version = config.get("cniVersion")
    if version is None:
        version = _best_of(config.get("cniVersions"))
    if version is None:
        raise IncompatibleVersionError(
            "the network configuration has no cniVersion",
            f"set cniVersion to one of {', '.join(results.SUPPORTED_VERSIONS)}",
        )
    if version not in results.SUPPORTED_VERSIONS:
        raise IncompatibleVersionError(
            f"incompatible CNI version: cniVersion={version!r} is not supported",
            f"this plugin supports {', '.join(results.SUPPORTED_VERSIONS)}",
        )
    return str(version)


def _best_of(versions: object) -> str | None:
    """The highest supported version of a ``cniVersions`` list (spec 1.1.0)."""
    if not isinstance(versions, list):
        return None
    supported = [version for version in results.SUPPORTED_VERSIONS if version in versions]
    return supported[-1] if supported else None


def _plugin_config(config: dict[str, Any], own_type: str) -> dict[str, Any]:
    """The configuration this plugin gets from a configuration list, as a runtime derives it."""
    plugins = config.get("plugins")
    if "ipam" in config or not isinstance(plugins, list):
        return config
    for plugin in plugins:
        if isinstance(plugin, dict) and _type_of(plugin.get("ipam")) == own_type:
            derived = dict(plugin, cniVersion=_cni_version(config))
            for key in ("name", VALID_ATTACHMENTS):
                if key in config:
                    derived[key] = config[key]
            return derived
    raise ConfigError(
        "plugins[].ipam.type",
        [_type_of(plugin.get("ipam")) if isinstance(plugin, dict) else None for plugin in plugins],
        f"no plugin of this configuration list uses the {own_type!r} IPAM",
    )


def _type_of(ipam: object) -> object:
    return ipam.get("type") if isinstance(ipam, dict) else None


def _attachment_environment() -> dict[str, str]:
    """The CNI_* variables that name the attachment (wire.FIELDS), read once."""
    return {name: _env(name) or "" for name in wire.FIELDS}


def _ipam(config: dict[str, Any], own_type: str) -> dict[str, Any]:
    ipam = config.get("ipam")
    if not isinstance(ipam, dict):
        raise ConfigError(
            "ipam",
            ipam,
            "the network configuration has no ipam object",
            f'add "ipam": {{"type": "{own_type}", "range": ...}}',
        )
    if ipam.get("type") != own_type:
        raise ConfigError(
            "ipam.type",
            ipam.get("type"),
            f"this plugin is {own_type!r}",
            f"set ipam.type to {own_type!r}, or install the plugin under that name",
        )
    return ipam


def _check_valid_attachments(config: dict[str, Any]) -> None:
    attachments = config.get(VALID_ATTACHMENTS)
    if not isinstance(attachments, list) or not all(
        isinstance(item, dict)
        and isinstance(item.get("containerID"), str)
        and isinstance(item.get("ifname", ""), str)
        for item in attachments
    ):
        raise WhereaboutsError(
            f"invalid network config for GC: {VALID_ATTACHMENTS}={attachments!r:.200}",
            "GC needs a list of {containerID, ifname} objects to tell which reservations"
            " are still in use; without it nothing is released",
            code=CODE_INVALID_CONFIG,
        )


def _socket_path(ipam: dict[str, Any]) -> str:
    from_env = _env(wire.SOCKET_ENV)
    if from_env:
        return from_env
    if "daemon_socket" in ipam:
        return _socket_setting("ipam.daemon_socket", ipam["daemon_socket"])
    flat = _flat_file(ipam.get("configuration_path"))
    if flat is not None and "daemon_socket" in flat[1]:
        return _socket_setting(f"daemon_socket in {flat[0]}", flat[1]["daemon_socket"])
    return wire.DEFAULT_SOCKET


def _socket_setting(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, value, "must be the path of the daemon's unix socket")
    return value


def _flat_file(configuration_path: object) -> tuple[str, dict[str, Any]] | None:
    candidates = list(FLAT_FILES)
    if isinstance(configuration_path, str) and configuration_path:
        candidates.insert(0, configuration_path)
    for path in candidates:
        if not _is_file(path):
            continue
        try:
            with open(path, "rb") as file:
                flat = json.loads(file.read())
        except OSError as error:
            raise WhereaboutsError(
                f"cannot read the whereabouts configuration file {path}",
                error.strerror or str(error),
                code=CODE_IO_FAILURE,
            ) from None
        except (ValueError, RecursionError) as error:
            raise ConfigError(
                "configuration file", path, f"not valid JSON: {error}", "fix or remove the file"
            ) from None
        if not isinstance(flat, dict):
            raise ConfigError(
                "configuration file", path, "not a JSON object", "fix or remove the file"
            )
        return path, flat
    return None


def _timeout(command: str) -> float:
    text = _env(TIMEOUT_ENV)
    if not text:
        return TIMEOUTS_S[command]
    try:
        timeout = float(text)
    except ValueError:
        timeout = -1.0
    if not 0 < timeout < float("inf"):
        raise InvalidEnvironmentError(
            f"{TIMEOUT_ENV}={text}: invalid timeout", "give a positive number of seconds"
        )
    return timeout


def _forward(
    command: str,
    attachment: dict[str, str],
    config: dict[str, Any],
    socket_path: str,
    timeout_s: float,
) -> dict[str, Any]:
    request: dict[str, Any] = {"command": command}
    request.update((key, attachment[name]) for name, key in wire.FIELDS.items())
    request["config"] = config
    try:
        return wire.call(socket_path, request, timeout_s)
    except TryAgainError as error:
        if command != "STATUS":
            raise
        # STATUS: a daemon that does not answer means an ADD cannot succeed now.
        raise NotAvailableError(error.msg, error.details) from None


def _internal_error(error: BaseException) -> WhereaboutsError:
    where = ""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    if trace is not None:
        code = trace.tb_frame.f_code
        where = f" at {_basename(code.co_filename)}:{trace.tb_lineno}"
    text = str(error)
    kind = type(error).__name__
    return WhereaboutsError(
        f"internal error in the whereabouts CNI plugin: {kind}" + (f": {text}" if text else ""),
        f"{kind}{where}; please report this as a bug",
    )


def _write(answer: dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass  # stdout closed: nobody to answer
