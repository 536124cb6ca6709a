// Java client transactions for test_transactions.py: interleaved commits and aborts over two partitions,
// read back with read_committed, and a zombie instance fenced by a new one with the same id.
// Usage: TxnClient <bootstrap> <topic> <transactional id>. Prints key=value lines.

import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxnClient {
    static KafkaProducer<String, String> producer(String bootstrap, String txnId) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "60000");
        return new KafkaProducer<>(p);
    }

    static boolean fencedCause(Throwable t) {
        for (; t != null; t = t.getCause()) {
            if (t instanceof ProducerFencedException || t instanceof InvalidProducerEpochException) return true;
        }
        return false;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], txnId = args[2];
        int committedSent = 0;
        try (KafkaProducer<String, String> p = producer(bootstrap, txnId)) {
            p.initTransactions();
            for (int t = 0; t < 10; t++) {
                p.beginTransaction();
                for (int i = 0; i < 20; i++) {
                    p.send(new ProducerRecord<>(topic, i % 2, "k" + i, "t" + t + "-" + i));
                }
                if (t % 2 == 0) {
                    p.commitTransaction();
                    committedSent += 20;
                } else {
                    p.abortTransaction();
                }
            }
        }
        System.out.println("committed_sent=" + committedSent);

        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        int read = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + 30000;
            long idleSince = -1;
            while (System.currentTimeMillis() < deadline) {
                ConsumerRecords<String, String> rs = consumer.poll(Duration.ofMillis(200));
                for (ConsumerRecord<String, String> r : rs) {
                    int t = Integer.parseInt(r.value().substring(1, r.value().indexOf('-')));
                    if (t % 2 != 0) throw new AssertionError("aborted record read: " + r.value());
                    read++;
                }
                if (rs.isEmpty() && read >= committedSent) {
                    if (idleSince < 0) idleSince = System.currentTimeMillis();
                    if (System.currentTimeMillis() - idleSince > 1500) break;
                } else {
                    idleSince = -1;
                }
            }
        }
        System.out.println("committed_read=" + read);

        boolean fenced = false;
        KafkaProducer<String, String> zombie = producer(bootstrap, txnId);
        zombie.initTransactions();
        try (KafkaProducer<String, String> fresh = producer(bootstrap, txnId)) {
            fresh.initTransactions();
            try {
                zombie.beginTransaction();
                zombie.send(new ProducerRecord<>(topic, 0, "z", "zombie")).get();
                zombie.commitTransaction();
            } catch (Exception e) {
                fenced = fencedCause(e) || (e instanceof KafkaException && String.valueOf(e.getMessage()).toLowerCase().contains("fenc"));
                if (!fenced) e.printStackTrace();
            }
            fresh.beginTransaction();
            fresh.send(new ProducerRecord<>(topic, 0, "f", "t0-fresh"));
            fresh.commitTransaction();
        } finally {
            zombie.close(Duration.ZERO);
        }
        System.out.println("fenced=" + fenced);
    }
}
