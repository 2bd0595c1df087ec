"""The kernel hash functions the hashing schedulers use (lbcore/sim/schedulers/_hash.py)."""

from __future__ import annotations

import ipaddress

import pytest

from lbcore.sim.schedulers._hash import GOLDEN_RATIO_32, fold, hash_32, hsiphash, hsiphash_u32

# lib/test_siphash.c (Linux 6.1.20), BITS_PER_LONG == 64: hsiphash is SipHash-1-3 with this key,
# and test_vectors_hsiphash[i] is the hash of the bytes 0, 1, ..., i-1.
TEST_KEY = (0x0706050403020100, 0x0F0E0D0C0B0A0908)
TEST_VECTORS_HSIPHASH = (
    0x050FC4DC, 0x7D57CA93, 0x4DC7D44D, 0xE7DDF7FB, 0x88D38328, 0x49533B67, 0xC59F22A7, 0x9BB11140,
    0x8D299A8E, 0x6C063DE4, 0x92FF097F, 0xF94DC352, 0x57B4D9A2, 0x1229FFA7, 0xC0F95D34, 0x2A519956,
    0x7D908B66, 0x63DBD80C, 0xB473E63E, 0x8D297D1C, 0xA6CCE040, 0x2B45F844, 0xA320872E, 0xDAE6C123,
    0x67349C8C, 0x705B0979, 0xCA9913A5, 0x4ADE3B35, 0xEF6CD00D, 0x4AB1E1F4, 0x43C5E663, 0x8C21D1BC,
    0x16A7B60D, 0x7A8FF9BF, 0x1F2A753E, 0xBF186B91, 0xADA26206, 0xA3C33057, 0xAE3A36A1, 0x7B108392,
    0x99E41531, 0x3F1AD944, 0xC8138825, 0xC28949A6, 0xFAF8876B, 0x9F042196, 0x68B1D623, 0x8B5114FD,
    0xDF074C46, 0x12CC86B3, 0x0A52098F, 0x9D292F9A, 0xA2F41F12, 0x43A71ED0, 0x73F0BCE6, 0x70A7E980,
    0x243C6D75, 0xFDB71513, 0xA67D8A08, 0xB7E8F148, 0xF7A644EE, 0x0F1837F2, 0x4B6694E0, 0xB7BBB3A8,
)


@pytest.mark.parametrize("length", range(64))
def test_hsiphash_matches_the_kernel_self_test_vector(length: int) -> None:
    assert hsiphash(bytes(range(length)), *TEST_KEY) == TEST_VECTORS_HSIPHASH[length]


def test_hsiphash_vector_4_quoted_in_the_notes() -> None:
    assert hsiphash(bytes([0, 1, 2, 3]), *TEST_KEY) == 0x88D38328


def test_hsiphash_of_one_u32_hashes_its_little_endian_bytes() -> None:
    # The kernel's own check: hsiphash_1u32(0x03020100) == test_vectors_hsiphash[4]. mh hashes an
    # unsigned int this way (hsiphash(&v, sizeof(v), key) on a little-endian machine).
    assert hsiphash_u32(0x03020100, *TEST_KEY) == TEST_VECTORS_HSIPHASH[4]


def test_hsiphash_of_one_u32_takes_the_value_modulo_2_to_the_32() -> None:
    assert hsiphash_u32(0x1_0302_0100, *TEST_KEY) == TEST_VECTORS_HSIPHASH[4]


def test_hsiphash_result_is_32_bits() -> None:
    values = [hsiphash(bytes([i]) * 9, 2654435761, 2654435761) for i in range(256)]
    assert all(0 <= v < 2**32 for v in values)
    assert max(values) >= 2**31  # the high half is used


def test_golden_ratio_32() -> None:
    assert GOLDEN_RATIO_32 == 0x61C88647


@pytest.mark.parametrize(("value", "bits", "want"), [
    (0x0A000001, 8, 39),  # ipvs-notes.md Appendix A: the sh bucket of 10.0.0.1
    (0, 8, 0),
    (1, 32, 0x61C88647),
    (1, 8, 0x61),
    (0xFFFFFFFF, 32, 0x9E3779B9),  # -GOLDEN_RATIO_32 mod 2**32
    (0x0A000001, 10, (((0x0A000001 * 0x61C88647) & 0xFFFFFFFF) >> 22)),
])
def test_hash_32_is_the_top_bits_of_the_u32_product(value: int, bits: int, want: int) -> None:
    assert hash_32(value, bits) == want


def test_hash_32_wraps_the_product_to_32_bits_before_shifting() -> None:
    assert hash_32(0xC0A80164, 8) == hash_32(0xC0A80164 + 2**32, 8)
    assert 0 <= hash_32(0xC0A80164, 8) < 256


@pytest.mark.parametrize(("address", "bucket"), [("10.0.0.1", 39), ("10.0.0.2", 137), ("192.168.1.100", 89)])
def test_sh_bucket_of_the_worked_examples(address: str, bucket: int) -> None:
    assert hash_32(fold(ipaddress.ip_address(address)), 8) == bucket


def test_fold_of_ipv4_is_the_address_as_a_host_order_u32() -> None:
    assert fold(ipaddress.ip_address("10.0.0.1")) == 0x0A000001
    assert fold(ipaddress.ip_address("192.0.2.1")) == 0xC0000201


def test_fold_of_ipv6_xors_its_four_words() -> None:
    assert fold(ipaddress.ip_address("2001:db8::1")) == 0x20010DB9
    assert hash_32(fold(ipaddress.ip_address("2001:db8::1")), 8) == 63
    address = ipaddress.ip_address("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff")
    assert fold(address) == 0x20010DB8 ^ 0xAAAABBBB ^ 0xCCCCDDDD ^ 0xEEEEFFFF


def test_fold_of_ipv6_is_word_order_independent() -> None:
    a = ipaddress.ip_address("2001:db8:1:2:3:4:5:6")
    b = ipaddress.ip_address("5:6:3:4:1:2:2001:db8")
    assert fold(a) == fold(b)
