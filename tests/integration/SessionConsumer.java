// A Java consumer for test_fetch_sessions.py, run from source by the kafka_run fixture (java -cp <Kafka
// jars> SessionConsumer.java ...). Reads partitions 0..N-1 of a topic from the beginning with manual
// assignment (no group, no commits, so its positions survive a broker restart), prints one line
// "R <partition> <offset> <value>" per record, stops once it has read the expected number of records,
// polls one more second (nothing more may arrive) and closes (which closes its fetch session).
//
// Arguments: bootstrap topic partitions expected pauseMs maxPartitionFetchBytes [maxPollRecords]
// Exit status: 0 when done, 2 when it timed out (3 minutes).

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

public class SessionConsumer {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int partitions = Integer.parseInt(args[2]);
        long expected = Long.parseLong(args[3]);
        long pauseMs = Long.parseLong(args[4]);
        String maxPartitionFetchBytes = args[5];
        String maxPollRecords = args.length > 6 ? args[6] : "500";

        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        p.put("enable.auto.commit", "false");
        p.put("fetch.max.wait.ms", "100");
        p.put("max.partition.fetch.bytes", maxPartitionFetchBytes);
        p.put("max.poll.records", maxPollRecords);
        p.put("reconnect.backoff.max.ms", "1000");
        p.put("client.id", "session-consumer");

        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < partitions; i++) {
                tps.add(new TopicPartition(topic, i));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long read = 0;
            long deadline = System.currentTimeMillis() + 180_000;
            while (read < expected) {
                if (System.currentTimeMillis() > deadline) {
                    System.out.flush();
                    System.err.println("timed out after " + read + " of " + expected + " records");
                    System.exit(2);
                }
                read += print(consumer, 500);
                if (pauseMs > 0) {
                    Thread.sleep(pauseMs);
                }
            }
            long quietEnd = System.currentTimeMillis() + 1000;
            while (System.currentTimeMillis() < quietEnd) {
                print(consumer, 100);
            }
            System.out.flush();
        }
    }

    private static int print(KafkaConsumer<String, String> consumer, long timeoutMs) {
        int n = 0;
        for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(timeoutMs))) {
            System.out.println("R " + r.partition() + " " + r.offset() + " " + r.value());
            n++;
        }
        return n;
    }
}
