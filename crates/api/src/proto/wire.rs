//! The protobuf wire format: varints and tagged fields, read without trusting
//! a single length in the input.

use super::ProtoError;

/// One field's payload as it appears on the wire.
#[derive(Debug, Clone, Copy)]
pub enum WireValue<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1 (little-endian 8 bytes).
    Fixed64(u64),
    /// Wire type 2.
    Bytes(&'a [u8]),
    /// Wire type 5 (4 bytes); no Kubernetes field uses it, so the value is skipped.
    Fixed32,
}

impl WireValue<'_> {
    /// The wire type number, for error messages.
    pub fn wire_type(&self) -> u8 {
        match self {
            WireValue::Varint(_) => 0,
            WireValue::Fixed64(_) => 1,
            WireValue::Bytes(_) => 2,
            WireValue::Fixed32 => 5,
        }
    }
}

/// Reads a base-128 varint from the front of `buf`, advancing it.
pub fn read_varint(buf: &mut &[u8]) -> Result<u64, ProtoError> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err(ProtoError::Truncated("varint"));
        };
        *buf = rest;
        // The tenth byte may only carry the top bit of a u64.
        if i == 9 && byte > 1 {
            return Err(ProtoError::Varint);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ProtoError::Varint)
}

fn take<'a>(buf: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
    if buf.len() < n {
        return Err(ProtoError::Truncated(what));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// Iterates over the (field number, value) pairs of one message.
pub struct Fields<'a> {
    buf: &'a [u8],
}

/// Splits an encoded message into its fields, lazily.
pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

impl<'a> Fields<'a> {
    fn read_one(&mut self) -> Result<(u32, WireValue<'a>), ProtoError> {
        let key = read_varint(&mut self.buf)?;
        let number = key >> 3;
        if number == 0 || number > 0x1fff_ffff {
            return Err(ProtoError::FieldNumber(number));
        }
        let value = match key & 7 {
            0 => WireValue::Varint(read_varint(&mut self.buf)?),
            1 => {
                let b = take(&mut self.buf, 8, "fixed64")?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                WireValue::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len = read_varint(&mut self.buf)?;
                let len = usize::try_from(len)
                    .map_err(|_| ProtoError::Truncated("length-delimited field"))?;
                WireValue::Bytes(take(&mut self.buf, len, "length-delimited field")?)
            }
            5 => {
                take(&mut self.buf, 4, "fixed32")?;
                WireValue::Fixed32
            }
            // Groups (3, 4) never occur in Kubernetes messages; 6 and 7 are not wire types.
            other => return Err(ProtoError::UnsupportedWireType(other as u8)),
        };
        // Field numbers are at most 2^29 - 1, checked above.
        Ok((number as u32, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, WireValue<'a>), ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let item = self.read_one();
        if item.is_err() {
            // Stop after the first error: the rest of the buffer has no known framing.
            self.buf = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut b: &[u8] = &[0xac, 0x02];
        assert_eq!(read_varint(&mut b).unwrap(), 300);
        let mut b: &[u8] = &[0xff; 11];
        assert!(read_varint(&mut b).is_err());
        let mut b: &[u8] = &[0x80];
        assert!(read_varint(&mut b).is_err());
        let mut b: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_varint(&mut b).unwrap(), u64::MAX);
    }

    #[test]
    fn truncated_field() {
        let r: Vec<_> = fields(&[0x0a, 0x05, b'a']).collect();
        assert_eq!(r.len(), 1);
        assert!(r[0].is_err());
    }
}
