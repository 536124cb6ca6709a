// The Java client's transaction epochs for test_transactions_v2.py: five transactions (commits and
// aborts, one with consumer offsets), each followed by DescribeTransactions of the id. With transaction
// version 2 the epoch is one higher after every transaction.
// Usage: TxnEpochs <bootstrap> <topic> <transactional id>. Prints epochs=E1,...,E5.

import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxnEpochs {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], txnId = args[2];
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "60000");
        Properties a = new Properties();
        a.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        List<String> epochs = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p); Admin admin = Admin.create(a)) {
            producer.initTransactions();
            for (int t = 0; t < 5; t++) {
                producer.beginTransaction();
                for (int i = 0; i < 10; i++) {
                    producer.send(new ProducerRecord<>(topic, i % 2, "k" + i, "t" + t + "-" + i));
                }
                if (t == 2) {
                    producer.sendOffsetsToTransaction(
                        Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(t)),
                        new ConsumerGroupMetadata("txn-epochs-" + txnId));
                }
                if (t % 2 == 0) producer.commitTransaction(); else producer.abortTransaction();
                TransactionDescription d = admin.describeTransactions(List.of(txnId)).description(txnId).get();
                epochs.add(Integer.toString(d.producerEpoch()));
            }
        }
        System.out.println("epochs=" + String.join(",", epochs));
    }
}
