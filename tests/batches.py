"""Record batches: the codec of each batch a topic holds, as the broker serves it (a plain
Fetch), and records sent as one batch."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

# the codec ids of a record batch's attributes (Kafka's protocol)
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


async def batch_codecs(bootstrap: str, topic: str) -> list[int]:
    """The codec of every record batch in every partition of `topic`, partition by partition."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    codecs: list[int] = []
    try:
        await client.force_metadata_update()
        for partition in sorted(client.cluster.partitions_for_topic(topic) or ()):
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            wanted = [(topic, [(partition, 0, 10_000_000)])]
            response = await client.send(leader, FetchRequest(1_000, 1, 10_000_000, 0, wanted))
            # in every version of the answer: the partition's error second, its records last
            [(_, [answer])] = response.topics
            assert answer[1] == 0, f"fetch error {answer[1]}"
            records = MemoryRecords(answer[-1])
            while (batch := records.next_batch()) is not None:
                codecs.append(batch.compression_type)
    finally:
        await client.close()
    return codecs


async def send_as_one_batch(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    values: list[bytes],
    key: bytes | None = None,
) -> None:
    """`values` sent to `partition` as one record batch, acknowledged: what a batching producer
    sends, and what the embedded broker's end offset counts as one record
    (docs/guarantees.md)."""
    batch = producer.create_batch()
    for value in values:
        batch.append(key=key, value=value, timestamp=None)
    await (await producer.send_batch(batch, topic, partition=partition))
