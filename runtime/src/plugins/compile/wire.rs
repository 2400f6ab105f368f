//! The frames the node and its compile worker exchange over the worker's stdin and stdout: a
//! tag byte, a little-endian `u32` length, then the payload.
//!
//! Node to worker: one `Request` (the sealing key and the plugin), then a `CacheValue` for
//! each `CacheGet`. Worker to node: any number of `CacheGet` and `CacheInsert` (the optimizing
//! compiler's function code lives in the node, shared by every compile), then one `Done` (the
//! sealed build) or `Failed` (why not).

use std::io::{self, Read, Write};

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// Node to worker: the 32-byte sealing key, then the component.
    Request = 1,
    /// Node to worker: a request id (`u64`), a found flag (`u8`), then the cached code.
    CacheValue = 2,
    /// Worker to node: a request id (`u64`), then the cache key.
    CacheGet = 10,
    /// Worker to node: the key length (`u32`), the key, then the code.
    CacheInsert = 11,
    /// Worker to node: the build, sealed with the request's key (`artifact::seal`).
    Done = 12,
    /// Worker to node: why the component does not compile (UTF-8).
    Failed = 13,
    /// Worker to node: the compiler ran out of memory (UTF-8 detail).
    OutOfMemory = 14,
}

impl Tag {
    fn from_byte(byte: u8) -> Option<Tag> {
        Some(match byte {
            1 => Tag::Request,
            2 => Tag::CacheValue,
            10 => Tag::CacheGet,
            11 => Tag::CacheInsert,
            12 => Tag::Done,
            13 => Tag::Failed,
            14 => Tag::OutOfMemory,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it carries.
    pub tag: Tag,
    /// The payload.
    pub payload: Vec<u8>,
}

const HEADER: usize = 5;

fn header(tag: Tag, len: usize) -> io::Result<[u8; HEADER]> {
    let len = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    let mut header = [0u8; HEADER];
    header[0] = tag as u8;
    header[1..].copy_from_slice(&len.to_le_bytes());
    Ok(header)
}

fn parse_header(header: [u8; HEADER], max: usize) -> io::Result<(Tag, usize)> {
    let tag = Tag::from_byte(header[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame tag {}", header[0]),
        )
    })?;
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes, over the bound of {max}"),
        ));
    }
    Ok((tag, len))
}

/// Writes one frame whose payload is the concatenation of `parts`.
pub fn write(out: &mut impl Write, tag: Tag, parts: &[&[u8]]) -> io::Result<()> {
    let len = parts.iter().map(|part| part.len()).sum();
    out.write_all(&header(tag, len)?)?;
    for part in parts {
        out.write_all(part)?;
    }
    out.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of the stream, an error past `max` bytes.
pub fn read(input: &mut impl Read, max: usize) -> io::Result<Option<Frame>> {
    let mut header = [0u8; HEADER];
    match input.read_exact(&mut header) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let (tag, len) = parse_header(header, max)?;
    // Grown as bytes arrive, not reserved up front: a length is only a claim.
    let mut payload = Vec::with_capacity(len.min(1024 * 1024));
    let read = input.take(len as u64).read_to_end(&mut payload)?;
    if read < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(Frame { tag, payload }))
}

/// Splits a leading `u64` off a payload.
pub fn split_u64(payload: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = payload.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

/// Splits a leading length-prefixed (`u32`) field off a payload.
pub fn split_field(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let (head, rest) = payload.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*head) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut buffer = Vec::new();
        write(&mut buffer, Tag::Done, &[b"ab", b"cd"]).expect("written");
        write(&mut buffer, Tag::Failed, &[]).expect("written");
        let mut input = &buffer[..];
        let first = read(&mut input, 16).expect("reads").expect("a frame");
        assert_eq!(
            (first.tag, first.payload.as_slice()),
            (Tag::Done, &b"abcd"[..])
        );
        let second = read(&mut input, 16).expect("reads").expect("a frame");
        assert_eq!((second.tag, second.payload.len()), (Tag::Failed, 0));
        assert!(read(&mut input, 16).expect("reads").is_none());
    }

    #[test]
    fn refuses_oversized_frames_unknown_tags_and_truncation() {
        let mut buffer = Vec::new();
        write(&mut buffer, Tag::Done, &[&[0; 17]]).expect("written");
        let error = read(&mut &buffer[..], 16).expect_err("over the bound");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let mut unknown = buffer.clone();
        unknown[0] = 99;
        assert!(read(&mut &unknown[..], 64).is_err());
        let truncated = &buffer[..buffer.len() - 1];
        assert!(read(&mut &truncated[..], 64).is_err());
    }

    #[test]
    fn fields_split_off_payloads() {
        let mut buffer = Vec::new();
        write(&mut buffer, Tag::CacheGet, &[&7u64.to_le_bytes(), b"key"]).expect("written");
        let frame = read(&mut &buffer[..], 64).expect("reads").expect("a frame");
        let (id, key) = split_u64(&frame.payload).expect("an id");
        assert_eq!((id, key), (7, &b"key"[..]));
        assert_eq!(split_u64(&[1, 2, 3]), None);
        let field = [&3u32.to_le_bytes()[..], b"abcde"].concat();
        assert_eq!(split_field(&field), Some((&b"abc"[..], &b"de"[..])));
        assert_eq!(split_field(&[9, 0, 0, 0, 1]), None);
    }
}
