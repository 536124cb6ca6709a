/*
 * rdkperf: the light client of perf/compare. A few hundred lines of C on librdkafka, so that the client
 * costs little CPU on a 2-core machine and the broker, not the client, is what gets measured.
 *
 *   rdkperf produce -b HOST:PORT -t TOPIC -n RECORDS -s BYTES [-a ACKS] [-r RATE] [-P PARTITIONS] [-X k=v]...
 *                   [-x TRANSACTIONAL_ID [-D TRANSACTION_MS]]
 *   rdkperf consume -b HOST:PORT -t TOPIC -p PARTITIONS -n RECORDS [-o OFFSET] [-X key=value]...
 *   rdkperf e2e     -b HOST:PORT -t TOPIC -n ROUNDTRIPS -s BYTES [-a ACKS] [-X key=value]...
 *   rdkperf idle    -b HOST:PORT -t TOPIC -p PARTITIONS -c CONNECTIONS -d SECONDS [-w WARMUP_S] [-W BROKER_PID]
 *                   [-X fetch.min.bytes=N] [-X fetch.wait.max.ms=N]
 *
 * produce: librdkafka's default batching (linger.ms=5, batch.size=1000000), acks=all unless -a, records
 *          spread by librdkafka's default partitioner (null key: sticky); -r caps records/s (0 = no cap).
 *          -P N fills partitions 0..N-1 in order instead: record i goes to partition i*N/RECORDS, so each
 *          partition gets RECORDS/N records in one contiguous run. Latency = produce() call to delivery report.
 *          -x: a transactional producer (init_transactions once, then transactions of TRANSACTION_MS each,
 *          default 100, committed with commit_transaction, as kafka-producer-perf-test
 *          --transaction-duration-ms does); the time includes every commit. Reports "transactions".
 * consume: assign() every partition from the beginning (-o OFFSET: from that explicit offset, which skips
 *          the ListOffsets lookup) with no consumer group joined and no offsets committed, and read RECORDS
 *          records. Time = from assign() to the last record.
 * e2e:     one record at a time: produce to partition 0, wait for a consumer assigned at the end of
 *          partition 0 to receive it (microsecond resolution; the stock EndToEndLatency reports whole ms).
 * idle:    no librdkafka: CONNECTIONS plain TCP connections, connection i fetching partition i % PARTITIONS
 *          of TOPIC from offset 0 (an empty topic: no data ever arrives) with Fetch v11, sessionless,
 *          max_wait_ms = fetch.wait.max.ms (default 500), min_bytes = fetch.min.bytes (default 1048576);
 *          each answer is followed at once by the next fetch. After WARMUP_S (default 2) the broker's CPU
 *          (utime+stime of /proc/BROKER_PID/stat) is read, again after SECONDS: broker_cpu_pct is that
 *          delta as a percentage of one core. Also reports fetches/s and the time each fetch was held.
 *
 * Prints one JSON object on stdout. Exit status 0 on success, 1 on failure (with "error" in the JSON).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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
    long records, size, partitions, fill_partitions, connections;
    long long offset; /* -1: beginning */
    double rate;
    double timeout_s, duration_s, warmup_s;
    long broker_pid;
    const char *txn_id; /* -x: a transactional producer */
    long txn_ms;        /* -D: milliseconds per transaction */
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
    if (o->txn_id) set_conf(c, "transactional.id", o->txn_id);
    rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
    if (!p) die("producer: %s", err);
    return p;
}

static void txn_check(rd_kafka_error_t *e, const char *what) {
    if (e) die("%s: %s", what, rd_kafka_error_string(e));
}

static int do_produce(const struct opts *o) {
    rd_kafka_t *p = new_producer(o);
    rd_kafka_topic_t *t = rd_kafka_topic_new(p, o->topic, NULL);
    long transactions = 0;
    uint64_t txn_started = 0, txn_ns = (uint64_t)o->txn_ms * 1000000ull;
    if (o->txn_id) {
        txn_check(rd_kafka_init_transactions(p, 60000), "init_transactions");
        txn_check(rd_kafka_begin_transaction(p), "begin_transaction");
        txn_started = now_ns();
    }
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
            int32_t part = o->fill_partitions > 0 ? (int32_t)((long long)i * o->fill_partitions / o->records)
                                                  : RD_KAFKA_PARTITION_UA;
            if (rd_kafka_produce(t, part, 0, payload, (size_t)o->size, NULL, 0, (void *)(uintptr_t)ts) == 0)
                break;
            if (rd_kafka_last_error() != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                die("produce: %s", rd_kafka_err2str(rd_kafka_last_error()));
            rd_kafka_poll(p, 1);
            if (now_ns() > deadline) die("timed out producing after %ld records", i);
        }
        if ((i & 1023) == 0) rd_kafka_poll(p, 0);
        if (g_failed) die("delivery failed: %s", g_first_error);
        if (o->txn_id && now_ns() - txn_started >= txn_ns) {
            txn_check(rd_kafka_commit_transaction(p, 60000), "commit_transaction");
            transactions++;
            txn_check(rd_kafka_begin_transaction(p), "begin_transaction");
            txn_started = now_ns();
        }
    }
    if (o->txn_id) {
        txn_check(rd_kafka_commit_transaction(p, 60000), "commit_transaction");
        transactions++;
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
           "\"records_per_s\": %.1f, \"MBps\": %.2f, \"transactions\": %ld, ",
           g_delivered, bytes, secs, g_delivered / secs, bytes / secs / 1e6, transactions);
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
        rd_kafka_topic_partition_list_add(parts, o->topic, (int32_t)p)->offset =
            o->offset >= 0 ? o->offset : RD_KAFKA_OFFSET_BEGINNING;
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
    printf("{\"ok\": true, \"mode\": \"consume\", \"partitions\": %ld, \"records\": %ld, \"bytes\": %.0f, "
           "\"seconds\": %.3f, \"first_record_after_s\": %.3f, \"records_per_s\": %.1f, \"MBps\": %.2f, "
           "\"librdkafka\": \"%s\"}\n",
           o->partitions, got, bytes, secs, (t_first - t0) / 1e9, got / secs, bytes / secs / 1e6,
           rd_kafka_version_str());
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

/* ------------------------------------------------------------------ idle (raw protocol, no librdkafka) */
struct wbuf {
    uint8_t b[512];
    size_t n;
};
static void w8(struct wbuf *w, uint8_t v) { w->b[w->n++] = v; }
static void w16(struct wbuf *w, int16_t v) { uint16_t x = htons((uint16_t)v); memcpy(w->b + w->n, &x, 2); w->n += 2; }
static void w32(struct wbuf *w, int32_t v) { uint32_t x = htonl((uint32_t)v); memcpy(w->b + w->n, &x, 4); w->n += 4; }
static void w64(struct wbuf *w, int64_t v) { w32(w, (int32_t)((uint64_t)v >> 32)); w32(w, (int32_t)(uint64_t)v); }
static void wstr(struct wbuf *w, const char *s) {
    size_t n = strlen(s);
    w16(w, (int16_t)n);
    memcpy(w->b + w->n, s, n);
    w->n += n;
}
static uint32_t r32(const uint8_t *p) { uint32_t x; memcpy(&x, p, 4); return ntohl(x); }
static uint16_t r16(const uint8_t *p) { uint16_t x; memcpy(&x, p, 2); return ntohs(x); }

/* Fetch v11 (the newest non-flexible version; Kafka 4.x serves v4 and up), one topic, one partition,
 * no fetch session (session_id 0, epoch -1: a full fetch every time). */
static size_t fetch_request(uint8_t *out, int32_t corr, const char *topic, int32_t partition, int32_t max_wait,
                            int32_t min_bytes) {
    struct wbuf w = {.n = 0};
    if (strlen(topic) > 200) die("topic name too long");
    w32(&w, 0); /* size, patched below */
    w16(&w, 1); /* Fetch */
    w16(&w, 11);
    w32(&w, corr);
    wstr(&w, "rdkperf-idle");
    w32(&w, -1); /* replica_id: a consumer */
    w32(&w, max_wait);
    w32(&w, min_bytes);
    w32(&w, 52428800); /* max_bytes (librdkafka's fetch.max.bytes) */
    w8(&w, 0);         /* isolation_level: read_uncommitted */
    w32(&w, 0);        /* session_id */
    w32(&w, -1);       /* session_epoch: no session */
    w32(&w, 1);        /* topics */
    wstr(&w, topic);
    w32(&w, 1); /* partitions */
    w32(&w, partition);
    w32(&w, -1);      /* current_leader_epoch */
    w64(&w, 0);       /* fetch_offset */
    w64(&w, -1);      /* log_start_offset */
    w32(&w, 1048576); /* partition_max_bytes */
    w32(&w, 0);       /* forgotten_topics_data */
    wstr(&w, "");     /* rack_id */
    uint32_t size = htonl((uint32_t)(w.n - 4));
    memcpy(w.b, &size, 4);
    memcpy(out, w.b, w.n);
    return w.n;
}

struct iconn {
    int fd;
    int32_t partition, corr;
    uint64_t sent_ns;
    uint8_t *buf;
    size_t have, need, cap; /* need: 4 until the size is known, then 4 + size */
};

/* Errors of a Fetch v11 answer: the top-level code, else the partition's; -1 if it cannot be parsed.
 * *records_len gets the partition's record bytes. */
static int fetch_answer_error(const uint8_t *p, size_t n, int32_t want_corr, long *records_len) {
    *records_len = 0;
    if (n < 4 + 4 + 4 + 2 + 4 + 4) return -1;
    if ((int32_t)r32(p + 4) != want_corr) return -2;
    size_t o = 8 + 4; /* size, correlation id, throttle_time_ms */
    int16_t top = (int16_t)r16(p + o);
    o += 2 + 4; /* error_code, session_id */
    if (top) return top;
    if (r32(p + o) < 1) return -1;
    o += 4;
    if (o + 2 > n) return -1;
    o += 2 + r16(p + o); /* topic */
    if (o + 4 + 4 + 2 > n || r32(p + o) < 1) return -1;
    o += 4 + 4; /* partitions count, partition_index */
    int16_t err = (int16_t)r16(p + o);
    o += 2 + 8 + 8 + 8; /* error_code, high_watermark, last_stable_offset, log_start_offset */
    if (o + 4 > n) return -1;
    int32_t aborted = (int32_t)r32(p + o);
    o += 4 + (aborted > 0 ? (size_t)aborted * 16 : 0);
    o += 4; /* preferred_read_replica */
    if (o + 4 > n) return -1;
    int32_t rl = (int32_t)r32(p + o);
    *records_len = rl > 0 ? rl : 0;
    return err;
}

static double proc_cpu_s(long pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long long ut = 0, st = 0;
    /* after ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int do_idle(const struct opts *o) {
    long n = o->connections, parts = o->partitions > 0 ? o->partitions : 1;
    int32_t max_wait = 500, min_bytes = 1048576;
    for (int i = 0; i < o->nx; i++) {
        if (!strcmp(o->xk[i], "fetch.wait.max.ms")) max_wait = atoi(o->xv[i]);
        else if (!strcmp(o->xk[i], "fetch.min.bytes")) min_bytes = atoi(o->xv[i]);
        else die("idle: unknown -X %s (only fetch.wait.max.ms, fetch.min.bytes)", o->xk[i]);
    }
    char host[256];
    snprintf(host, sizeof host, "%s", o->bootstrap);
    char *comma = strchr(host, ',');
    if (comma) *comma = 0;
    char *colon = strrchr(host, ':');
    if (!colon) die("idle: bootstrap must be HOST:PORT");
    *colon = 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int gai = getaddrinfo(host, colon + 1, &hints, &ai);
    if (gai) die("idle: %s: %s", o->bootstrap, gai_strerror(gai));
    struct iconn *c = calloc((size_t)n, sizeof *c);
    struct pollfd *pf = calloc((size_t)n, sizeof *pf);
    uint8_t req[512];
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        c[i].fd = socket(ai->ai_family, SOCK_STREAM, 0);
        if (c[i].fd < 0 || connect(c[i].fd, ai->ai_addr, ai->ai_addrlen) != 0)
            die("idle: connect %s (connection %ld): %s", o->bootstrap, i, strerror(errno));
        int one = 1;
        setsockopt(c[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c[i].partition = (int32_t)(i % parts);
        c[i].cap = 65536;
        c[i].buf = malloc(c[i].cap);
        pf[i].fd = c[i].fd;
        pf[i].events = POLLIN;
    }
    freeaddrinfo(ai);
    for (long i = 0; i < n; i++) {
        size_t len = fetch_request(req, ++c[i].corr, o->topic, c[i].partition, max_wait, min_bytes);
        c[i].sent_ns = now_ns();
        c[i].need = 4;
        if (send(c[i].fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) die("idle: send: %s", strerror(errno));
    }
    uint64_t w0 = t0 + (uint64_t)(o->warmup_s * 1e9), w1 = w0 + (uint64_t)(o->duration_s * 1e9);
    uint64_t deadline = t0 + (uint64_t)(o->timeout_s * 1e9);
    int in_window = 0;
    double cpu0 = -1, cpu1 = -1;
    long fetches = 0, errors = 0, early_errors = 0, record_bytes = 0;
    int first_err = 0;
    struct lat l = {0};
    for (;;) {
        uint64_t now = now_ns();
        if (!in_window && now >= w0) {
            in_window = 1;
            if (o->broker_pid > 0) cpu0 = proc_cpu_s(o->broker_pid);
            w0 = now;
            w1 = now + (uint64_t)(o->duration_s * 1e9);
        }
        if (in_window && now >= w1) {
            if (o->broker_pid > 0) cpu1 = proc_cpu_s(o->broker_pid);
            w1 = now;
            break;
        }
        if (now > deadline) die("idle: timed out");
        int r = poll(pf, (nfds_t)n, 20);
        if (r < 0 && errno != EINTR) die("idle: poll: %s", strerror(errno));
        for (long i = 0; r > 0 && i < n; i++) {
            if (!(pf[i].revents & (POLLIN | POLLERR | POLLHUP))) continue;
            struct iconn *x = &c[i];
            for (;;) {
                ssize_t got = recv(x->fd, x->buf + x->have, x->need - x->have, MSG_DONTWAIT);
                if (got == 0) die("idle: connection %ld closed by the broker", i);
                if (got < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    if (errno == EINTR) continue;
                    die("idle: recv: %s", strerror(errno));
                }
                x->have += (size_t)got;
                if (x->have < x->need) continue;
                if (x->need == 4) {
                    size_t size = r32(x->buf);
                    if (size > 64u << 20) die("idle: answer of %zu bytes", size);
                    x->need = 4 + size;
                    if (x->need > x->cap) {
                        x->cap = x->need;
                        x->buf = realloc(x->buf, x->cap);
                        if (!x->buf) die("out of memory");
                    }
                    if (size > 0) continue;
                }
                /* one whole answer */
                uint64_t t = now_ns();
                long rl = 0;
                int e = fetch_answer_error(x->buf, x->have, x->corr, &rl);
                if (in_window) {
                    fetches++;
                    lat_add(&l, t - x->sent_ns);
                    record_bytes += rl;
                    if (e) {
                        if (!errors) first_err = e;
                        errors++;
                    }
                } else if (e) {
                    early_errors++;
                }
                x->have = 0;
                x->need = 4;
                if (e) { /* back off like librdkafka (fetch.error.backoff.ms) instead of spinning */
                    struct timespec ts = {0, 100000000};
                    nanosleep(&ts, NULL);
                }
                size_t len = fetch_request(req, ++x->corr, o->topic, x->partition, max_wait, min_bytes);
                x->sent_ns = now_ns();
                if (send(x->fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) die("idle: send: %s", strerror(errno));
                break;
            }
        }
    }
    double secs = (w1 - w0) / 1e9;
    if (errors) die("idle: %ld of %ld fetch answers in the window had errors (first: %d)", errors, fetches, first_err);
    if (fetches == 0) die("idle: no fetch was answered in %.1f s", secs);
    printf("{\"ok\": true, \"mode\": \"idle\", \"connections\": %ld, \"partitions\": %ld, \"seconds\": %.3f, "
           "\"fetch_wait_max_ms\": %d, \"fetch_min_bytes\": %d, \"fetches\": %ld, \"fetches_per_s\": %.1f, "
           "\"fetches_per_s_per_conn\": %.3f, \"record_bytes\": %ld, \"warmup_errors\": %ld, ",
           n, parts, secs, max_wait, min_bytes, fetches, fetches / secs, fetches / secs / n, record_bytes,
           early_errors);
    lat_print(&l);
    if (cpu0 >= 0 && cpu1 >= 0)
        printf("\"broker_pid\": %ld, \"broker_cpu_s\": %.3f, \"broker_cpu_pct\": %.3f}\n", o->broker_pid,
               cpu1 - cpu0, (cpu1 - cpu0) / secs * 100.0);
    else
        printf("\"broker_pid\": %ld, \"broker_cpu_s\": null, \"broker_cpu_pct\": null}\n", o->broker_pid);
    for (long i = 0; i < n; i++) close(c[i].fd);
    return 0;
}

/* ------------------------------------------------------------------ main */
static void usage(void) {
    fprintf(stderr,
            "usage: rdkperf produce|consume|e2e -b BOOTSTRAP -t TOPIC -n RECORDS [-s BYTES] [-p PARTITIONS]\n"
            "               [-a ACKS] [-r RECORDS_PER_S] [-P FILL_PARTITIONS] [-o OFFSET] [-T TIMEOUT_S]\n"
            "               [-x TRANSACTIONAL_ID [-D TRANSACTION_MS]]\n"
            "               [-X key=value]...\n"
            "       rdkperf idle -b BOOTSTRAP -t TOPIC -p PARTITIONS -c CONNECTIONS -d SECONDS [-w WARMUP_S]\n"
            "               [-W BROKER_PID] [-T TIMEOUT_S] [-X fetch.min.bytes=N] [-X fetch.wait.max.ms=N]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    struct opts o = {.mode = argv[1], .acks = "all", .size = 1024, .partitions = 1, .timeout_s = 600,
                     .offset = -1, .connections = 100, .duration_s = 10, .warmup_s = 2, .txn_ms = 100};
    int c;
    optind = 2;
    while ((c = getopt(argc, argv, "b:t:n:s:p:a:r:T:X:P:o:c:d:w:W:x:D:")) != -1) {
        switch (c) {
        case 'b': o.bootstrap = optarg; break;
        case 't': o.topic = optarg; break;
        case 'n': o.records = atol(optarg); break;
        case 's': o.size = atol(optarg); break;
        case 'p': o.partitions = atol(optarg); break;
        case 'a': o.acks = optarg; break;
        case 'r': o.rate = atof(optarg); break;
        case 'T': o.timeout_s = atof(optarg); break;
        case 'P': o.fill_partitions = atol(optarg); break;
        case 'o': o.offset = atoll(optarg); break;
        case 'c': o.connections = atol(optarg); break;
        case 'd': o.duration_s = atof(optarg); break;
        case 'w': o.warmup_s = atof(optarg); break;
        case 'W': o.broker_pid = atol(optarg); break;
        case 'x': o.txn_id = optarg; break;
        case 'D': o.txn_ms = atol(optarg); break;
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
    if (!o.bootstrap || !o.topic || o.size <= 0) usage();
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(o.mode, "idle")) {
        if (o.connections <= 0 || o.duration_s <= 0) usage();
        if (o.timeout_s < o.warmup_s + o.duration_s + 30) o.timeout_s = o.warmup_s + o.duration_s + 30;
        return do_idle(&o);
    }
    if (o.records <= 0) usage();
    if (!strcmp(o.mode, "produce")) return do_produce(&o);
    if (!strcmp(o.mode, "consume")) return do_consume(&o);
    if (!strcmp(o.mode, "e2e")) return do_e2e(&o);
    usage();
}
