// A Java consumer for test_group_order.py, run from source by the kafka_run fixture (java -cp <Kafka jars>
// CommitAsyncConsumer.java ...). Joins a group (classic protocol) on partition 0 of a topic, then calls
// commitAsync N times in a row (offsets 1..N, pipelined on the coordinator connection), then committed()
// at once, then again once every callback has run. Prints "ERRORS <n>", "COMMITTED <offset>",
// "COMMITTED_AFTER_CALLBACKS <offset>".
//
// Arguments: bootstrap topic group n
// Exit status: 0 when done, 2 when it timed out.

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

public class CommitAsyncConsumer {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        String group = args[2];
        int n = Integer.parseInt(args[3]);

        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("group.id", group);
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        TopicPartition tp = new TopicPartition(topic, 0);
        long deadline = System.currentTimeMillis() + 180_000;
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> parts) {}
                public void onPartitionsAssigned(Collection<TopicPartition> parts) {}
            });
            while (!c.assignment().contains(tp)) {
                if (System.currentTimeMillis() > deadline) {
                    System.out.println("TIMEOUT waiting for the assignment");
                    System.exit(2);
                }
                c.poll(Duration.ofMillis(100));
            }
            AtomicInteger done = new AtomicInteger();
            AtomicInteger errors = new AtomicInteger();
            for (int i = 1; i <= n; i++) {
                c.commitAsync(Map.of(tp, new OffsetAndMetadata(i)), (offsets, e) -> {
                    done.incrementAndGet();
                    if (e != null) {
                        errors.incrementAndGet();
                        System.out.println("FAILED " + offsets + " " + e);
                    }
                });
            }
            Map<TopicPartition, OffsetAndMetadata> now = c.committed(Set.of(tp), Duration.ofSeconds(60));
            System.out.println("COMMITTED " + (now.get(tp) == null ? -1 : now.get(tp).offset()));
            while (done.get() < n) {
                if (System.currentTimeMillis() > deadline) {
                    System.out.println("TIMEOUT waiting for the callbacks: " + done.get());
                    System.exit(2);
                }
                c.poll(Duration.ofMillis(50));
            }
            Map<TopicPartition, OffsetAndMetadata> after = c.committed(Set.of(tp), Duration.ofSeconds(60));
            System.out.println("ERRORS " + errors.get());
            System.out.println("COMMITTED_AFTER_CALLBACKS " + (after.get(tp) == null ? -1 : after.get(tp).offset()));
        }
    }
}
