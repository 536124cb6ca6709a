# Equivalent of
#   bin/kafka-topics.sh --create --bootstrap-server localhost:9092 \
#       --replication-factor 1 --partitions 2 --topic adder
# with kafka-python's admin client.   usage: create_topic.py TOPIC PARTITIONS
import sys
from kafka.admin import KafkaAdminClient, NewTopic
from _common import BOOTSTRAP

topic, partitions = sys.argv[1], int(sys.argv[2])
admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=1)])
print("created %s with %d partitions" % (topic, partitions))
admin.close()
