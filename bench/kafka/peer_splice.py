"""A second, faster peer for bench/kafka.sh, reported for information: like peer.py, but
it splices the _meta field into the payload text instead of parsing and re-serializing
the payload (so, unlike ingest-kafka, it does not check that the payload is a JSON object).

    python3 peer_splice.py BROKERS TOPIC COUNT
"""
import json
import sys

from confluent_kafka import Consumer, TopicPartition

brokers, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-peer",
              "enable.auto.commit": False, "enable.partition.eof": False})
md = c.list_topics(topic, timeout=10)
c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
out = sys.stdout
dumps = json.dumps
n = 0
while n < count:
    for msg in c.consume(num_messages=1000, timeout=1.0):
        if msg.error():
            continue
        value = msg.value().decode()
        key = msg.key()
        meta = dumps({"source": "kafka", "group": None, "topic": msg.topic(),
                      "partition": msg.partition(), "offset": msg.offset(),
                      "key": key.decode() if key is not None else None,
                      "timestamp": msg.timestamp()[1], "headers": []},
                     separators=(",", ":"))
        out.write(value[:value.rindex("}")] + ',"_meta":' + meta + "}\n")
        n += 1
        if n >= count:
            break
c.close()
