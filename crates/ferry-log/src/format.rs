//! The on-disk format of chunk files, version 1. See the crate documentation for the
//! layout; this module encodes and decodes it and nothing else.

use std::io::{self, Read};

/// The first 8 bytes of every chunk file.
pub(crate) const CHUNK_MAGIC: &[u8; 8] = b"FERRYLOG";
/// The chunk format version this code writes (and the only one it reads so far).
pub(crate) const CHUNK_VERSION: u32 = 1;
/// Bytes of the chunk header.
pub(crate) const CHUNK_HEADER_LEN: usize = 32;
/// The first 4 bytes of every frame ("FRM1" little-endian).
pub(crate) const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"FRM1");
/// Bytes of a frame header.
pub(crate) const FRAME_HEADER_LEN: usize = 36;
/// Bytes per record of a frame's key section: a flag and a 128-bit hash.
pub(crate) const KEY_LEN: usize = 17;
/// Frame flag: the payload section is zstd-compressed.
pub(crate) const FLAG_ZSTD: u16 = 1;
/// Upper bound on one frame's body, so a corrupt length cannot make us allocate gigabytes.
pub(crate) const MAX_FRAME_BODY: usize = 256 * 1024 * 1024;

/// The chunk header: magic, version, base offset, creation time.
pub(crate) fn encode_chunk_header(base_offset: u64, created_ms: u64) -> [u8; CHUNK_HEADER_LEN] {
    let mut header = [0u8; CHUNK_HEADER_LEN];
    header[0..8].copy_from_slice(CHUNK_MAGIC);
    header[8..12].copy_from_slice(&CHUNK_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&base_offset.to_le_bytes());
    header[24..32].copy_from_slice(&created_ms.to_le_bytes());
    header
}

/// Why a chunk header cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("not a ferry log chunk (bad magic)")]
    BadMagic,
    #[error("chunk format version {0} is not supported (this ferry reads version {CHUNK_VERSION})")]
    Version(u32),
}

/// What a chunk header says, or why it cannot be read.
pub(crate) fn decode_chunk_header(bytes: &[u8]) -> Result<(u64, u64), HeaderError> {
    if bytes.len() < CHUNK_HEADER_LEN || &bytes[0..8] != CHUNK_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if version != CHUNK_VERSION {
        return Err(HeaderError::Version(version));
    }
    let base = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default());
    let created = u64::from_le_bytes(bytes[24..32].try_into().unwrap_or_default());
    Ok((base, created))
}

/// A record's dedupe key: 128 bits of xxh3 of the caller's key bytes.
pub(crate) fn key_hash(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

/// Encodes frames: one zstd context and the buffers, kept between frames for the
/// writer's life. Creating a context per frame costs more than compressing a small frame,
/// and allocating the buffers per frame (megabytes each for a busy group commit) kept that
/// much freed memory waiting for the allocator to give it back.
pub(crate) struct Encoder {
    compressor: zstd::bulk::Compressor<'static>,
    /// Payload sections of at least this many bytes are compressed.
    compress_min_bytes: usize,
    records: Vec<u8>,
    compressed: Vec<u8>,
    frame: Vec<u8>,
}

impl Encoder {
    /// Buffers past this capacity are dropped after use instead of kept: a group commit
    /// takes up to 4 MiB of payloads, and a rare larger frame (one huge request) should
    /// not stay resident.
    const KEEP_BYTES: usize = 8 * 1024 * 1024;

    pub(crate) fn new(compress_min_bytes: usize) -> io::Result<Encoder> {
        // Level 1 with matches of at least 7 bytes (its default is 6): on the benchmark's
        // events 1.00-1.07× the speed and a ratio of 13.2 against 12.8
        // (`cargo bench -p ferry-bench --bench compress`).
        let mut compressor = zstd::bulk::Compressor::new(1)?;
        compressor.set_parameter(zstd::zstd_safe::CParameter::MinMatch(7))?;
        Ok(Encoder { compressor, compress_min_bytes, records: Vec::new(), compressed: Vec::new(), frame: Vec::new() })
    }

    /// One frame holding `payloads` at offsets `first_offset..`. Hand the buffer back with
    /// [`Encoder::recycle`] once it is written.
    pub(crate) fn encode(
        &mut self,
        first_offset: u64,
        appended_ms: u64,
        keys: &[Option<u128>],
        payloads: &[&[u8]],
    ) -> io::Result<Vec<u8>> {
        debug_assert_eq!(keys.len(), payloads.len());
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        let result = self.encode_into(first_offset, appended_ms, keys, payloads, &mut frame);
        for buffer in [&mut self.records, &mut self.compressed] {
            buffer.clear();
            if buffer.capacity() > Self::KEEP_BYTES {
                *buffer = Vec::new();
            }
        }
        result.map(|()| frame)
    }

    /// Keep a frame's buffer for the next one, unless it grew unusually large.
    pub(crate) fn recycle(&mut self, frame: Vec<u8>) {
        if frame.capacity() <= Self::KEEP_BYTES {
            self.frame = frame;
        }
    }

    fn encode_into(
        &mut self,
        first_offset: u64,
        appended_ms: u64,
        keys: &[Option<u128>],
        payloads: &[&[u8]],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let records = &mut self.records;
        records.reserve(payloads.iter().map(|p| p.len() + 4).sum());
        for payload in payloads {
            let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("record over 4 GiB"))?;
            records.extend_from_slice(&len.to_le_bytes());
            records.extend_from_slice(payload);
        }
        let section = if records.len() >= self.compress_min_bytes {
            self.compressed.reserve(zstd::zstd_safe::compress_bound(records.len()));
            self.compressor.compress_to_buffer(records, &mut self.compressed)?;
            if self.compressed.len() < records.len() { Some(&self.compressed) } else { None }
        } else {
            None
        };
        let (flags, section) = match section {
            Some(compressed) => (FLAG_ZSTD, compressed),
            None => (0, &self.records),
        };
        write_frame(first_offset, appended_ms, keys, flags, section, out)
    }
}

/// The frame header, the key slots and the (possibly compressed) payload section.
fn write_frame(
    first_offset: u64,
    appended_ms: u64,
    keys: &[Option<u128>],
    flags: u16,
    section: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let body_len = keys.len() * KEY_LEN + section.len();
    out.reserve(FRAME_HEADER_LEN + body_len);
    let start = out.len();
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    out.extend_from_slice(&u32::try_from(body_len).map_err(|_| io::Error::other("frame over 4 GiB"))?.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled below
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&first_offset.to_le_bytes());
    out.extend_from_slice(&u32::try_from(keys.len()).map_err(|_| io::Error::other("too many records"))?.to_le_bytes());
    out.extend_from_slice(&appended_ms.to_le_bytes());
    for key in keys {
        match key {
            Some(hash) => {
                out.push(1);
                out.extend_from_slice(&hash.to_le_bytes());
            }
            None => out.extend_from_slice(&[0; KEY_LEN]),
        }
    }
    out.extend_from_slice(section);
    let crc = crc32fast::hash(&out[start + 12..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A frame header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) body_len: usize,
    pub(crate) crc: u32,
    pub(crate) flags: u16,
    pub(crate) first_offset: u64,
    pub(crate) count: u32,
    pub(crate) appended_ms: u64,
}

impl FrameHeader {
    pub(crate) fn decode(bytes: &[u8; FRAME_HEADER_LEN]) -> Option<FrameHeader> {
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
        if u32_at(0) != FRAME_MAGIC {
            return None;
        }
        let header = FrameHeader {
            body_len: u32_at(4) as usize,
            crc: u32_at(8),
            flags: u16::from_le_bytes([bytes[12], bytes[13]]),
            first_offset: u64_at(16),
            count: u32_at(24),
            appended_ms: u64_at(28),
        };
        let plausible = header.body_len <= MAX_FRAME_BODY && (header.count as usize) * KEY_LEN <= header.body_len;
        plausible.then_some(header)
    }

    /// Total bytes of the frame on disk.
    pub(crate) fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.body_len
    }

    /// One past the last offset in the frame.
    pub(crate) fn end_offset(&self) -> u64 {
        self.first_offset + u64::from(self.count)
    }

    /// Whether `body` matches the checksum (which covers the header after the crc field too).
    pub(crate) fn check(&self, header: &[u8; FRAME_HEADER_LEN], body: &[u8]) -> bool {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[12..]);
        hasher.update(body);
        hasher.finalize() == self.crc
    }
}

/// The keys of a frame body (one per record).
pub(crate) fn decode_keys(header: &FrameHeader, body: &[u8]) -> Vec<Option<u128>> {
    body[..header.count as usize * KEY_LEN]
        .chunks_exact(KEY_LEN)
        .map(|k| (k[0] == 1).then(|| u128::from_le_bytes(k[1..].try_into().unwrap_or_default())))
        .collect()
}

/// The records of a frame body, in offset order.
pub(crate) fn decode_records(header: &FrameHeader, body: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let section = &body[header.count as usize * KEY_LEN..];
    let plain;
    let section = if header.flags & FLAG_ZSTD != 0 {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(section)?.take(MAX_FRAME_BODY as u64 * 8).read_to_end(&mut out)?;
        plain = out;
        &plain[..]
    } else {
        section
    };
    let mut records = Vec::with_capacity(header.count as usize);
    let mut at = 0;
    for _ in 0..header.count {
        let len_bytes: [u8; 4] = section
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| io::Error::other("truncated record length"))?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        let record = section.get(at + 4..at + 4 + len).ok_or_else(|| io::Error::other("truncated record"))?;
        records.push(record.to_vec());
        at += 4 + len;
    }
    Ok(records)
}
