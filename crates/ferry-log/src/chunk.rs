//! Chunk files: naming, scanning (verify every frame, find a torn tail), and reading
//! records back by offset. Used by the live log and by read-only inspection alike.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::format::{self, FRAME_HEADER_LEN, FrameHeader};

/// Chunk files are named after their base offset, zero-padded so names sort by offset.
pub(crate) fn chunk_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.chunk"))
}

/// Every chunk file in `dir`, sorted by base offset.
pub(crate) fn list_chunks(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_chunk = path.extension().is_some_and(|e| e == "chunk")
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()));
        if is_chunk {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Where a frame sits and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameMeta {
    pub(crate) pos: u64,
    pub(crate) header: FrameHeader,
}

/// A chunk as the log knows it.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub(crate) path: PathBuf,
    pub(crate) base_offset: u64,
    pub(crate) created_ms: u64,
    pub(crate) frames: Vec<FrameMeta>,
    /// Bytes of valid data (header and whole frames).
    pub(crate) len: u64,
    /// False while a new chunk is still under its temporary name (until the writer thread
    /// has synced and renamed it): readers see none of its records yet, so they always
    /// open a chunk by `path`, and retention keeps the chunk before it.
    pub(crate) named: bool,
}

impl Chunk {
    /// One past the last offset stored in this chunk.
    pub(crate) fn end_offset(&self) -> u64 {
        self.frames.last().map_or(self.base_offset, |f| f.header.end_offset())
    }

    pub(crate) fn last_append_ms(&self) -> u64 {
        self.frames.last().map_or(self.created_ms, |f| f.header.appended_ms)
    }
}

/// What scanning a chunk file found.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) chunk: Chunk,
    /// Bytes after the last valid frame that do not hold any valid frame, up to the last
    /// non-zero byte: a torn tail.
    pub(crate) torn_bytes: u64,
    /// Zero bytes at the end of the file after the valid frames (and any torn tail):
    /// preallocated space, not damage.
    pub(crate) zero_tail: u64,
    /// A bad frame followed by valid ones: corruption in the middle (byte position, reason).
    pub(crate) corrupt: Option<(u64, FrameError)>,
    /// Frames found (and verified) after the corruption, for salvage.
    pub(crate) frames_after_corruption: Vec<FrameMeta>,
}

/// Read and verify every frame of a chunk file.
pub(crate) fn scan(path: &Path) -> io::Result<Scan> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let (base_offset, created_ms) = format::decode_chunk_header(&bytes)
        .map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {reason}", path.display())))?;
    let mut chunk = Chunk { path: path.to_owned(), base_offset, created_ms, frames: Vec::new(), len: 0, named: true };
    let mut pos = format::CHUNK_HEADER_LEN;
    let mut expected_offset = base_offset;
    let mut bad: Option<(u64, FrameError)> = None;
    while pos < bytes.len() {
        match frame_at(&bytes, pos) {
            Ok(header) if header.first_offset >= expected_offset => {
                chunk.frames.push(FrameMeta { pos: pos as u64, header });
                expected_offset = header.end_offset();
                pos += header.frame_len();
            }
            Ok(_) => {
                bad = Some((pos as u64, FrameError::OffsetsBackwards));
                break;
            }
            Err(reason) => {
                bad = Some((pos as u64, reason));
                break;
            }
        }
    }
    chunk.len = pos as u64;
    let Some((bad_pos, reason)) = bad else {
        return Ok(Scan { chunk, torn_bytes: 0, zero_tail: 0, corrupt: None, frames_after_corruption: Vec::new() });
    };
    // Is there any valid frame after the bad bytes? Then this is corruption, not a tail.
    let mut after = Vec::new();
    let mut probe = bad_pos as usize + 1;
    // Jump from one frame magic to the next (a preallocated tail is megabytes of zeros).
    let magic = format::FRAME_MAGIC.to_le_bytes();
    while probe + FRAME_HEADER_LEN <= bytes.len() {
        let Some(found) = memchr::memmem::find(&bytes[probe..], &magic) else { break };
        probe += found;
        if let Ok(header) = frame_at(&bytes, probe) {
            after.push(FrameMeta { pos: probe as u64, header });
            probe += header.frame_len();
            continue;
        }
        probe += 1;
    }
    if after.is_empty() {
        // Preallocated space is zeros; a torn write leaves non-zero bytes before them.
        let rest = &bytes[bad_pos as usize..];
        let torn_bytes = rest.iter().rposition(|b| *b != 0).map_or(0, |i| i as u64 + 1);
        let zero_tail = rest.len() as u64 - torn_bytes;
        Ok(Scan { chunk, torn_bytes, zero_tail, corrupt: None, frames_after_corruption: after })
    } else {
        Ok(Scan {
            chunk,
            torn_bytes: 0,
            zero_tail: 0,
            corrupt: Some((bad_pos, reason)),
            frames_after_corruption: after,
        })
    }
}

/// Why the bytes at a frame's position are not a valid frame.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("partial frame header")]
    PartialHeader,
    #[error("bad frame header")]
    BadHeader,
    #[error("partial frame body")]
    PartialBody,
    #[error("checksum mismatch")]
    Checksum,
    #[error("frame offsets go backwards")]
    OffsetsBackwards,
}

/// Decode and verify the frame at `pos` of a whole chunk in memory.
fn frame_at(bytes: &[u8], pos: usize) -> Result<FrameHeader, FrameError> {
    let Some(header_bytes) = bytes.get(pos..pos + FRAME_HEADER_LEN) else {
        return Err(FrameError::PartialHeader);
    };
    let header_bytes: &[u8; FRAME_HEADER_LEN] = header_bytes.try_into().map_err(|_| FrameError::PartialHeader)?;
    let header = FrameHeader::decode(header_bytes).ok_or(FrameError::BadHeader)?;
    let body = bytes.get(pos + FRAME_HEADER_LEN..pos + header.frame_len()).ok_or(FrameError::PartialBody)?;
    if !header.check(header_bytes, body) {
        return Err(FrameError::Checksum);
    }
    Ok(header)
}

/// Read one frame's body from disk, verifying its checksum.
pub(crate) fn read_frame(file: &File, path: &Path, frame: &FrameMeta) -> io::Result<Vec<u8>> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    file.read_exact_at(&mut header, frame.pos)?;
    let mut body = vec![0u8; frame.header.body_len];
    file.read_exact_at(&mut body, frame.pos + FRAME_HEADER_LEN as u64)?;
    if FrameHeader::decode(&header) != Some(frame.header) || !frame.header.check(&header, &body) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "corrupt frame in {} at byte {}: checksum mismatch; run `ferry log verify`",
                path.display(),
                frame.pos
            ),
        ));
    }
    Ok(body)
}

/// Records at offsets `>= from` and `< end`, at most `max`, from `chunks` in order.
/// The chunks, and of each only the frames, that a read of up to `max` records from
/// `from` (before `end`) needs: what a reader copies out of the shared chunk list, instead
/// of every frame's metadata (48 bytes a frame, and a busy log holds millions).
pub(crate) fn select(chunks: &[Chunk], from: u64, end: u64, max: usize) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut records = 0u64;
    let start = chunks.partition_point(|c| c.end_offset() <= from);
    for chunk in &chunks[start..] {
        if records >= max as u64 || chunk.base_offset >= end {
            break;
        }
        let first = chunk.frames.partition_point(|f| f.header.end_offset() <= from);
        let mut last = first;
        for frame in &chunk.frames[first..] {
            if records >= max as u64 || frame.header.first_offset >= end {
                break;
            }
            records += frame.header.end_offset().min(end) - frame.header.first_offset.max(from);
            last += 1;
        }
        out.push(Chunk {
            path: chunk.path.clone(),
            base_offset: chunk.base_offset,
            created_ms: chunk.created_ms,
            frames: chunk.frames[first..last].to_vec(),
            len: chunk.len,
            named: chunk.named,
        });
    }
    out
}

pub(crate) fn read_records(chunks: &[Chunk], from: u64, end: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    let start = chunks.partition_point(|c| c.end_offset() <= from);
    for chunk in &chunks[start..] {
        if out.len() >= max || chunk.base_offset >= end {
            break;
        }
        let file = File::open(&chunk.path)?;
        let first_frame = chunk.frames.partition_point(|f| f.header.end_offset() <= from);
        for frame in &chunk.frames[first_frame..] {
            if out.len() >= max || frame.header.first_offset >= end {
                break;
            }
            let body = read_frame(&file, &chunk.path, frame)?;
            let records = format::decode_records(&frame.header, &body)?;
            for (i, record) in records.into_iter().enumerate() {
                let offset = frame.header.first_offset + i as u64;
                if offset >= from && offset < end && out.len() < max {
                    out.push((offset, record));
                }
            }
        }
    }
    Ok(out)
}
