"""The two deterministic hashes ARM exposes, computed exactly as Azure computes them.

uniqueString: the arguments joined with '-', UTF-8 encoded, hashed with the 64-bit MurmurHash variant in
Microsoft's ResourceStack library (MurmurHash3 x86_128's first two lanes and constants, finalised into
64 bits), and the hash's top 65 bits written as 13 lower-case RFC 4648 base32 characters.

guid: an RFC 4122 version-5 (SHA-1, name-based) UUID of the arguments joined with '-', in ARM's namespace
11fb06fb-712d-4ddd-98c7-e71bbd588830.

The test suite checks both against values produced by Azure (see tests/unit/templates/test_string.py).
"""

from __future__ import annotations

import uuid

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_C1, _C2 = 0x239B961B, 0xAB0E9789
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
GUID_NAMESPACE = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _mix1(k: int) -> int:
    return (_rotl((k * _C1) & _M32, 15) * _C2) & _M32


def _mix2(k: int) -> int:
    return (_rotl((k * _C2) & _M32, 17) * _C1) & _M32


def murmur64(data: bytes) -> int:
    h1 = h2 = 0
    n = len(data)
    blocks = n - n % 8
    for i in range(0, blocks, 8):
        h1 = ((_rotl(h1 ^ _mix1(int.from_bytes(data[i:i + 4], "little")), 19) + h2) * 5 + 0x561CCD1B) & _M32
        h2 = ((_rotl(h2 ^ _mix2(int.from_bytes(data[i + 4:i + 8], "little")), 13) + h1) * 5 + 0x0BCAA747) & _M32
    tail = data[blocks:]
    if tail:
        h1 ^= _mix1(int.from_bytes(tail[:4], "little"))
        if len(tail) > 4:
            h2 ^= _mix2(int.from_bytes(tail[4:], "little"))
    h1, h2 = h1 ^ n, h2 ^ n
    h1 = (h1 + h2) & _M32
    h2 = (h2 + h1) & _M32
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = (h1 + h2) & _M32
    h2 = (h2 + h1) & _M32
    return (h2 << 32) | h1


def unique_string(values: list[str]) -> str:
    h = murmur64("-".join(values).encode("utf-8"))
    chars = []
    for _ in range(13):
        chars.append(_BASE32[h >> 59])
        h = (h << 5) & _M64
    return "".join(chars)


def deterministic_guid(values: list[str]) -> str:
    return str(uuid.uuid5(GUID_NAMESPACE, "-".join(values)))
