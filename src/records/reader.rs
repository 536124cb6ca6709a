//! A bounds-checked reader for the records the broker decodes itself (internal topics' keys and values).

use bytes::Bytes;

/// A bounds-checked reader over Kafka's primitive encodings (big-endian integers, varints, classic
/// and compact strings, tagged fields): every read returns `None` past the end, never panics.
pub struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub fn i8(&mut self) -> Option<i8> {
        Some(*self.take(1)?.first()? as i8)
    }
    pub fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    pub fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    pub fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.take(1)?.first()?;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    pub fn varint(&mut self) -> Option<i64> {
        let z = self.uvarint()?;
        Some(((z >> 1) as i64) ^ -((z & 1) as i64))
    }
    /// A string, nullable, in the classic (i16 length) or compact (uvarint length + 1) form.
    pub fn nullable_str(&mut self, compact: bool) -> Option<Option<String>> {
        let len: i64 = if compact {
            self.uvarint()? as i64 - 1
        } else {
            self.i16()? as i64
        };
        if len < 0 {
            return Some(None);
        }
        let s = self.take(len as usize)?;
        Some(Some(String::from_utf8_lossy(s).into_owned()))
    }
    pub fn str(&mut self, compact: bool) -> Option<String> {
        self.nullable_str(compact)?
    }
    pub fn bytes(&mut self, compact: bool) -> Option<Bytes> {
        let len: i64 = if compact {
            self.uvarint()? as i64 - 1
        } else {
            self.i32()? as i64
        };
        if len < 0 {
            return Some(Bytes::new());
        }
        Some(Bytes::copy_from_slice(self.take(len as usize)?))
    }
    /// An array length: classic i32 (-1 null) or compact uvarint (length + 1, 0 null).
    pub fn array_len(&mut self, compact: bool) -> Option<Option<usize>> {
        let len: i64 = if compact {
            self.uvarint()? as i64 - 1
        } else {
            self.i32()? as i64
        };
        if len < 0 {
            return Some(None);
        }
        Some(Some(usize::try_from(len).ok()?))
    }
    /// Reads a tagged-field section, handing each (tag, bytes) to `f`.
    pub fn tags(&mut self, mut f: impl FnMut(u64, &'a [u8]) -> Option<()>) -> Option<()> {
        let n = self.uvarint()?;
        for _ in 0..n {
            let tag = self.uvarint()?;
            let len = usize::try_from(self.uvarint()?).ok()?;
            f(tag, self.take(len)?)?;
        }
        Some(())
    }
    pub fn skip_tagged(&mut self) -> Option<()> {
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let len = self.uvarint()?;
            self.take(len as usize)?;
        }
        Some(())
    }
}
