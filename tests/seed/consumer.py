#consumer.py  (seed example, Python 3)
# Same plain KafkaConsumer('test') with no group as the seed, plus
# auto_offset_reset='earliest' and consumer_timeout_ms so that it reads what
# was produced before it started and then terminates.
from kafka import KafkaConsumer
from _common import BOOTSTRAP, CONSUMER_TIMEOUT_MS

consumer = KafkaConsumer('test', bootstrap_servers=BOOTSTRAP,
                         auto_offset_reset='earliest',
                         consumer_timeout_ms=CONSUMER_TIMEOUT_MS)
for msg in consumer:
    print("%s %d %s" % (msg.topic, msg.timestamp, msg.value))
consumer.close()
