"""The codec of each record batch a topic holds, as the broker serves it (a plain Fetch)."""

from __future__ import annotations

from aiokafka import TopicPartition
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
