#producer_adder.py  (seed example, Python 3)
from kafka import KafkaProducer
import json
from _common import BOOTSTRAP

producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, compression_type='gzip')
topic = 'adder'
parts = producer.partitions_for(topic)
print(parts)
amount_partitions = len(parts)
for i in range(10000):
    vals = {'op1': i, 'op2': i}
    #print('adder-%d'%(i%2))
    producer.send('%s-%d' % (topic, i % amount_partitions), value=b'%s' % (json.dumps(vals).encode()))
producer.flush()
