"""The shim's JSON without the json package answers exactly as json does."""

from __future__ import annotations

import json

import pytest

from whereabouts_py.cni import names, quickjson

VALID = [
    b'{"cniVersion": "1.0.0", "ipam": {"type": "whereabouts", "range": "10.0.0.0/24"}}',
    b'  [1, 2.5, -3e2, true, false, null, "\\u00e9\\ud83d\\ude00"]\n',
    '{"name": "caf\u00e9", "n": 12345678901234567890}'.encode(),
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',
    b'"just a string"',
    b"\xef\xbb\xbf{}",  # UTF-8 byte order mark: json accepts it in bytes
    '{"utf16": 1}'.encode("utf-16"),
    '{"utf32": 1}'.encode("utf-32-le"),
]
INVALID = [b"", b"   ", b"{", b'{"a": 1} extra', b"\xff\xfe\xfd", b"{'a': 1}", b'{"a": 1,}', b"nul"]


@pytest.mark.parametrize("data", VALID)
def test_loads_gives_json_s_value(data: bytes) -> None:
    expected = json.loads(data)
    got = quickjson.loads(data)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    if data[:1] == b"{" and b"\x00" not in data:  # the same document as a str
        text = json.dumps(quickjson.loads(data.decode()), sort_keys=True)
        assert text == json.dumps(expected, sort_keys=True)


@pytest.mark.parametrize("data", INVALID)
def test_loads_fails_as_json_does(data: bytes) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(data)
    with pytest.raises(ValueError) as got:
        quickjson.loads(data)
    assert type(got.value) is type(expected.value)
    assert str(got.value) == str(expected.value)


def test_deep_nesting_is_a_recursion_error_as_with_json() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(deep)
    with pytest.raises(RecursionError):
        quickjson.loads(deep)


@pytest.mark.parametrize(
    "value",
    [
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/24", "gateway": "10.0.0.254"}]},
        {"msg": 'caf\u00e9 \u2603 "quoted" \\ \n', "code": 7, "f": 0.1, "big": 2**70},
        [None, True, False, [], {}, 1.5e300, float("inf")],
        "a string",
        3,
    ],
)
def test_dumps_gives_json_s_text(value: object) -> None:
    assert quickjson.dumps(value) == json.dumps(value)
    assert quickjson.dumps(value, compact=True) == json.dumps(value, separators=(",", ":"))


def test_dumps_refuses_what_json_refuses() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        quickjson.dumps({"a": {1, 2}})


@pytest.mark.parametrize(
    ("name", "label", "subdomain"),
    [
        ("a", True, True),
        ("a-b.c", False, True),
        ("0abc9", True, True),
        ("-a", False, False),
        ("a-", False, False),
        ("a..b", False, False),
        (".a", False, False),
        ("A", False, False),
        ("a_b", False, False),
        ("\u00e9", False, False),
        ("a" * 63, True, True),
        ("a" * 64, False, True),
        ("", False, False),
    ],
)
def test_names_without_re(name: str, label: bool, subdomain: bool) -> None:
    assert names.is_namespace_name(name) is label
    assert names.is_object_name(name) is subdomain
