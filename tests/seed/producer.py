#producer.py  (seed example, Python 3)
from kafka import KafkaProducer
from _common import BOOTSTRAP

producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, compression_type='gzip')
for i in range(5):
    producer.send('test', b'some_message_bytes [%d]' % (i))
producer.flush()
