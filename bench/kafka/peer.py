"""The peer for bench/kafka.sh: a Python confluent-kafka consumer writing the same NDJSON
as ingest-kafka (the payload object with a _meta field of its coordinates) to stdout.

    python3 peer.py BROKERS TOPIC COUNT [--splice]

--splice (reported for information only): splice _meta into the payload text instead of
parsing and re-serializing the payload, so, unlike ingest-kafka, it does not check that
the payload is a JSON object.
"""
import json
import sys

from confluent_kafka import Consumer, TopicPartition

brokers, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
splice = sys.argv[4:] == ["--splice"]
c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-peer",
              "enable.auto.commit": False, "enable.partition.eof": False})
md = c.list_topics(topic, timeout=10)
c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
out = sys.stdout
n = 0
while n < count:
    for msg in c.consume(num_messages=1000, timeout=1.0):
        if msg.error():
            continue
        key = msg.key()
        meta = {"source": "kafka", "group": None, "topic": msg.topic(),
                "partition": msg.partition(), "offset": msg.offset(),
                "key": key.decode() if key is not None else None,
                "timestamp": msg.timestamp()[1], "headers": []}
        if splice:
            value = msg.value().decode()
            out.write(value[:value.rindex("}")] + ',"_meta":'
                      + json.dumps(meta, separators=(",", ":")) + "}")
        else:
            event = json.loads(msg.value())
            event["_meta"] = meta
            out.write(json.dumps(event, separators=(",", ":")))
        out.write("\n")
        n += 1
        if n >= count:
            break
c.close()
