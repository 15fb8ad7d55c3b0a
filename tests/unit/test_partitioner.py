"""Records keyed as Kafka's default partitioner keys them: `BatchSender` hashes keys with its
own murmur2, which must be the Java client's to the bit (consumers and other producers place
the same key on the same partition)."""

from __future__ import annotations

import ctypes

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from shared.messaging import BatchSender, murmur2
from shared.settings import Settings


@pytest.mark.parametrize(
    ("key", "expected"),
    [  # Apache Kafka's UtilsTest.testMurmur2, as the Java client's signed ints
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_is_the_java_clients(key: bytes, expected: int) -> None:
    assert ctypes.c_int32(murmur2(key)).value == expected


@given(st.binary(max_size=200))
def test_murmur2_equals_aiokafkas_for_any_key(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(min_size=0, max_size=80), st.integers(min_value=1, max_value=64))
def test_batch_sender_places_a_key_where_the_default_partitioner_does(
    key: bytes, count: int
) -> None:
    partitions = list(range(count))
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert BatchSender(Settings())._partition(count, key) == expected
