//! Read-only inspection and repair of a log directory, for `ferry log stat|cat|verify|
//! salvage`: works whether or not a server has the log open (salvage excepted: it takes
//! the writer's lock).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::chunk::{self, Chunk};
use crate::format;

/// A consistent read-only view of a log directory at one moment.
pub struct LogView {
    dir: PathBuf,
    chunks: Vec<Chunk>,
}

/// Open a view: scan every chunk, ignoring a torn tail (a live writer may be mid-frame).
pub fn open_view(dir: &Path) -> io::Result<LogView> {
    if !dir.is_dir() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no log at {}", dir.display())));
    }
    let mut chunks = Vec::new();
    for path in chunk::list_chunks(dir)? {
        let scan = chunk::scan(&path)?;
        if let Some((position, reason)) = scan.corrupt {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("corrupt chunk {} at byte {position}: {reason}; run `ferry log verify`", path.display()),
            ));
        }
        chunks.push(scan.chunk);
    }
    Ok(LogView { dir: dir.to_owned(), chunks })
}

impl LogView {
    /// Pick up what was appended since: rescan the last chunk and any new ones (chunks
    /// deleted by retention are dropped).
    pub fn refresh(&mut self) -> io::Result<()> {
        let paths = chunk::list_chunks(&self.dir)?;
        self.chunks.retain(|c| paths.contains(&c.path));
        let known_last = self.chunks.pop();
        for path in paths {
            let known = self.chunks.iter().any(|c| c.path == path);
            if !known {
                let scan = chunk::scan(&path)?;
                if scan.corrupt.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("corrupt chunk {}", path.display()),
                    ));
                }
                self.chunks.push(scan.chunk);
            }
        }
        drop(known_last);
        Ok(())
    }

    /// One past the last record.
    pub fn next_offset(&self) -> u64 {
        self.chunks.last().map_or(0, Chunk::end_offset)
    }

    /// Up to `max` records at offsets `>= from`.
    pub fn read(&self, from: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        chunk::read_records(&self.chunks, from, self.next_offset(), max)
    }

    /// Chunks, offsets, cursors and their lag, disk use.
    pub fn stat(&self) -> io::Result<Stat> {
        let next_offset = self.next_offset();
        let cursors = crate::read_cursors(&self.dir)?
            .into_iter()
            .map(|(name, offset)| CursorStat { lag: next_offset.saturating_sub(offset), name, offset })
            .collect();
        Ok(Stat {
            dir: self.dir.display().to_string(),
            first_offset: self.chunks.first().map_or(0, |c| c.base_offset),
            next_offset,
            disk_bytes: self.chunks.iter().map(|c| c.len).sum(),
            chunks: self
                .chunks
                .iter()
                .map(|c| ChunkStat {
                    file: c.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                    base_offset: c.base_offset,
                    end_offset: c.end_offset(),
                    frames: c.frames.len(),
                    bytes: c.len,
                    created_ms: c.created_ms,
                    last_append_ms: c.last_append_ms(),
                })
                .collect(),
            cursors,
        })
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Stat {
    pub dir: String,
    pub first_offset: u64,
    pub next_offset: u64,
    pub disk_bytes: u64,
    pub chunks: Vec<ChunkStat>,
    pub cursors: Vec<CursorStat>,
}

#[derive(Debug, serde::Serialize)]
pub struct ChunkStat {
    pub file: String,
    pub base_offset: u64,
    pub end_offset: u64,
    pub frames: usize,
    pub bytes: u64,
    pub created_ms: u64,
    pub last_append_ms: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct CursorStat {
    pub name: String,
    pub offset: u64,
    /// Records appended that this consumer has not read yet.
    pub lag: u64,
}

/// What `verify` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub chunks: usize,
    pub frames: usize,
    pub records: u64,
    pub bytes: u64,
    /// The last chunk ends in a torn tail of this many bytes (cut off at the next open).
    pub torn_tail: Option<(String, u64)>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, serde::Serialize)]
pub struct Problem {
    pub file: String,
    pub position: u64,
    pub reason: String,
    /// Valid frames found after the bad bytes (kept by `salvage`).
    pub frames_after: usize,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Read every chunk and check every frame; `progress(done, total)` after each chunk.
pub fn verify(dir: &Path, progress: &mut dyn FnMut(usize, usize)) -> io::Result<VerifyReport> {
    let paths = chunk::list_chunks(dir)?;
    let mut report = VerifyReport::default();
    for (i, path) in paths.iter().enumerate() {
        let scan = chunk::scan(path)?;
        report.chunks += 1;
        report.frames += scan.chunk.frames.len() + scan.frames_after_corruption.len();
        report.records += scan.chunk.frames.iter().map(|f| u64::from(f.header.count)).sum::<u64>();
        report.bytes += std::fs::metadata(path)?.len();
        let file = path.display().to_string();
        if let Some((position, reason)) = scan.corrupt {
            let reason = reason.to_string();
            report.problems.push(Problem { file, position, reason, frames_after: scan.frames_after_corruption.len() });
        } else if scan.torn_bytes > 0 {
            if i + 1 == paths.len() {
                report.torn_tail = Some((file, scan.torn_bytes));
            } else {
                report.problems.push(Problem {
                    file,
                    position: scan.chunk.len,
                    reason: format!("{} unreadable bytes at the end of a chunk that is not the last", scan.torn_bytes),
                    frames_after: 0,
                });
            }
        }
        progress(i + 1, paths.len());
    }
    Ok(report)
}

/// What `salvage` did to one chunk.
#[derive(Debug, serde::Serialize)]
pub struct Salvaged {
    pub file: String,
    /// Bytes dropped (bad frames and garbage).
    pub dropped_bytes: u64,
    /// Offsets that no longer exist (first, one past last), one range per dropped region.
    pub lost_offsets: Vec<(u64, u64)>,
}

/// Rewrite every damaged chunk keeping only frames whose checksum holds, and cut a torn
/// tail. Refuses while a server holds the log. Offsets of dropped records are reported and
/// stay unused; every kept record keeps its offset.
pub fn salvage(dir: &Path, progress: &mut dyn FnMut(usize, usize)) -> io::Result<Vec<Salvaged>> {
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
    if lock.try_lock().is_err() {
        return Err(io::Error::other(format!("{} is in use: stop ferry before `ferry log salvage`", dir.display())));
    }
    let paths = chunk::list_chunks(dir)?;
    let mut out = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let scan = chunk::scan(path)?;
        let original_len = std::fs::metadata(path)?.len();
        if scan.corrupt.is_none() && scan.torn_bytes == 0 {
            progress(i + 1, paths.len());
            continue;
        }
        let source = File::open(path)?;
        let mut rewritten = format::encode_chunk_header(scan.chunk.base_offset, scan.chunk.created_ms).to_vec();
        let mut lost = Vec::new();
        let mut expected = scan.chunk.end_offset();
        for frame in scan.chunk.frames.iter().chain(scan.frames_after_corruption.iter()) {
            if frame.header.first_offset > expected {
                lost.push((expected, frame.header.first_offset));
            }
            if frame.header.first_offset < expected && frame.pos >= scan.chunk.len {
                continue; // a stale copy that would make offsets go backwards
            }
            let mut bytes = vec![0u8; frame.header.frame_len()];
            std::os::unix::fs::FileExt::read_exact_at(&source, &mut bytes, frame.pos)?;
            rewritten.extend_from_slice(&bytes);
            expected = expected.max(frame.header.end_offset());
        }
        let tmp = path.with_extension("salvage");
        let mut file = File::create(&tmp)?;
        file.write_all(&rewritten)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        out.push(Salvaged {
            file: path.display().to_string(),
            // Preallocated zeros are not data: they are not counted as dropped.
            dropped_bytes: original_len.saturating_sub(scan.zero_tail).saturating_sub(rewritten.len() as u64),
            lost_offsets: lost,
        });
        progress(i + 1, paths.len());
    }
    Ok(out)
}
