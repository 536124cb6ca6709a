"""Hand-encoded config requests for raw-protocol tests: DescribeConfigs v4, IncrementalAlterConfigs v1 and
AlterConfigs v2 (all flexible: request header v2, response header v1).

Answers are decoded field by field so that a test can compare exactly what Kafka 4.4 and Ringtide say.
"""

import struct

from rawfetch import Reader, compact_array, compact_str, request_v2
from test_protocol_errors import connect, recv_frame

DESCRIBE_CONFIGS = 32
ALTER_CONFIGS = 33
INCREMENTAL_ALTER_CONFIGS = 44

TOPIC = 2
BROKER = 4
BROKER_LOGGER = 8
GROUP = 32

# ConfigSource
UNKNOWN = 0
DYNAMIC_TOPIC_CONFIG = 1
DYNAMIC_BROKER_CONFIG = 2
DYNAMIC_DEFAULT_BROKER_CONFIG = 3
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5
DYNAMIC_BROKER_LOGGER_CONFIG = 6
CLIENT_METRICS_CONFIG = 7
GROUP_CONFIG = 8

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3

_TAGS = b"\x00"


class Config:
    def __init__(self, name, value, read_only, source, sensitive, synonyms, config_type, documentation):
        self.name, self.value, self.read_only, self.source = name, value, read_only, source
        self.sensitive, self.synonyms, self.config_type, self.documentation = sensitive, synonyms, config_type, documentation

    def __repr__(self):
        return f"Config({self.name}={self.value!r} src={self.source} ro={self.read_only} type={self.config_type} syn={self.synonyms})"


class Result:
    def __init__(self, error_code, error_message, resource_type, resource_name, configs):
        self.error_code, self.error_message = error_code, error_message
        self.resource_type, self.resource_name, self.configs = resource_type, resource_name, configs

    def by_name(self):
        return {c.name: c for c in self.configs}

    def __repr__(self):
        return f"Result({self.resource_type}:{self.resource_name} err={self.error_code} {self.error_message!r} {len(self.configs)} configs)"


def _roundtrip(broker, frame, correlation_id):
    s = connect(broker)
    try:
        s.sendall(frame)
        body = recv_frame(s)
    finally:
        s.close()
    r = Reader(body)
    assert r.take(">i") == correlation_id
    r.skip_tags()  # response header v1
    return r


def describe_configs(broker, resources, synonyms=True, documentation=False, correlation_id=11):
    """resources: [(type, name, [keys] or None)] -> [Result]"""
    res = [
        struct.pack(">b", t) + compact_str(n)
        + (b"\x00" if keys is None else compact_array(compact_str(k) for k in keys)) + _TAGS
        for t, n, keys in resources
    ]
    body = compact_array(res) + struct.pack(">??", synonyms, documentation) + _TAGS
    r = _roundtrip(broker, request_v2(DESCRIBE_CONFIGS, 4, correlation_id, body), correlation_id)
    r.take(">i")  # throttle
    out = []
    for _ in range(r.compact_len()):
        err = r.take(">h")
        msg = r.compact_str()
        rtype = r.take(">b")
        rname = r.compact_str()
        configs = []
        for _ in range(r.compact_len()):
            name = r.compact_str()
            value = r.compact_str()
            read_only = r.take(">?")
            source = r.take(">b")
            sensitive = r.take(">?")
            syns = []
            for _ in range(r.compact_len()):
                syns.append((r.compact_str(), r.compact_str(), r.take(">b")))
                r.skip_tags()
            ctype = r.take(">b")
            doc = r.compact_str()
            r.skip_tags()
            configs.append(Config(name, value, read_only, source, sensitive, syns, ctype, doc))
        r.skip_tags()
        out.append(Result(err, msg, rtype, rname, configs))
    return out


def _alter_answer(r):
    r.take(">i")  # throttle
    out = []
    for _ in range(r.compact_len()):
        err = r.take(">h")
        msg = r.compact_str()
        rtype = r.take(">b")
        rname = r.compact_str()
        r.skip_tags()
        out.append((rtype, rname, err, msg))
    return out


def incremental_alter(broker, resources, validate_only=False, correlation_id=12):
    """resources: [(type, name, [(key, op, value)])] -> [(type, name, error_code, message)]"""
    res = [
        struct.pack(">b", t) + compact_str(n)
        + compact_array(compact_str(k) + struct.pack(">b", op) + compact_str(v) + _TAGS for k, op, v in ops) + _TAGS
        for t, n, ops in resources
    ]
    body = compact_array(res) + struct.pack(">?", validate_only) + _TAGS
    r = _roundtrip(broker, request_v2(INCREMENTAL_ALTER_CONFIGS, 1, correlation_id, body), correlation_id)
    return _alter_answer(r)


def alter_configs(broker, resources, validate_only=False, correlation_id=13):
    """resources: [(type, name, {key: value})] -> [(type, name, error_code, message)]"""
    res = [
        struct.pack(">b", t) + compact_str(n)
        + compact_array(compact_str(k) + compact_str(v) + _TAGS for k, v in cfg.items()) + _TAGS
        for t, n, cfg in resources
    ]
    body = compact_array(res) + struct.pack(">?", validate_only) + _TAGS
    r = _roundtrip(broker, request_v2(ALTER_CONFIGS, 2, correlation_id, body), correlation_id)
    return _alter_answer(r)
