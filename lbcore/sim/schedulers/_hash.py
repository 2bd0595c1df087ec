"""The kernel's hash functions used by dh, sh, mh, lblc and lblcr."""

from __future__ import annotations

from lbcore.model import IPAddress

GOLDEN_RATIO_32 = 0x61C88647
_M64 = (1 << 64) - 1


def fold(address: IPAddress) -> int:
    """The address as one host-order u32: IPv4 itself, IPv6 the XOR of its four 32-bit words."""
    value = int(address)
    if address.version == 4:
        return value
    return (value ^ (value >> 32) ^ (value >> 64) ^ (value >> 96)) & 0xFFFFFFFF


def hash_32(value: int, bits: int) -> int:
    """include/linux/hash.h hash_32(): the generic multiplicative hash used on x86."""
    return ((value * GOLDEN_RATIO_32) & 0xFFFFFFFF) >> (32 - bits)


def _rol(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def hsiphash_u32(value: int, k0: int, k1: int) -> int:
    """hsiphash() of the 4-byte little-endian image of ``value`` (what mh hashes)."""
    return hsiphash(int(value & 0xFFFFFFFF).to_bytes(4, "little"), k0, k1)


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _M64
    v1 = _rol(v1, 13) ^ v0
    v0 = _rol(v0, 32)
    v2 = (v2 + v3) & _M64
    v3 = _rol(v3, 16) ^ v2
    v0 = (v0 + v3) & _M64
    v3 = _rol(v3, 21) ^ v0
    v2 = (v2 + v1) & _M64
    v1 = _rol(v1, 17) ^ v2
    v2 = _rol(v2, 32)
    return v0, v1, v2, v3


def hsiphash(data: bytes, k0: int, k1: int) -> int:
    """Linux hsiphash() on a 64-bit kernel: SipHash-1-3 (lib/siphash.c), truncated to u32."""
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1
    n = len(data)
    full = n - n % 8
    for i in range(0, full, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= m
    b = ((n << 56) & _M64) | int.from_bytes(data[full:], "little")
    v3 ^= b
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return (v0 ^ v1 ^ v2 ^ v3) & 0xFFFFFFFF
