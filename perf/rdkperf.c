/*
 * rdkperf: the light client of perf/compare. A few hundred lines of C on librdkafka, so that the client
 * costs little CPU on a 2-core machine and the broker, not the client, is what gets measured.
 *
 *   rdkperf produce -b HOST:PORT -t TOPIC -n RECORDS -s BYTES [-a ACKS] [-r RATE] [-X key=value]...
 *   rdkperf consume -b HOST:PORT -t TOPIC -p PARTITIONS -n RECORDS [-X key=value]...
 *   rdkperf e2e     -b HOST:PORT -t TOPIC -n ROUNDTRIPS -s BYTES [-a ACKS] [-X key=value]...
 *
 * produce: librdkafka's default batching (linger.ms=5, batch.size=1000000), acks=all unless -a, records
 *          spread by librdkafka's default partitioner (null key: sticky); -r caps records/s (0 = no cap).
 *          Latency = produce() call to delivery report.
 * consume: assign() every partition from offset 0 (no consumer group is joined, no offsets committed) and
 *          read RECORDS records. Time = from assign() to the last record.
 * e2e:     one record at a time: produce to partition 0, wait for a consumer assigned at the end of
 *          partition 0 to receive it (microsecond resolution; the stock EndToEndLatency reports whole ms).
 *
 * Prints one JSON object on stdout. Exit status 0 on success, 1 on failure (with "error" in the JSON).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '"' || *p == '\\' || *p == '\n') *p = ' ';
    printf("{\"ok\": false, \"error\": \"%s\"}\n", msg);
    fflush(stdout);
    exit(1);
}

/* ------------------------------------------------------------------ options */
struct opts {
    const char *mode, *bootstrap, *topic, *acks;
    long records, size, partitions;
    double rate;
    double timeout_s;
    int nx;
    const char *xk[64], *xv[64];
};

static void set_conf(rd_kafka_conf_t *c, const char *k, const char *v) {
    char err[512];
    if (rd_kafka_conf_set(c, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) die("config %s=%s: %s", k, v, err);
}

static rd_kafka_conf_t *base_conf(const struct opts *o) {
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    set_conf(c, "bootstrap.servers", o->bootstrap);
    set_conf(c, "client.id", "rdkperf");
    for (int i = 0; i < o->nx; i++) set_conf(c, o->xk[i], o->xv[i]);
    return c;
}

/* ------------------------------------------------------------------ latency samples */
struct lat {
    uint32_t *us;
    size_t n, cap;
};

static void lat_add(struct lat *l, uint64_t ns) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1 << 16;
        l->us = realloc(l->us, l->cap * sizeof *l->us);
        if (!l->us) die("out of memory");
    }
    uint64_t us = ns / 1000;
    l->us[l->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Prints "latency_ms": {...} (nearest-rank percentiles) followed by a comma. */
static void lat_print(struct lat *l) {
    if (l->n == 0) {
        printf("\"latency_ms\": null, ");
        return;
    }
    qsort(l->us, l->n, sizeof *l->us, cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < l->n; i++) sum += l->us[i];
    const double ps[] = {0.5, 0.99, 0.999};
    const char *names[] = {"p50", "p99", "p99.9"};
    printf("\"latency_ms\": {\"avg\": %.3f, ", sum / l->n / 1000.0);
    for (int i = 0; i < 3; i++) {
        size_t k = (size_t)(ps[i] * l->n);
        if (k >= l->n) k = l->n - 1;
        printf("\"%s\": %.3f, ", names[i], l->us[k] / 1000.0);
    }
    printf("\"max\": %.3f}, ", l->us[l->n - 1] / 1000.0);
}

/* ------------------------------------------------------------------ produce */
static struct lat g_lat;
static long g_delivered, g_failed;
static char g_first_error[256];

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err) {
        if (!g_failed) snprintf(g_first_error, sizeof g_first_error, "%s", rd_kafka_err2str(m->err));
        g_failed++;
        return;
    }
    g_delivered++;
    lat_add(&g_lat, now_ns() - (uint64_t)(uintptr_t)m->_private);
}

static rd_kafka_t *new_producer(const struct opts *o) {
    char err[512];
    rd_kafka_conf_t *c = base_conf(o);
    set_conf(c, "acks", o->acks);
    rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
    if (!p) die("producer: %s", err);
    return p;
}

static int do_produce(const struct opts *o) {
    rd_kafka_t *p = new_producer(o);
    rd_kafka_topic_t *t = rd_kafka_topic_new(p, o->topic, NULL);
    char *payload = malloc(o->size);
    for (long i = 0; i < o->size; i++) payload[i] = 'a' + (char)(i % 26);
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(o->timeout_s * 1e9);
    double interval_ns = o->rate > 0 ? 1e9 / o->rate : 0;
    for (long i = 0; i < o->records; i++) {
        if (interval_ns > 0) {
            uint64_t due = t0 + (uint64_t)(i * interval_ns);
            for (uint64_t n = now_ns(); n < due; n = now_ns()) {
                uint64_t wait = due - n;
                if (wait > 200000) {
                    rd_kafka_poll(p, 0);
                    struct timespec ts = {0, (long)(wait > 1000000 ? 1000000 : wait - 100000)};
                    nanosleep(&ts, NULL);
                }
            }
        }
        for (;;) {
            /* The payload is not copied: it stays valid and unchanged for the whole run. */
            uint64_t ts = now_ns();
            if (rd_kafka_produce(t, RD_KAFKA_PARTITION_UA, 0, payload, (size_t)o->size, NULL, 0,
                                 (void *)(uintptr_t)ts) == 0)
                break;
            if (rd_kafka_last_error() != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                die("produce: %s", rd_kafka_err2str(rd_kafka_last_error()));
            rd_kafka_poll(p, 1);
            if (now_ns() > deadline) die("timed out producing after %ld records", i);
        }
        if ((i & 1023) == 0) rd_kafka_poll(p, 0);
        if (g_failed) die("delivery failed: %s", g_first_error);
    }
    while (rd_kafka_outq_len(p) > 0) {
        rd_kafka_poll(p, 10);
        if (now_ns() > deadline) die("timed out waiting for deliveries (%ld of %ld)", g_delivered, o->records);
    }
    uint64_t t1 = now_ns();
    if (g_failed) die("delivery failed (%ld records): %s", g_failed, g_first_error);
    double secs = (t1 - t0) / 1e9;
    double bytes = (double)g_delivered * o->size;
    printf("{\"ok\": true, \"mode\": \"produce\", \"records\": %ld, \"bytes\": %.0f, \"seconds\": %.3f, "
           "\"records_per_s\": %.1f, \"MBps\": %.2f, ",
           g_delivered, bytes, secs, g_delivered / secs, bytes / secs / 1e6);
    lat_print(&g_lat);
    printf("\"librdkafka\": \"%s\"}\n", rd_kafka_version_str());
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(p);
    return 0;
}

/* ------------------------------------------------------------------ consume */
static rd_kafka_t *new_consumer(const struct opts *o) {
    char err[512];
    rd_kafka_conf_t *c = base_conf(o);
    /* librdkafka wants a group.id for the high-level consumer; with assign() and no commits the group is
     * never joined and no offsets are fetched or committed. */
    set_conf(c, "group.id", "rdkperf-unused");
    set_conf(c, "enable.auto.commit", "false");
    set_conf(c, "enable.auto.offset.store", "false");
    rd_kafka_t *k = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
    if (!k) die("consumer: %s", err);
    rd_kafka_poll_set_consumer(k);
    return k;
}

static int do_consume(const struct opts *o) {
    rd_kafka_t *k = new_consumer(o);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new((int)o->partitions);
    for (long p = 0; p < o->partitions; p++)
        rd_kafka_topic_partition_list_add(parts, o->topic, (int32_t)p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(o->timeout_s * 1e9), t_first = 0;
    rd_kafka_resp_err_t e = rd_kafka_assign(k, parts);
    if (e) die("assign: %s", rd_kafka_err2str(e));
    long got = 0;
    double bytes = 0;
    while (got < o->records) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k, 100);
        if (now_ns() > deadline) die("timed out after %ld of %ld records", got, o->records);
        if (!m) continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) die("consume: %s", rd_kafka_message_errstr(m));
        } else {
            if (!got) t_first = now_ns();
            got++;
            bytes += m->len;
        }
        rd_kafka_message_destroy(m);
    }
    uint64_t t1 = now_ns();
    double secs = (t1 - t0) / 1e9;
    printf("{\"ok\": true, \"mode\": \"consume\", \"records\": %ld, \"bytes\": %.0f, \"seconds\": %.3f, "
           "\"first_record_after_s\": %.3f, \"records_per_s\": %.1f, \"MBps\": %.2f, \"librdkafka\": \"%s\"}\n",
           got, bytes, secs, (t_first - t0) / 1e9, got / secs, bytes / secs / 1e6, rd_kafka_version_str());
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_consumer_close(k);
    rd_kafka_destroy(k);
    return 0;
}

/* ------------------------------------------------------------------ e2e */
static int do_e2e(const struct opts *o) {
    struct opts po = *o;
    /* one record at a time: no lingering */
    po.xk[po.nx] = "linger.ms";
    po.xv[po.nx++] = "0";
    rd_kafka_t *p = new_producer(&po);
    rd_kafka_t *k = new_consumer(o);
    rd_kafka_topic_t *t = rd_kafka_topic_new(p, o->topic, NULL);
    /* Start at the current end, as an explicit offset: with OFFSET_END the position is resolved later,
     * and a record produced before that would be skipped. */
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t qe = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int tries = 0; tries < 50; tries++) {
        qe = rd_kafka_query_watermark_offsets(k, o->topic, 0, &lo, &hi, 5000);
        if (!qe) break;
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
    }
    if (qe) die("query watermarks: %s", rd_kafka_err2str(qe));
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, o->topic, 0)->offset = hi;
    rd_kafka_resp_err_t e = rd_kafka_assign(k, parts);
    if (e) die("assign: %s", rd_kafka_err2str(e));
    char *payload = malloc(o->size);
    memset(payload, 'e', o->size);
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(o->timeout_s * 1e9);
    struct lat l = {0};
    /* Warm up: the consumer must have resolved its position before the first timed record. */
    for (int warm = 1; warm >= 0; warm--) {
        long n = warm ? 20 : o->records;
        for (long i = 0; i < n; i++) {
            snprintf(payload, o->size, "%ld-%d", i, warm);
            uint64_t ts = now_ns();
            if (rd_kafka_produce(t, 0, 0, payload, (size_t)o->size, NULL, 0, (void *)(uintptr_t)ts) != 0)
                die("produce: %s", rd_kafka_err2str(rd_kafka_last_error()));
            for (;;) {
                rd_kafka_poll(p, 0);
                rd_kafka_message_t *m = rd_kafka_consumer_poll(k, 1);
                if (now_ns() > deadline) die("timed out after %ld round trips", i);
                if (!m) continue;
                int match = !m->err && m->len == (size_t)o->size && memcmp(m->payload, payload, (size_t)o->size) == 0;
                if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) die("consume: %s", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                if (match) break;
            }
            if (!warm) lat_add(&l, now_ns() - ts);
        }
    }
    rd_kafka_flush(p, 10000);
    if (g_failed) die("delivery failed: %s", g_first_error);
    double secs = (now_ns() - t0) / 1e9;
    printf("{\"ok\": true, \"mode\": \"e2e\", \"records\": %ld, \"seconds\": %.3f, ", o->records, secs);
    lat_print(&l);
    printf("\"librdkafka\": \"%s\"}\n", rd_kafka_version_str());
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_topic_destroy(t);
    rd_kafka_consumer_close(k);
    rd_kafka_destroy(k);
    rd_kafka_destroy(p);
    return 0;
}

/* ------------------------------------------------------------------ main */
static void usage(void) {
    fprintf(stderr,
            "usage: rdkperf produce|consume|e2e -b BOOTSTRAP -t TOPIC -n RECORDS [-s BYTES] [-p PARTITIONS]\n"
            "               [-a ACKS] [-r RECORDS_PER_S] [-T TIMEOUT_S] [-X key=value]...\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    struct opts o = {.mode = argv[1], .acks = "all", .size = 1024, .partitions = 1, .timeout_s = 600};
    int c;
    optind = 2;
    while ((c = getopt(argc, argv, "b:t:n:s:p:a:r:T:X:")) != -1) {
        switch (c) {
        case 'b': o.bootstrap = optarg; break;
        case 't': o.topic = optarg; break;
        case 'n': o.records = atol(optarg); break;
        case 's': o.size = atol(optarg); break;
        case 'p': o.partitions = atol(optarg); break;
        case 'a': o.acks = optarg; break;
        case 'r': o.rate = atof(optarg); break;
        case 'T': o.timeout_s = atof(optarg); break;
        case 'X': {
            char *eq = strchr(optarg, '=');
            if (!eq || o.nx >= 60) usage();
            *eq = 0;
            o.xk[o.nx] = optarg;
            o.xv[o.nx++] = eq + 1;
            break;
        }
        default: usage();
        }
    }
    if (!o.bootstrap || !o.topic || o.records <= 0 || o.size <= 0) usage();
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(o.mode, "produce")) return do_produce(&o);
    if (!strcmp(o.mode, "consume")) return do_consume(&o);
    if (!strcmp(o.mode, "e2e")) return do_e2e(&o);
    usage();
}
