//! The spool of kept predictions (SQLite registries): the serving process appends each batch of predictions to a
//! segment file, a few bytes per row and no database work, and [`crate::Registry::index_spooled_blocking`] moves
//! them into the `outcomes` table later, at a low priority; a join of ground truth indexes the predictions it names
//! first, and anything deleting kept predictions indexes all of them first. Inserting into SQLite's indexes costs
//! 2-4 µs of CPU per row, taken from a saturated server's serving cores; appending here costs about a twentieth of
//! that (BENCHMARKS.md, "Monitoring overhead").
//!
//! A segment is `NNNNNNNNNNNNNNNN.spool` (its sequence number) in a directory beside the database file, a run of
//! records `[u32 length][u32 CRC-32 of the payload][payload]`, little-endian. The process appending to a segment
//! holds an exclusive file lock on it, so a reader knows a locked segment may still grow and an unlocked one is
//! final: a record cut short by a crash at the end of a final segment is skipped with a warning. How far the
//! indexer has come is stored in the database, in the transaction that inserts the rows, so that a crash never
//! indexes a row twice and a row deleted since (retention, a deleted model) does not come back. Segments wholly
//! indexed are removed.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::RegistryError;
use crate::outcomes::{Outcome, OutcomeRow};

/// A segment is closed and a new one begun past this size, so that indexed rows leave the disk in steps.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Record header: payload length and CRC-32.
const HEADER: usize = 8;
/// A longer payload is not a record this code wrote (names and ids are at most 64 KiB, classes at most 65,535).
const MAX_PAYLOAD: usize = 2 * 65_536 + 8 * 65_536 + 64;
/// Bytes read per indexing pass at most, whatever the row budget.
const READ_BYTES: u64 = 8 << 20;
const SUFFIX: &str = "spool";

/// Where the indexer has come to: the next unread byte of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Position {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
}

/// What one append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spooled {
    /// Rows appended.
    pub rows: u64,
    /// Rows dropped because the spool was at its size limit (or unencodable: a name or id over 64 KiB).
    pub dropped: u64,
}

/// Rows read from the spool, and where the next read starts.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) rows: Vec<Outcome>,
    pub(crate) next: Position,
    /// Whether the read stopped at its budget with more to read.
    pub(crate) more: bool,
}

/// The segment this process appends to.
struct Segment {
    seq: u64,
    file: File,
    len: u64,
}

#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    writer: Mutex<Option<SegmentSlot>>,
    /// One indexing pass at a time in this process.
    pub(crate) indexing: Mutex<()>,
    /// Where the last indexing pass of this process left off (for the backlog figure).
    pub(crate) indexed: Mutex<Position>,
    /// Encoding buffer, kept between appends.
    buf: Mutex<Vec<u8>>,
}

/// `Segment` without a `Debug` of its file handle.
struct SegmentSlot(Segment);

impl std::fmt::Debug for SegmentSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("seq", &self.0.seq).field("len", &self.0.len).finish_non_exhaustive()
    }
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> RegistryError {
    RegistryError::Io(format!("kept predictions spool: {what} {}: {e}", path.display()))
}

/// The segments in `dir`, by sequence number, with their sizes.
fn segments(dir: &Path) -> Result<Vec<(u64, u64)>, RegistryError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("cannot list", dir, &e)),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(seq) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)?.strip_suffix('.')?.parse::<u64>().ok())
        else {
            continue;
        };
        // A segment removed since the listing (by another process's indexer) is simply not there.
        if let Ok(meta) = entry.metadata() {
            found.push((seq, meta.len()));
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn encode(out: &mut Vec<u8>, row: &OutcomeRow<'_>) -> bool {
    let proba = row.proba.unwrap_or(&[]);
    let (Ok(model), Ok(id), Ok(classes)) =
        (u16::try_from(row.model.len()), u16::try_from(row.request_id.len()), u16::try_from(proba.len()))
    else {
        return false;
    };
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&model.to_le_bytes());
    out.extend_from_slice(row.model.as_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(row.request_id.as_bytes());
    out.extend_from_slice(&row.row.to_le_bytes());
    out.extend_from_slice(&row.version.to_le_bytes());
    out.extend_from_slice(&row.at.to_le_bytes());
    out.extend_from_slice(&row.predicted.to_le_bytes());
    out.extend_from_slice(&classes.to_le_bytes());
    for p in proba {
        out.extend_from_slice(&p.to_le_bytes());
    }
    let payload = &out[start + HEADER..];
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&length);
    out[start + 4..start + HEADER].copy_from_slice(&crc);
    true
}

/// Reads fields off a payload.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn text(&mut self) -> Option<String> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn decode(payload: &[u8]) -> Option<Outcome> {
    let mut f = Fields(payload);
    let model = f.text()?;
    let request_id = f.text()?;
    let row = f.u64()?;
    let version = f.u64()?;
    let at = i64::from_le_bytes(f.u64()?.to_le_bytes());
    let predicted = f64::from_bits(f.u64()?);
    let classes = usize::from(f.u16()?);
    let mut proba = Vec::with_capacity(classes);
    for _ in 0..classes {
        proba.push(f64::from_bits(f.u64()?));
    }
    f.0.is_empty().then_some(Outcome {
        model,
        request_id,
        row,
        version,
        at,
        predicted,
        proba: (classes > 0).then_some(proba),
    })
}

/// A record at the start of `bytes`: `Some((payload, length with header))`, or `None` when `bytes` hold no whole
/// valid record (cut short, or not a record).
fn record(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let header = bytes.get(..HEADER)?;
    let length = usize::try_from(u32::from_le_bytes(header[..4].try_into().ok()?)).ok()?;
    if length > MAX_PAYLOAD {
        return None;
    }
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = bytes.get(HEADER..HEADER + length)?;
    (crc32fast::hash(payload) == crc).then_some((payload, HEADER + length))
}

impl Spool {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            writer: Mutex::new(None),
            indexing: Mutex::new(()),
            indexed: Mutex::new(Position::default()),
            buf: Mutex::new(Vec::new()),
        }
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:016}.{SUFFIX}"))
    }

    /// Bytes appended and not yet indexed (as of this process's last indexing pass).
    pub(crate) fn backlog_bytes(&self) -> u64 {
        let at = *self.indexed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        segments(&self.dir).map_or(0, |all| {
            all.iter()
                .filter(|(seq, _)| *seq >= at.segment)
                .map(|&(seq, len)| if seq == at.segment { len.saturating_sub(at.offset) } else { len })
                .sum()
        })
    }

    /// A new segment, locked before it gets its name, so that no reader ever sees it unlocked while it may grow.
    fn begin(&self) -> Result<Segment, RegistryError> {
        fs::create_dir_all(&self.dir).map_err(|e| io_error("cannot create", &self.dir, &e))?;
        let staged = self.dir.join(format!(
            ".{}-{}.new",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        ));
        let file = File::options()
            .create_new(true)
            .append(true)
            .open(&staged)
            .map_err(|e| io_error("cannot create", &staged, &e))?;
        if let Err(e) = file.lock() {
            let _ = fs::remove_file(&staged);
            return Err(io_error("cannot lock", &staged, &e));
        }
        let mut seq = segments(&self.dir)?.last().map_or(1, |(seq, _)| seq + 1);
        let named = loop {
            let path = self.path(seq);
            // A hard link fails when the name exists: another process took this number.
            match fs::hard_link(&staged, &path) {
                Ok(()) => break Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => seq += 1,
                Err(e) => break Err(io_error("cannot name", &path, &e)),
            }
        };
        let _ = fs::remove_file(&staged);
        named.map(|()| Segment { seq, file, len: 0 })
    }

    /// Appends `rows` (one write), unless the spool already holds `max_bytes`: then they are dropped and counted.
    pub(crate) fn append(&self, rows: &[OutcomeRow<'_>], max_bytes: u64) -> Result<Spooled, RegistryError> {
        if rows.is_empty() {
            return Ok(Spooled::default());
        }
        // The rows not yet indexed count, not the indexed start of the segment still being appended to (which a
        // limit below the segment size would otherwise fill for good).
        if self.backlog_bytes() >= max_bytes {
            return Ok(Spooled { rows: 0, dropped: rows.len() as u64 });
        }
        let mut buf = self.buf.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        buf.clear();
        let mut done = Spooled::default();
        for row in rows {
            if encode(&mut buf, row) {
                done.rows += 1;
            } else {
                done.dropped += 1;
            }
        }
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if writer.as_ref().is_some_and(|w| w.0.len >= SEGMENT_BYTES) {
            // Dropping the file releases its lock: readers take it as final.
            *writer = None;
        }
        if writer.is_none() {
            *writer = Some(SegmentSlot(self.begin()?));
        }
        let Some(SegmentSlot(segment)) = writer.as_mut() else {
            return Err(RegistryError::Io("kept predictions spool: no segment to append to".into()));
        };
        if let Err(e) = segment.file.write_all(&buf) {
            // Part of the write may have landed: a new segment starts clean, and the reader skips the cut record.
            let path = self.path(segment.seq);
            *writer = None;
            return Err(io_error("cannot append to", &path, &e));
        }
        segment.len += buf.len() as u64;
        Ok(done)
    }

    /// Closes the segment this process appends to (its lock released, it is final).
    pub(crate) fn close(&self) {
        *self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Reads up to `max_rows` rows from `from` on. Stops at the end of a segment another writer still holds; skips
    /// (with a warning) what cannot be read at the end of a final one.
    pub(crate) fn read(&self, from: Position, max_rows: usize) -> Result<Batch, RegistryError> {
        let all = segments(&self.dir)?;
        let mut from = from;
        // A segment still being written below the stored position: the position belongs to another spool (the
        // database restored or copied without this directory, or the directory deleted). Read this one from its
        // start; rows indexed before are kept once (`ON CONFLICT DO NOTHING`).
        if let Some(&(seq, _)) = all.iter().find(|&&(seq, _)| seq < from.segment && self.is_live(seq)) {
            tracing::warn!(
                directory = %self.dir.display(),
                stored = from.segment,
                found = seq,
                "the kept predictions spool does not match the position stored in the database; reading it from its \
                 start"
            );
            from = Position { segment: seq, offset: 0 };
        }
        let mut at = from;
        let mut rows = Vec::new();
        let mut bytes = Vec::new();
        for (i, &(seq, _)) in all.iter().enumerate().filter(|(_, (seq, _))| *seq >= from.segment) {
            if seq != at.segment {
                at = Position { segment: seq, offset: 0 };
            }
            let path = self.path(seq);
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("cannot open", &path, &e)),
            };
            // Whether a writer holds it (checked before reading: a segment found unlocked is final, all of it).
            let live = match file.try_lock_shared() {
                Ok(()) => false,
                Err(std::fs::TryLockError::WouldBlock) => true,
                Err(std::fs::TryLockError::Error(e)) => return Err(io_error("cannot lock", &path, &e)),
            };
            let size = file.metadata().map_err(|e| io_error("cannot read", &path, &e))?.len();
            let start = at.offset;
            let want = size.saturating_sub(start).min(READ_BYTES);
            bytes.clear();
            file.seek(SeekFrom::Start(at.offset)).map_err(|e| io_error("cannot read", &path, &e))?;
            (&mut file).take(want).read_to_end(&mut bytes).map_err(|e| io_error("cannot read", &path, &e))?;
            let mut used = 0;
            while rows.len() < max_rows {
                let Some((payload, length)) = record(&bytes[used..]) else { break };
                used += length;
                match decode(payload) {
                    Some(row) => rows.push(row),
                    None => tracing::warn!(segment = %path.display(), "skipped a kept prediction that does not decode"),
                }
            }
            at.offset += used as u64;
            if rows.len() >= max_rows || (start + want < size && used > 0) {
                // At the row budget, or at the read budget with more of the file to read.
                return Ok(Batch { rows, next: at, more: true });
            }
            if live {
                // What is left is a record still being written, or nothing yet.
                return Ok(Batch { rows, next: at, more: false });
            }
            if at.offset < size {
                tracing::warn!(
                    segment = %path.display(),
                    bytes = size - at.offset,
                    "skipped the unreadable end of a kept predictions segment (a crash while it was written?)"
                );
            }
            // Final and read to its end: move on when a later segment exists (a new writer's), else stay here.
            match all.get(i + 1) {
                Some(&(next, _)) => at = Position { segment: next, offset: 0 },
                None => {
                    at.offset = size;
                    return Ok(Batch { rows, next: at, more: false });
                }
            }
        }
        Ok(Batch { rows, next: at, more: false })
    }

    /// Whether a process still appends to segment `seq`.
    fn is_live(&self, seq: u64) -> bool {
        File::open(self.path(seq)).is_ok_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)))
    }

    /// Where the spool ends now: what a drain must reach.
    pub(crate) fn end(&self) -> Position {
        segments(&self.dir)
            .ok()
            .and_then(|all| all.last().copied())
            .map_or_else(Position::default, |(segment, offset)| Position { segment, offset })
    }

    /// Removes the segments wholly before `to` (never one a process still appends to).
    pub(crate) fn remove_before(&self, to: Position) {
        *self.indexed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = to;
        let Ok(all) = segments(&self.dir) else { return };
        for (seq, _) in all.into_iter().filter(|&(seq, _)| seq < to.segment && !self.is_live(seq)) {
            let path = self.path(seq);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(segment = %path.display(), error = %e, "cannot remove an indexed spool segment");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_its_row_bit_for_bit_and_a_flipped_byte_unmakes_it() {
        let proba = [0.1 + 0.2, f64::MIN_POSITIVE];
        let row = OutcomeRow {
            model: "mödel",
            request_id: "0193a1b2c3d4e5f6",
            row: 7,
            version: 3,
            at: -5,
            predicted: -1.234_567_890_123_456_7e-7,
            proba: Some(&proba),
        };
        let mut bytes = Vec::new();
        assert!(encode(&mut bytes, &row));
        let (payload, length) = record(&bytes).expect("a whole record");
        assert_eq!(length, bytes.len());
        assert_eq!(decode(payload).expect("decodes"), row.to_outcome());
        assert!(record(&bytes[..bytes.len() - 1]).is_none(), "cut short");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(record(&bytes).is_none(), "checksum");
        let long = "x".repeat(70_000);
        assert!(!encode(&mut Vec::new(), &OutcomeRow { request_id: &long, ..row }), "an id over 64 KiB is refused");
    }
}
