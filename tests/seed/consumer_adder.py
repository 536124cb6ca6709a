#consumer_adder.py  (seed example, Python 3)   usage: consumer_adder.py N  (reads topic adder-N)
from kafka import KafkaConsumer
import json
import sys
from _common import BOOTSTRAP, CONSUMER_TIMEOUT_MS

topic = 'adder'
consumer = KafkaConsumer('%s-%s' % (topic, sys.argv[1]), bootstrap_servers=BOOTSTRAP,
                         auto_offset_reset='earliest',
                         consumer_timeout_ms=CONSUMER_TIMEOUT_MS)
print(consumer.partitions_for_topic(topic))
for msg in consumer:
    vals = json.loads(msg.value)
    print("%s %d %s sum: %d" % (msg.topic, msg.timestamp, msg.value, vals['op1'] + vals['op2']))
consumer.close()
