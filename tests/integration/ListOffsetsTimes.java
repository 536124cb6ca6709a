// A Java client for test_list_offsets_time.py, run from source by the kafka_run fixture (java -cp <Kafka
// jars> ListOffsetsTimes.java ...). Two modes, both on partition 0 of a topic:
//
//   produce BOOTSTRAP TOPIC COMPRESSION TS...
//       sends one record per TS (CreateTime TS, value "v<i>") in ONE batch (long linger, then flush),
//       acks=all; prints "P <offset> <timestamp>" per record as the broker acknowledged it.
//   query BOOTSTRAP TOPIC TS...
//       KafkaConsumer.offsetsForTimes for each TS: prints "T <ts> <offset> <timestamp>", or "T <ts> none"
//       when the broker found nothing; then Admin.listOffsets(OffsetSpec.maxTimestamp()):
//       "MAX <offset> <timestamp>".
//
// Exit status: 0 when done; an exception ends it non-zero.

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class ListOffsetsTimes {
    public static void main(String[] args) throws Exception {
        String mode = args[0];
        String bootstrap = args[1];
        String topic = args[2];
        TopicPartition tp = new TopicPartition(topic, 0);
        if (mode.equals("produce")) {
            Properties p = new Properties();
            p.put("bootstrap.servers", bootstrap);
            p.put("key.serializer", StringSerializer.class.getName());
            p.put("value.serializer", StringSerializer.class.getName());
            p.put("compression.type", args[3]);
            p.put("linger.ms", "60000");
            p.put("batch.size", "1000000");
            p.put("acks", "all");
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
                List<Future<RecordMetadata>> acks = new ArrayList<>();
                for (int i = 4; i < args.length; i++) {
                    long ts = Long.parseLong(args[i]);
                    String value = "v" + (i - 4) + "-" + "x".repeat(100);
                    acks.add(producer.send(new ProducerRecord<>(topic, 0, ts, "k" + (i - 4), value)));
                }
                producer.flush();
                for (Future<RecordMetadata> f : acks) {
                    RecordMetadata m = f.get();
                    System.out.println("P " + m.offset() + " " + m.timestamp());
                }
            }
        } else if (mode.equals("query")) {
            Properties p = new Properties();
            p.put("bootstrap.servers", bootstrap);
            p.put("key.deserializer", StringDeserializer.class.getName());
            p.put("value.deserializer", StringDeserializer.class.getName());
            p.put("enable.auto.commit", "false");
            try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p)) {
                for (int i = 3; i < args.length; i++) {
                    long ts = Long.parseLong(args[i]);
                    Map<TopicPartition, Long> q = new HashMap<>();
                    q.put(tp, ts);
                    OffsetAndTimestamp r = consumer.offsetsForTimes(q, Duration.ofSeconds(30)).get(tp);
                    System.out.println(r == null ? "T " + ts + " none" : "T " + ts + " " + r.offset() + " " + r.timestamp());
                }
            }
            Properties a = new Properties();
            a.put("bootstrap.servers", bootstrap);
            try (Admin admin = Admin.create(a)) {
                ListOffsetsResult.ListOffsetsResultInfo info =
                    admin.listOffsets(Map.of(tp, OffsetSpec.maxTimestamp())).partitionResult(tp).get();
                System.out.println("MAX " + info.offset() + " " + info.timestamp());
            }
        } else {
            throw new IllegalArgumentException("mode must be produce or query, not " + mode);
        }
    }
}
