"""Every error whereabouts-py reports, each with the CNI error code it maps to.

Standard library only: the CNI shim imports this module.

    WhereaboutsError                      (base; code 999 when nothing better fits)
    ├── IncompatibleVersionError          1   cniVersion not supported
    ├── UnsupportedFieldError             2   a field we recognise but cannot honour
    ├── ContainerUnknownError             3   no such container / attachment (CHECK)
    ├── InvalidEnvironmentError           4   CNI_* environment missing or malformed
    ├── StoreError                        5   the Kubernetes API failed (I/O)
    │   ├── NotFoundError                 5   the object does not exist
    │   ├── ForbiddenError                5   this identity lacks the right (RBAC)
    │   ├── InvalidNameError              7   a name Kubernetes refuses: never sent
    │   └── ApiUnavailableError          11   not reachable or overloaded (also a TryAgainError)
    ├── DecodeError                       6   stdin or a request is not valid JSON
    ├── ConfigError                       7   the IPAM configuration is invalid
    ├── TryAgainError                    11   transient: conflicts exhausted, daemon busy
    │   ├── DaemonUnreachableError       11   the node daemon's socket does not answer
    │   └── ConflictError                11   a compare-and-swap lost (409 Conflict)
    │       └── AlreadyExistsError       11   a create found the object there
    ├── NotAvailableError                50   STATUS: an ADD could not succeed now
    ├── PoolExhaustedError              100   no free address left in a range
    ├── AddressTakenError               101   the requested address is held by another pod
    ├── AddressOutOfRangeError          102   the requested address is in no configured range
    ├── AddressNotConfiguredError       103   CHECK: the address is not on the interface
    └── GarbageCollectionError          104   GC released what it could but some failed

Codes 100 and up are ours; ``docs/cni-errors.md`` lists them for operators.
"""

from __future__ import annotations

# typing costs milliseconds at every CNI call; it is only needed to type-check.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar


# CNI spec 1.1.0 well-known codes.
CODE_INCOMPATIBLE_VERSION = 1
CODE_UNSUPPORTED_FIELD = 2
CODE_CONTAINER_UNKNOWN = 3
CODE_INVALID_ENVIRONMENT = 4
CODE_IO_FAILURE = 5
CODE_DECODE_FAILURE = 6
CODE_INVALID_CONFIG = 7
CODE_TRY_AGAIN = 11
CODE_NOT_AVAILABLE = 50
CODE_NOT_AVAILABLE_LIMITED = 51
# Our own codes (>= 100).
CODE_POOL_EXHAUSTED = 100
CODE_ADDRESS_TAKEN = 101
CODE_ADDRESS_OUT_OF_RANGE = 102
CODE_ADDRESS_NOT_CONFIGURED = 103
CODE_GC_INCOMPLETE = 104
CODE_INTERNAL = 999


class WhereaboutsError(Exception):
    """Base of every error we report. ``msg`` is short, ``details`` says what to do."""

    default_code: ClassVar[int] = CODE_INTERNAL

    def __init__(self, msg: str, details: str = "", *, code: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details
        self.code = self.default_code if code is None else code

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def to_cni(self, cni_version: str) -> dict[str, Any]:
        """The CNI error object that the plugin prints on stdout."""
        error: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            error["details"] = self.details
        return error


class IncompatibleVersionError(WhereaboutsError):
    default_code = CODE_INCOMPATIBLE_VERSION


class UnsupportedFieldError(WhereaboutsError):
    default_code = CODE_UNSUPPORTED_FIELD


class ContainerUnknownError(WhereaboutsError):
    default_code = CODE_CONTAINER_UNKNOWN


class InvalidEnvironmentError(WhereaboutsError):
    default_code = CODE_INVALID_ENVIRONMENT


class StoreError(WhereaboutsError):
    default_code = CODE_IO_FAILURE


class NotFoundError(StoreError):
    pass


class ForbiddenError(StoreError):
    """The API refused this identity the request (403 from a ready apiserver)."""


class InvalidNameError(StoreError):
    """An object name Kubernetes would refuse; the store never sends a request for it."""

    default_code = CODE_INVALID_CONFIG


class DecodeError(WhereaboutsError):
    default_code = CODE_DECODE_FAILURE


class ConfigError(WhereaboutsError):
    """Invalid IPAM configuration; the message names the key and the offending value."""

    default_code = CODE_INVALID_CONFIG

    def __init__(self, key: str, value: object, problem: str, details: str = "") -> None:
        super().__init__(f"invalid ipam config: {key}={shown(value)}: {problem}", details)
        self.key = key
        self.value = value


class TryAgainError(WhereaboutsError):
    default_code = CODE_TRY_AGAIN


class DaemonUnreachableError(TryAgainError):
    pass


class ApiUnavailableError(StoreError, TryAgainError):
    """The API cannot be reached, or answered 429/5xx: transient, so code 11."""

    default_code = CODE_TRY_AGAIN


class ConflictError(TryAgainError):
    """A write lost its compare-and-swap; callers re-read and retry, boundedly."""


class AlreadyExistsError(ConflictError):
    pass


class NotAvailableError(WhereaboutsError):
    default_code = CODE_NOT_AVAILABLE


class PoolExhaustedError(WhereaboutsError):
    default_code = CODE_POOL_EXHAUSTED


class AddressTakenError(WhereaboutsError):
    default_code = CODE_ADDRESS_TAKEN


class AddressOutOfRangeError(WhereaboutsError):
    default_code = CODE_ADDRESS_OUT_OF_RANGE


class AddressNotConfiguredError(WhereaboutsError):
    default_code = CODE_ADDRESS_NOT_CONFIGURED


class GarbageCollectionError(WhereaboutsError):
    default_code = CODE_GC_INCOMPLETE


_BY_CODE: dict[int, type[WhereaboutsError]] = {
    cls.default_code: cls
    for cls in (
        IncompatibleVersionError,
        UnsupportedFieldError,
        ContainerUnknownError,
        InvalidEnvironmentError,
        StoreError,
        DecodeError,
        TryAgainError,
        NotAvailableError,
        PoolExhaustedError,
        AddressTakenError,
        AddressOutOfRangeError,
        AddressNotConfiguredError,
        GarbageCollectionError,
    )
}


# How much of an offending value a message shows.
SHOWN_CHARACTERS = 200


def shown(value: object) -> str:
    """An offending value for a message: strings as they are, others as repr, both bounded."""
    text = value if isinstance(value, str) else _brief(value, 3)
    if len(text) > SHOWN_CHARACTERS:
        return f"{text[:SHOWN_CHARACTERS]}... ({len(text)} characters)"
    return text


def _brief(value: object, levels: int) -> str:
    """repr, but at most ``levels`` deep and 8 items wide (input may be huge or deep)."""
    if isinstance(value, list | tuple | dict):
        if levels == 0:
            return "[...]" if not isinstance(value, dict) else "{...}"
        if isinstance(value, dict):
            items = [f"{_brief(k, 0)}: {_brief(v, levels - 1)}" for k, v in list(value.items())[:8]]
            opening, closing = "{", "}"
        else:
            items = [_brief(item, levels - 1) for item in list(value)[:8]]
            opening, closing = "[", "]"
        more = ", ..." if len(value) > 8 else ""
        return f"{opening}{', '.join(items)}{more}{closing}"
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= SHOWN_CHARACTERS else text[:SHOWN_CHARACTERS] + "..."


def from_code(code: int, msg: str, details: str = "") -> WhereaboutsError:
    """Rebuild an error received over the daemon socket, keeping its code and text."""
    return _BY_CODE.get(code, WhereaboutsError)(msg, details, code=code)


def describe(error: BaseException) -> str:
    """One line for a CLI user: our errors as they are, others with their type."""
    if isinstance(error, WhereaboutsError):
        return str(error)
    text = str(error)
    name = type(error).__name__
    return f"{name}: {text}" if text else name
