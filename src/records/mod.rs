//! Kafka record batches, magic 2 (the only format Ringtide stores), parsed only as far as the batch header.
//!
//! Sans-io and pure: bytes in, headers out. The records inside a batch stay raw; the broker never decodes
//! them on the produce or fetch path.
//!
//! Layout of a v2 batch header (all big-endian), 61 bytes:
//!
//! ```text
//! 0  base_offset            i64
//! 8  batch_length           i32   bytes after this field (total size = batch_length + 12)
//! 12 partition_leader_epoch i32
//! 16 magic                  i8    = 2
//! 17 crc                    u32   CRC-32C over bytes [21, end of batch)
//! 21 attributes             i16   bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control
//! 23 last_offset_delta      i32
//! 27 base_timestamp         i64
//! 35 max_timestamp          i64
//! 43 producer_id            i64
//! 51 producer_epoch         i16
//! 53 base_sequence          i32
//! 57 records_count          i32
//! 61 records...
//! ```
//!
//! Fault model: a produce request may carry any bytes at all (buggy or hostile clients), and a segment file
//! may end in a torn write or zero padding after a crash. Nothing here panics on input; every problem is a
//! typed [`RecordError`].

pub mod codec;
pub mod reader;

/// Size of the v2 batch header in bytes.
pub const HEADER_BYTES: usize = 61;
/// Bytes before (and including) the `batch_length` field; total batch size = batch_length + this.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Smallest legal `batch_length`: the header after the length field, with zero records.
pub const BATCH_LENGTH_MIN: i32 = (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
/// Position of the CRC field.
/// The size of the batch at the start of `b` (log overhead included), from its length field; `None` if
/// `b` is too short to say or the length is not positive.
pub fn batch_size_at(b: &[u8]) -> Option<usize> {
    let len = i32::from_be_bytes(b.get(8..12)?.try_into().ok()?);
    (len > 0).then(|| LOG_OVERHEAD_BYTES + len as usize)
}

pub const CRC_OFFSET: usize = 17;
/// First byte covered by the CRC (the attributes field).
pub const ATTRIBUTES_OFFSET: usize = 21;
/// Position of the `max_timestamp` field.
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
/// Position of the `partition_leader_epoch` field.
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
/// The only record-batch format version Ringtide accepts.
pub const MAGIC_V2: i8 = 2;
/// Kafka's "no sequence" marker.
pub const NO_SEQUENCE: i32 = -1;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE_BIT: i16 = 0x08;
const ATTR_TRANSACTIONAL_BIT: i16 = 0x10;
const ATTR_CONTROL_BIT: i16 = 0x20;

const _: () = assert!(BATCH_LENGTH_MIN == 49);
const _: () = assert!(ATTRIBUTES_OFFSET == CRC_OFFSET + 4);

/// Why a record blob was refused. Each maps to the Kafka error code the produce response carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("corrupt record batch at byte {position}: {reason}")]
    Corrupt {
        position: usize,
        reason: &'static str,
    },
    #[error("record batch at byte {position} has size {size} > max.message.bytes {max}")]
    MessageTooLarge {
        position: usize,
        size: usize,
        max: usize,
    },
    #[error("invalid record batch at byte {position}: {reason}")]
    InvalidRecord {
        position: usize,
        reason: &'static str,
    },
    #[error("record batch at byte {position} is shorter than a batch header")]
    ShortBatch { position: usize },
    #[error("record batch at byte {position} has magic {magic}; only magic 2 is supported")]
    UnsupportedMagic { position: usize, magic: i8 },
}

impl RecordError {
    /// The Kafka protocol error code for this error.
    pub fn kafka_error_code(&self) -> i16 {
        use crate::protocol::errors;
        match self {
            RecordError::Corrupt { .. } => errors::CORRUPT_MESSAGE,
            RecordError::MessageTooLarge { .. } => errors::MESSAGE_TOO_LARGE,
            RecordError::InvalidRecord { .. } => errors::INVALID_RECORD,
            RecordError::UnsupportedMagic { .. } => errors::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            RecordError::ShortBatch { .. } => errors::UNKNOWN_SERVER_ERROR,
        }
    }
}

/// Compression codec from the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    Unknown(u8),
}

/// The decoded 61-byte header of one v2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Decodes a header from the first [`HEADER_BYTES`] of `b`. Returns `None` if `b` is shorter.
    /// Does not validate anything.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < HEADER_BYTES {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(b, 0),
            batch_length: be_i32(b, 8),
            partition_leader_epoch: be_i32(b, 12),
            magic: b[16] as i8,
            crc: be_i32(b, 17) as u32,
            attributes: be_i16(b, 21),
            last_offset_delta: be_i32(b, 23),
            base_timestamp: be_i64(b, 27),
            max_timestamp: be_i64(b, 35),
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
            records_count: be_i32(b, 57),
        })
    }

    /// Total size of the batch on the wire and on disk.
    pub fn total_size(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD_BYTES
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL_BIT != 0
    }

    /// True if the timestamp type is LogAppendTime (attribute bit 3).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE_BIT != 0
    }

    pub fn compression(&self) -> Compression {
        match (self.attributes & ATTR_COMPRESSION_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }

    /// True if the batch carries a producer id (idempotent or transactional producer).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence number of the last record, wrapping past `i32::MAX` exactly as Kafka's
    /// `DefaultRecordBatch.lastSequence` does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// CRC-32C of a whole batch as stored in its CRC field (bytes from `attributes` to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// True if the CRC field of `batch` (exactly one whole batch) matches its contents.
pub fn verify_crc(batch: &[u8]) -> bool {
    batch.len() >= HEADER_BYTES && be_i32(batch, CRC_OFFSET) as u32 == compute_crc(batch)
}

/// Checks the header at `buf[pos..]` for structural sanity (length, magic) without the CRC.
fn check_structure(buf: &[u8], pos: usize) -> Result<BatchHeader, RecordError> {
    let rest = &buf[pos..];
    let Some(h) = BatchHeader::parse(rest) else {
        return Err(RecordError::Corrupt {
            position: pos,
            reason: "fewer bytes than a batch header",
        });
    };
    if h.batch_length < BATCH_LENGTH_MIN {
        return Err(RecordError::Corrupt {
            position: pos,
            reason: "batch length below the header size",
        });
    }
    if h.total_size() > rest.len() {
        return Err(RecordError::Corrupt {
            position: pos,
            reason: "batch length runs past the end of the buffer",
        });
    }
    if h.magic != MAGIC_V2 {
        return Err(RecordError::UnsupportedMagic {
            position: pos,
            magic: h.magic,
        });
    }
    Ok(h)
}

/// Validates a produce request's records blob: 1..n concatenated v2 batches, each complete, with a good
/// CRC, a consistent record count, and no bigger than `max_message_bytes`.
pub fn validate_batches(
    buf: &[u8],
    max_message_bytes: usize,
) -> Result<Vec<BatchHeader>, RecordError> {
    if buf.is_empty() {
        return Err(RecordError::InvalidRecord {
            position: 0,
            reason: "empty records",
        });
    }
    let mut headers = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        // Magic is at byte 16; a short remainder with another magic is still "unsupported", as Kafka says.
        let h = check_structure(buf, pos)?;
        let size = h.total_size();
        let batch = &buf[pos..pos + size];
        if !verify_crc(batch) {
            return Err(RecordError::Corrupt {
                position: pos,
                reason: "CRC mismatch",
            });
        }
        if h.last_offset_delta < 0 || h.records_count != h.last_offset_delta.wrapping_add(1) {
            return Err(RecordError::InvalidRecord {
                position: pos,
                reason: "Inconsistent batch offset range and record count",
            });
        }
        if size > max_message_bytes {
            return Err(RecordError::MessageTooLarge {
                position: pos,
                size,
                max: max_message_bytes,
            });
        }
        headers.push(h);
        pos += size;
    }
    Ok(headers)
}

/// Smallest size field Kafka's batch iterator accepts (`LegacyRecord.RECORD_OVERHEAD_V0`).
pub const RECORD_SIZE_MIN: i32 = 14;
/// Bytes up to and including the magic byte (`HEADER_SIZE_UP_TO_MAGIC`).
const HEADER_BYTES_UP_TO_MAGIC: usize = 17;

/// Why a Produce (v3+) partition's records were refused before any append, as Kafka 4.4's
/// `ProduceRequest.validateRecords` and its batch iterator refuse them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRecordsError {
    pub code: i16,
    pub message: Option<String>,
}

/// Kafka 4.4's checks of one partition's records in a Produce request (v3+), made before the append.
///
/// Kafka walks the records with its batch iterator, which stops (without an error) at a remainder shorter
/// than a length field or than the batch its length field announces, and refuses a length field below 14
/// with CORRUPT_MESSAGE. The request must then hold exactly one batch, of magic 2; otherwise the answer is
/// INVALID_RECORD. Returns the length of that one batch: bytes after it (a torn remainder) are dropped, as
/// Kafka drops them.
pub fn check_produce_records(buf: &[u8]) -> Result<usize, ProduceRecordsError> {
    let invalid = ProduceRecordsError {
        code: crate::protocol::errors::INVALID_RECORD,
        message: None,
    };
    // (position, size, magic) of each whole batch, as Kafka's iterator yields them; at most two needed
    // (no allocation: this runs for every partition of every Produce).
    let mut batches = [(0usize, 0usize, 0i8); 2];
    let mut found = 0usize;
    let mut pos = 0usize;
    while found < 2 {
        let rest = &buf[pos..];
        if rest.len() < LOG_OVERHEAD_BYTES {
            break;
        }
        let size = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if size < RECORD_SIZE_MIN {
            // Kafka names the size only when the first batch is refused this way.
            return Err(ProduceRecordsError {
                code: crate::protocol::errors::CORRUPT_MESSAGE,
                message: (pos == 0).then(|| {
                    format!(
                        "Record size {size} is less than the minimum record overhead ({RECORD_SIZE_MIN})"
                    )
                }),
            });
        }
        let total = LOG_OVERHEAD_BYTES + size as usize;
        if rest.len() < HEADER_BYTES_UP_TO_MAGIC || rest.len() < total {
            break;
        }
        batches[found] = (pos, total, rest[16] as i8);
        found += 1;
        pos += total;
    }
    match &batches[..found] {
        [(0, total, MAGIC_V2)] => Ok(*total),
        _ => Err(invalid),
    }
}

/// Validates the records of one Produce partition as Kafka 4.4's append does, in its order: a base offset
/// other than 0 (INVALID_RECORD), a batch bigger than `max.message.bytes` (MESSAGE_TOO_LARGE), a batch too
/// short for its header (UNKNOWN_SERVER_ERROR, as Kafka answers), a bad CRC (CORRUPT_MESSAGE), then an
/// inconsistent record count (INVALID_RECORD). `buf` holds whole batches (see [`check_produce_records`]).
pub fn validate_produce_batches(
    buf: &[u8],
    max_message_bytes: usize,
) -> Result<Vec<BatchHeader>, RecordError> {
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let base_offset = rest
            .get(..8)
            .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")));
        let size = batch_size_at(rest);
        if let (Some(base_offset), Some(size)) = (base_offset, size) {
            if size <= rest.len() && rest.get(16) == Some(&(MAGIC_V2 as u8)) {
                if base_offset != 0 {
                    return Err(RecordError::InvalidRecord {
                        position: pos,
                        reason: "the base offset of a produced batch must be 0",
                    });
                }
                if size > max_message_bytes {
                    return Err(RecordError::MessageTooLarge {
                        position: pos,
                        size,
                        max: max_message_bytes,
                    });
                }
                if size < HEADER_BYTES {
                    return Err(RecordError::ShortBatch { position: pos });
                }
            }
        }
        // Everything else as for any batch; the size check there is already done.
        let h = check_structure(buf, pos)?;
        pos += h.total_size();
    }
    validate_batches(buf, max_message_bytes)
}

/// Iterates over the batches of a segment's bytes. Yields `Ok((position, header))` for every structurally
/// sound, complete batch. Ends cleanly (`None`) at the end of the buffer, at a torn tail (a batch that runs
/// past the end) and at zero padding (a batch length of zero). Yields one `Err` and then ends if a header
/// is garbage. The CRC is not checked here; call [`verify_crc`] where wanted.
pub fn iter_batches(buf: &[u8]) -> BatchIter<'_> {
    BatchIter {
        buf,
        pos: 0,
        done: false,
    }
}

/// Iterator returned by [`iter_batches`]. [`BatchIter::position`] is where the valid prefix ends.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl BatchIter<'_> {
    /// Byte position just past the last batch yielded so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(usize, BatchHeader), RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = &self.buf[self.pos..];
        // Torn header, or zero padding (a zero length can never be a batch).
        if rest.len() < HEADER_BYTES || be_i32(rest, 8) == 0 {
            self.done = true;
            return None;
        }
        let len = be_i32(rest, 8);
        if len >= BATCH_LENGTH_MIN && (len as usize + LOG_OVERHEAD_BYTES) > rest.len() {
            // Torn body.
            self.done = true;
            return None;
        }
        match check_structure(self.buf, self.pos) {
            Ok(h) => {
                let at = self.pos;
                self.pos += h.total_size();
                Some(Ok((at, h)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Sets the base offset of the batch at the start of `batch`. The base offset is outside the CRC.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Sets the partition leader epoch of the batch at the start of `batch`. Outside the CRC.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Marks one whole batch as LogAppendTime with `max_timestamp = now_ms`, as Kafka's
/// `DefaultRecordBatch.setMaxTimestamp(LOG_APPEND_TIME, now)` does: the attribute bit and max timestamp
/// change (the base timestamp and record deltas do not) and the CRC is recomputed.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, ATTRIBUTES_OFFSET) | ATTR_TIMESTAMP_TYPE_BIT;
    let current_max = be_i64(batch, MAX_TIMESTAMP_OFFSET);
    if be_i16(batch, ATTRIBUTES_OFFSET) == attributes && current_max == now_ms {
        return;
    }
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Appends `v` as a zig-zag varint (the record-level integer encoding of magic 2).
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// One record's key and value for [`build_batch`] (`None` = null).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds one uncompressed v2 batch of `(key, value)` records (no headers, no producer id) stamped with
/// `timestamp_ms`, for records the broker writes itself (e.g. `__consumer_offsets`). A `None` value is a
/// tombstone. The base offset is 0; the log assigns the real one.
pub fn build_batch(records: &[KeyValue<'_>], timestamp_ms: i64) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        rec.clear();
        rec.push(0u8); // record attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        for field in [key, value] {
            match field {
                Some(b) => {
                    put_varint(&mut rec, b.len() as i64);
                    rec.extend_from_slice(b);
                }
                None => put_varint(&mut rec, -1),
            }
        }
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let last_delta = (records.len() - 1) as i32;
    let mut b = Vec::with_capacity(HEADER_BYTES + body.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression, CreateTime
    b.extend_from_slice(&last_delta.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&NO_SEQUENCE.to_be_bytes());
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    b.extend_from_slice(&body);
    let crc = compute_crc(&b);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Kafka's `ControlRecordType.ABORT` (the key's type field of a control record).
pub const CONTROL_TYPE_ABORT: i16 = 0;
/// Kafka's `ControlRecordType.COMMIT`.
pub const CONTROL_TYPE_COMMIT: i16 = 1;
/// Size of an end-transaction marker's key: version i16, type i16.
const CONTROL_KEY_BYTES: usize = 4;
/// Size of an end-transaction marker's value: version i16, coordinator epoch i32.
const END_TXN_VALUE_BYTES: usize = 6;

/// What a COMMIT or ABORT control record says (Kafka's `EndTransactionMarker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Builds the control batch Kafka's `MemoryRecords.withEndTransactionMarker` builds: attributes
/// transactional + control, no sequence (-1), one record whose key is (version 0, type) and whose value
/// is (version 0, coordinator epoch). The base offset is 0; the log assigns the real one.
pub fn build_end_txn_marker(
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    timestamp_ms: i64,
) -> Vec<u8> {
    let kind = if marker.commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    let mut key = Vec::with_capacity(CONTROL_KEY_BYTES);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(END_TXN_VALUE_BYTES);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let mut b = build_batch(&[(Some(&key), Some(&value))], timestamp_ms);
    b[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2]
        .copy_from_slice(&(ATTR_TRANSACTIONAL_BIT | ATTR_CONTROL_BIT).to_be_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    let crc = compute_crc(&b);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The end-transaction marker of a control batch (`batch`: the whole batch, header `h`), as Kafka's
/// `EndTransactionMarker.deserialize` reads it: the first record's key type (0 ABORT, 1 COMMIT) and its
/// value's coordinator epoch. `None` for a batch that is not a control batch, holds no record (the
/// cleaner emptied it), or is another control type or damaged (never a panic on disk bytes).
pub fn parse_end_txn_marker(batch: &[u8], h: &BatchHeader) -> Option<EndTxnMarker> {
    if !h.is_control() {
        return None;
    }
    let body = codec::records_body(batch, h, crate::limits::DECOMPRESSED_BATCH_BYTES_MAX).ok()?;
    let records = codec::parse_records(&body, h).ok()?;
    let r = records.first()?;
    let key = r.key?;
    let value = r.value?;
    let kind = i16::from_be_bytes(key.get(2..CONTROL_KEY_BYTES)?.try_into().ok()?);
    let epoch = i32::from_be_bytes(value.get(2..END_TXN_VALUE_BYTES)?.try_into().ok()?);
    let commit = match kind {
        CONTROL_TYPE_COMMIT => true,
        CONTROL_TYPE_ABORT => false,
        _ => return None,
    };
    Some(EndTxnMarker {
        commit,
        coordinator_epoch: epoch,
    })
}

/// Turns a batch from [`build_batch`] into a transactional batch of `producer_id` at `epoch` (no
/// sequence, as Kafka's coordinators write their records) and recomputes the CRC.
pub fn make_transactional(batch: &mut [u8], producer_id: i64, epoch: i16) {
    if batch.len() < HEADER_BYTES {
        return;
    }
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_OFFSET], batch[ATTRIBUTES_OFFSET + 1]])
        | ATTR_TRANSACTIONAL_BIT;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Test-only builder of valid v2 batches with uncompressed varint records. Shared with the storage and
/// partition tests.
#[cfg(test)]
pub mod test_util {
    use super::*;

    /// Parameters of a test batch.
    #[derive(Clone, Debug)]
    pub struct BatchSpec {
        pub base_offset: i64,
        pub records: usize,
        pub value_bytes: usize,
        pub base_timestamp: i64,
        pub producer_id: i64,
        pub producer_epoch: i16,
        pub base_sequence: i32,
        /// Sets the transactional attribute bit.
        pub transactional: bool,
        /// The key of every record (`None`: null keys).
        pub key: Option<Vec<u8>>,
    }

    impl Default for BatchSpec {
        fn default() -> Self {
            BatchSpec {
                base_offset: 0,
                records: 1,
                value_bytes: 10,
                base_timestamp: 1_700_000_000_000,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                transactional: false,
                key: None,
            }
        }
    }

    /// Builds one valid v2 batch.
    pub fn build(spec: &BatchSpec) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..spec.records {
            let mut body = Vec::new();
            body.push(0u8); // record attributes
            put_varint(&mut body, i as i64); // timestamp delta
            put_varint(&mut body, i as i64); // offset delta
            match &spec.key {
                Some(k) => {
                    put_varint(&mut body, k.len() as i64);
                    body.extend_from_slice(k);
                }
                None => put_varint(&mut body, -1), // null key
            }
            put_varint(&mut body, spec.value_bytes as i64);
            body.extend((0..spec.value_bytes).map(|j| (i + j) as u8 | 1));
            put_varint(&mut body, 0); // headers
            put_varint(&mut records, body.len() as i64);
            records.extend_from_slice(&body);
        }
        let last_delta = spec.records.saturating_sub(1) as i32;
        let mut b = Vec::with_capacity(HEADER_BYTES + records.len());
        b.extend_from_slice(&spec.base_offset.to_be_bytes());
        let batch_length = (HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32;
        b.extend_from_slice(&batch_length.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
        let attributes = if spec.transactional {
            ATTR_TRANSACTIONAL_BIT
        } else {
            0
        };
        b.extend_from_slice(&attributes.to_be_bytes());
        b.extend_from_slice(&last_delta.to_be_bytes());
        b.extend_from_slice(&spec.base_timestamp.to_be_bytes());
        b.extend_from_slice(&(spec.base_timestamp + last_delta as i64).to_be_bytes());
        b.extend_from_slice(&spec.producer_id.to_be_bytes());
        b.extend_from_slice(&spec.producer_epoch.to_be_bytes());
        b.extend_from_slice(&spec.base_sequence.to_be_bytes());
        b.extend_from_slice(&(spec.records as i32).to_be_bytes());
        b.extend_from_slice(&records);
        let crc = compute_crc(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// A batch of `records` records with default settings.
    pub fn simple(records: usize) -> Vec<u8> {
        build(&BatchSpec {
            records,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn end_txn_marker_round_trips_in_kafkas_format() {
        use super::*;
        for (commit, kind) in [(true, 1u8), (false, 0u8)] {
            let m = EndTxnMarker {
                commit,
                coordinator_epoch: 7,
            };
            let b = build_end_txn_marker(42, 3, m, 1_000);
            let hs = validate_batches(&b, usize::MAX).unwrap();
            let h = hs[0];
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch), (42, 3));
            assert_eq!((h.base_sequence, h.records_count), (NO_SEQUENCE, 1));
            assert_eq!(parse_end_txn_marker(&b, &h), Some(m));
            // Key: version 0, type; value: version 0, coordinator epoch (Kafka's EndTransactionMarker).
            let body = codec::records_body(&b, &h, usize::MAX).unwrap();
            let r = codec::parse_records(&body, &h).unwrap()[0];
            assert_eq!(r.key, Some(&[0, 0, 0, kind][..]));
            assert_eq!(r.value, Some(&[0, 0, 0, 0, 0, 7][..]));
        }
        // Not a control batch, or damaged: None, never a panic.
        let data = test_util::simple(1);
        let h = BatchHeader::parse(&data).unwrap();
        assert_eq!(parse_end_txn_marker(&data, &h), None);
        let good = build_end_txn_marker(
            1,
            0,
            EndTxnMarker {
                commit: true,
                coordinator_epoch: 0,
            },
            0,
        );
        let h = BatchHeader::parse(&good).unwrap();
        for cut in 0..good.len() {
            let _ = parse_end_txn_marker(&good[..cut], &h);
        }
        for i in HEADER_BYTES..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = parse_end_txn_marker(&bad, &h);
        }
    }

    #[test]
    fn produce_records_are_one_magic2_batch_as_kafka_requires() {
        use crate::protocol::errors;
        let one = simple(2);
        assert_eq!(check_produce_records(&one), Ok(one.len()));
        let mut torn = one.clone();
        torn.extend_from_slice(&one[..30]);
        assert_eq!(check_produce_records(&torn), Ok(one.len()));
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert_eq!(
            check_produce_records(&two).unwrap_err().code,
            errors::INVALID_RECORD
        );
        assert_eq!(
            check_produce_records(&[]).unwrap_err().code,
            errors::INVALID_RECORD
        );
        assert_eq!(
            check_produce_records(&one[..40]).unwrap_err().code,
            errors::INVALID_RECORD
        );
        let mut magic1 = one.clone();
        magic1[16] = 1;
        assert_eq!(
            check_produce_records(&magic1).unwrap_err().code,
            errors::INVALID_RECORD
        );
        let mut short = one.clone();
        short[8..12].copy_from_slice(&5i32.to_be_bytes());
        let e = check_produce_records(&short).unwrap_err();
        assert_eq!(e.code, errors::CORRUPT_MESSAGE);
        assert!(e.message.is_some());
        let mut zeros = one.clone();
        zeros.extend_from_slice(&[0; 20]);
        assert_eq!(
            check_produce_records(&zeros).unwrap_err(),
            ProduceRecordsError {
                code: errors::CORRUPT_MESSAGE,
                message: None
            }
        );
        // Any bytes at all: an answer, never a panic.
        for n in 0..one.len() {
            let _ = check_produce_records(&one[..n]);
            let _ = validate_produce_batches(&one[..n], 1 << 20);
        }
        let mut base5 = one.clone();
        base5[..8].copy_from_slice(&5i64.to_be_bytes());
        assert_eq!(
            validate_produce_batches(&base5, 1 << 20)
                .unwrap_err()
                .kafka_error_code(),
            errors::INVALID_RECORD
        );
        assert_eq!(
            validate_produce_batches(&base5, 10)
                .unwrap_err()
                .kafka_error_code(),
            errors::INVALID_RECORD
        );
        assert_eq!(
            validate_produce_batches(&one, 10)
                .unwrap_err()
                .kafka_error_code(),
            errors::MESSAGE_TOO_LARGE
        );
        let mut short30 = one[..42].to_vec();
        short30[8..12].copy_from_slice(&30i32.to_be_bytes());
        assert_eq!(
            validate_produce_batches(&short30, 1 << 20)
                .unwrap_err()
                .kafka_error_code(),
            errors::UNKNOWN_SERVER_ERROR
        );
    }

    use super::test_util::*;
    use super::*;

    #[test]
    fn valid_single_and_multiple_batches() {
        let b = simple(3);
        let hs = validate_batches(&b, 1 << 20).unwrap();
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].records_count, 3);
        assert_eq!(hs[0].last_offset_delta, 2);
        assert_eq!(hs[0].total_size(), b.len());
        assert_eq!(hs[0].compression(), Compression::None);
        assert!(!hs[0].is_transactional() && !hs[0].is_control() && !hs[0].is_log_append_time());

        let mut two = simple(1);
        two.extend(simple(5));
        let hs = validate_batches(&two, 1 << 20).unwrap();
        assert_eq!(
            hs.iter().map(|h| h.records_count).collect::<Vec<_>>(),
            vec![1, 5]
        );
    }

    #[test]
    fn empty_blob_is_invalid_record() {
        let e = validate_batches(&[], 100).unwrap_err();
        assert_eq!(e.kafka_error_code(), 87);
    }

    #[test]
    fn crc_flip_is_corrupt() {
        let mut b = simple(2);
        let last = b.len() - 1;
        b[last] ^= 0x40;
        let e = validate_batches(&b, 1 << 20).unwrap_err();
        assert!(matches!(e, RecordError::Corrupt { .. }), "{e:?}");
        assert_eq!(e.kafka_error_code(), 2);
    }

    #[test]
    fn torn_batch_is_corrupt() {
        let b = simple(2);
        let e = validate_batches(&b[..b.len() - 3], 1 << 20).unwrap_err();
        assert_eq!(e.kafka_error_code(), 2);
        let e = validate_batches(&b[..30], 1 << 20).unwrap_err();
        assert_eq!(e.kafka_error_code(), 2);
    }

    #[test]
    fn short_length_is_corrupt() {
        let mut b = simple(1);
        b[8..12].copy_from_slice(&20i32.to_be_bytes());
        assert_eq!(
            validate_batches(&b, 1 << 20)
                .unwrap_err()
                .kafka_error_code(),
            2
        );
    }

    #[test]
    fn wrong_magic_is_unsupported() {
        let mut b = simple(1);
        b[16] = 1;
        let e = validate_batches(&b, 1 << 20).unwrap_err();
        assert_eq!(e.kafka_error_code(), 43);
    }

    #[test]
    fn count_mismatch_is_invalid_record() {
        let mut b = simple(3);
        b[57..61].copy_from_slice(&2i32.to_be_bytes());
        let crc = compute_crc(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        let e = validate_batches(&b, 1 << 20).unwrap_err();
        assert_eq!(e.kafka_error_code(), 87);
    }

    #[test]
    fn too_large() {
        let b = simple(10);
        let e = validate_batches(&b, b.len() - 1).unwrap_err();
        assert_eq!(e.kafka_error_code(), 10);
        assert!(validate_batches(&b, b.len()).is_ok());
    }

    #[test]
    fn last_sequence_wraps() {
        let b = build(&BatchSpec {
            records: 5,
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: i32::MAX - 1,
            ..Default::default()
        });
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.last_sequence(), 2);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(5, 3), 8);
        let h = BatchHeader::parse(&simple(3)).unwrap();
        assert_eq!(h.last_sequence(), NO_SEQUENCE);
    }

    #[test]
    fn patches_keep_crc_valid() {
        let mut b = simple(2);
        set_base_offset(&mut b, 1234);
        set_partition_leader_epoch(&mut b, 7);
        assert!(verify_crc(&b));
        set_log_append_time(&mut b, 42);
        assert!(verify_crc(&b));
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset, 1234);
        assert_eq!(h.partition_leader_epoch, 7);
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 42);
        assert_eq!(h.base_timestamp, 1_700_000_000_000);
        validate_batches(&b, 1 << 20).unwrap();
    }

    #[test]
    fn iter_stops_at_zero_and_torn_tail() {
        let mut seg = simple(1);
        seg.extend(simple(2));
        let good = seg.len();
        seg.extend(vec![0u8; 5000]);
        let mut it = iter_batches(&seg);
        assert_eq!(it.by_ref().filter(|r| r.is_ok()).count(), 2);
        assert_eq!(it.position(), good);

        let mut torn = simple(1);
        let first = torn.len();
        torn.extend(&simple(3)[..40]);
        let mut it = iter_batches(&torn);
        assert_eq!(it.by_ref().count(), 1);
        assert_eq!(it.position(), first);

        let mut torn_body = simple(1);
        torn_body.extend(&simple(3)[..70]);
        let mut it = iter_batches(&torn_body);
        assert_eq!(it.by_ref().count(), 1);
        assert_eq!(it.position(), first);
    }

    #[test]
    fn iter_reports_garbage_once() {
        let mut seg = simple(1);
        let first = seg.len();
        let mut bad = simple(1);
        bad[16] = 9;
        seg.extend(bad);
        let items: Vec<_> = iter_batches(&seg).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
        let mut it = iter_batches(&seg);
        let _ = it.by_ref().count();
        assert_eq!(it.position(), first);
    }
}
