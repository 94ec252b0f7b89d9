//! The on-disk buffer of samples not yet accepted by the remote write receiver.
//!
//! A directory of numbered segment files (`00000000000000000001.seg`, ...) holding
//! records, plus a `cursor` file naming the first record not yet sent. A record is
//! one batch of encoded series (`proto::encode_series`), snappy-compressed, behind a
//! 12-byte header: payload length, sample count and CRC-32 of the payload (all
//! little-endian `u32`). Records are appended and synced to disk; a torn record at
//! the end (a crash mid-write) fails its CRC and is cut off when the buffer opens.
//! The cursor moves only after the receiver accepted a batch, and is written
//! atomically, so a restart resends at most the last batch in flight and never loses
//! one.
//!
//! The buffer is bounded: when its segments exceed the size limit, the oldest
//! segment is deleted and its unsent samples are counted as dropped
//! (`buffer_full`). An append is whole or nothing: a write that fails part-way is
//! cut back to the last whole record. When the disk is full, the oldest segments
//! are deleted (`disk_full`) until the new records fit; when nothing of the
//! buffer's is left to delete, the new records are dropped and counted instead,
//! and appends resume by themselves once there is space. Sending needs no space,
//! so delivery goes on meanwhile. A record that fails its CRC when it is read is
//! skipped and counted (`corrupt`), never a reason to stall.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER: u64 = 12;
/// The largest record accepted when reading (anything larger is corruption).
const MAX_RECORD: u32 = 64 * 1024 * 1024;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug, Clone)]
struct Record {
    offset: u64,
    /// Header included.
    len: u64,
    samples: u32,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    records: Vec<Record>,
}

/// Why samples were dropped unsent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The buffer reached its size limit; its oldest segment went.
    BufferFull,
    /// The disk (or a quota) had no room.
    DiskFull,
    /// A record on disk failed its check when read.
    Corrupt,
    /// Writing failed for another reason (an I/O error, permissions).
    WriteError,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::BufferFull,
        DropReason::DiskFull,
        DropReason::Corrupt,
        DropReason::WriteError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BufferFull => "buffer_full",
            DropReason::DiskFull => "disk_full",
            DropReason::Corrupt => "corrupt",
            DropReason::WriteError => "write_error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Up to a batch size of records, ready to send.
#[derive(Debug)]
pub struct Batch {
    /// The uncompressed `WriteRequest` body.
    pub body: Vec<u8>,
    pub samples: u64,
    /// Where the cursor goes once the batch is accepted.
    pub end: Position,
}

#[derive(Debug)]
pub struct Buffer {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    segments: VecDeque<Segment>,
    active: Option<File>,
    cursor: Position,
    pending: u64,
    /// Samples dropped unsent since it was opened, by [`DropReason`].
    dropped: [u64; 4],
    /// Appends are failing, and why (said once, and once when over).
    failing: Option<DropReason>,
    /// The cursor file could not be written (said once).
    cursor_unsaved: bool,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

impl Buffer {
    /// Opens (or creates) the buffer in `dir`, bounded to `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Buffer> {
        fs::create_dir_all(dir)?;
        // A crash while the cursor was saved can leave its temp file.
        crate::atomic_file::remove_leftovers(&dir.join("cursor"));
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let mut segments = VecDeque::new();
        for id in ids {
            segments.push_back(scan(&segment_path(dir, id), id)?);
        }
        let saved: Option<Position> = fs::read(dir.join("cursor"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let first = segments.front().map_or(1, |s| s.id);
        let mut cursor = match saved {
            Some(p) if p.segment >= first => p,
            _ => Position {
                segment: first,
                offset: 0,
            },
        };
        if let Some(seg) = segments.iter().find(|s| s.id == cursor.segment) {
            cursor.offset = cursor.offset.min(seg.bytes);
        }
        let pending = segments
            .iter()
            .flat_map(|s| s.records.iter().map(move |r| (s.id, r)))
            .filter(|(id, r)| (*id, r.offset) >= (cursor.segment, cursor.offset))
            .map(|(_, r)| u64::from(r.samples))
            .sum();
        Ok(Buffer {
            dir: dir.to_owned(),
            max_bytes,
            // Small enough that dropping one segment (the buffer is full, or
            // the disk) frees little; large enough that a file holds many
            // records: 2 MiB for the default 64 MiB.
            segment_max: (max_bytes / 32).clamp(32 * 1024, 4 * 1024 * 1024),
            segments,
            active: None,
            cursor,
            pending,
            dropped: [0; 4],
            failing: None,
            cursor_unsaved: false,
        })
    }

    /// Samples dropped unsent for `reason` since the buffer was opened.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// All samples dropped unsent since the buffer was opened.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Samples waiting to be sent.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Appends records of (sample count, compressed payload) and syncs them, all
    /// or none. On a full disk the oldest segments make room; when none is left
    /// to delete, or writing fails otherwise, the records are dropped and
    /// counted: the buffer stays whole either way.
    pub fn append(&mut self, records: &[(u32, Vec<u8>)]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let samples: u64 = records.iter().map(|(n, _)| u64::from(*n)).sum();
        loop {
            match self.write_records(records) {
                Ok(()) => {
                    if self.failing.take().is_some() {
                        tracing::info!(dir = %self.dir.display(), "remote write buffer: writable again; samples are buffered again");
                    }
                    return self.enforce_limit();
                }
                Err(e) if is_no_space(&e) => {
                    if self.failing.replace(DropReason::DiskFull) != Some(DropReason::DiskFull) {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "remote write buffer: the disk is full; the oldest samples make room, and the newest are dropped when nothing is left to drop");
                    }
                    if self.drop_oldest(DropReason::DiskFull) {
                        continue;
                    }
                    self.dropped[DropReason::DiskFull.index()] += samples;
                    return Ok(());
                }
                Err(e) => {
                    if self.failing.replace(DropReason::WriteError) != Some(DropReason::WriteError)
                    {
                        tracing::error!(dir = %self.dir.display(), error = %e, "remote write buffer: cannot write; new samples are dropped until it can");
                    }
                    self.dropped[DropReason::WriteError.index()] += samples;
                    return Ok(());
                }
            }
        }
    }

    /// Writes `records` at the end of the active segment (rolling to a new one
    /// when it is full) and syncs them; on failure, the segment is cut back to
    /// its last whole record.
    fn write_records(&mut self, records: &[(u32, Vec<u8>)]) -> io::Result<()> {
        let roll = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= self.segment_max);
        if roll || self.active.is_none() {
            let id = if roll {
                self.segments
                    .back()
                    .map_or(self.cursor.segment.max(1), |s| s.id + 1)
            } else {
                self.segments.back().map_or(1, |s| s.id)
            };
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(segment_path(&self.dir, id))?;
            if roll {
                self.segments.push_back(Segment {
                    id,
                    bytes: 0,
                    records: Vec::new(),
                });
            }
            self.active = Some(file);
        }
        let (Some(file), Some(segment)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("no active segment"));
        };
        let mut bytes = Vec::new();
        let mut added = Vec::new();
        let mut offset = segment.bytes;
        for (samples, payload) in records {
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&samples.to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            bytes.extend_from_slice(payload);
            let len = HEADER + payload.len() as u64;
            added.push(Record {
                offset,
                len,
                samples: *samples,
            });
            offset += len;
        }
        let written = file
            .seek(SeekFrom::Start(segment.bytes))
            .and_then(|_| file.write_all(&bytes))
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Cut back what reached the file. If even that fails, this segment
            // takes no more records (the next append starts a new one) and its
            // torn tail is cut when the buffer opens again.
            if file
                .set_len(segment.bytes)
                .and_then(|()| file.sync_data())
                .is_err()
            {
                segment.bytes = segment.bytes.max(self.segment_max);
            }
            self.active = None;
            return Err(e);
        }
        segment.bytes = offset;
        self.pending += added.iter().map(|r| u64::from(r.samples)).sum::<u64>();
        segment.records.extend(added);
        Ok(())
    }

    /// Drops the oldest segments while the buffer is over its limit.
    fn enforce_limit(&mut self) -> io::Result<()> {
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            self.drop_oldest(DropReason::BufferFull);
        }
        Ok(())
    }

    /// Deletes the oldest segment and counts its unsent samples as dropped for
    /// `reason`; false when there is none.
    fn drop_oldest(&mut self, reason: DropReason) -> bool {
        let Some(oldest) = self.segments.pop_front() else {
            return false;
        };
        let unsent: u64 = oldest
            .records
            .iter()
            .filter(|r| (oldest.id, r.offset) >= (self.cursor.segment, self.cursor.offset))
            .map(|r| u64::from(r.samples))
            .sum();
        self.pending -= unsent;
        self.dropped[reason.index()] += unsent;
        if unsent > 0 {
            tracing::warn!(
                samples = unsent,
                reason = reason.as_str(),
                "remote write buffer: oldest samples dropped"
            );
        }
        let _ = fs::remove_file(segment_path(&self.dir, oldest.id));
        if self.segments.is_empty() {
            // It was the one being appended to.
            self.active = None;
        }
        if self.cursor.segment <= oldest.id {
            self.cursor = Position {
                segment: self.segments.front().map_or(oldest.id + 1, |s| s.id),
                offset: 0,
            };
            // On a full disk the cursor may not be saved; a restart then starts
            // at the first segment left, which is the same place.
            if let Err(e) = self.save_cursor() {
                tracing::debug!(error = %e, "remote write buffer: cursor not saved");
            }
        }
        true
    }

    /// The next records from the cursor, up to `max_samples` (at least one
    /// record). A record that fails its CRC or does not decompress is skipped
    /// (the cursor moves past it) and counted as dropped (`corrupt`).
    pub fn peek(&mut self, max_samples: u64) -> io::Result<Option<Batch>> {
        loop {
            if let Some(found) = self.peek_once(max_samples)? {
                return Ok(found);
            }
        }
    }

    /// One pass of [`Buffer::peek`]: `None` when it skipped corrupt records
    /// only (the cursor moved past them; look again).
    fn peek_once(&mut self, max_samples: u64) -> io::Result<Option<Option<Batch>>> {
        let mut body = Vec::new();
        let mut samples = 0u64;
        let mut end = self.cursor;
        let mut decoder = snap::raw::Decoder::new();
        let mut corrupt = Vec::new();
        'segments: for segment in self.segments.iter().filter(|s| s.id >= self.cursor.segment) {
            let records: Vec<&Record> = segment
                .records
                .iter()
                .filter(|r| segment.id > self.cursor.segment || r.offset >= self.cursor.offset)
                .collect();
            if records.is_empty() {
                continue;
            }
            let mut file = File::open(segment_path(&self.dir, segment.id))?;
            for record in records {
                if samples > 0 && samples + u64::from(record.samples) > max_samples {
                    break 'segments;
                }
                let mut raw = vec![0; record.len as usize];
                file.seek(SeekFrom::Start(record.offset))?;
                file.read_exact(&mut raw)?;
                let payload = &raw[HEADER as usize..];
                let crc = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
                let plain = (crc32fast::hash(payload) == crc)
                    .then(|| decoder.decompress_vec(payload).ok())
                    .flatten();
                let next = Position {
                    segment: segment.id,
                    offset: record.offset + record.len,
                };
                match plain {
                    Some(plain) => {
                        body.extend_from_slice(&plain);
                        samples += u64::from(record.samples);
                    }
                    None => corrupt.push((u64::from(record.samples), next)),
                }
                end = next;
            }
        }
        if !corrupt.is_empty() {
            let lost: u64 = corrupt.iter().map(|(n, _)| n).sum();
            tracing::error!(samples = lost, dir = %self.dir.display(), "remote write buffer: records that fail their check were skipped");
            self.dropped[DropReason::Corrupt.index()] += lost;
            self.pending = self.pending.saturating_sub(lost);
            if samples == 0 {
                // Nothing good read: move past the bad ones now.
                if let Some((_, past)) = corrupt.last() {
                    self.cursor = *past;
                    let _ = self.save_cursor();
                }
                return Ok(None);
            }
        }
        // A batch's samples count only the good records; the bad ones among
        // them are passed with it.
        Ok(Some((samples > 0).then_some(Batch { body, samples, end })))
    }

    /// Moves the cursor past a batch the receiver accepted (or refused for good),
    /// and deletes the segments it has left behind.
    pub fn commit(&mut self, batch: &Batch) -> io::Result<()> {
        if batch.end <= self.cursor {
            return Ok(());
        }
        self.cursor = batch.end;
        self.pending = self.pending.saturating_sub(batch.samples);
        // Unsaved (a full disk), a restart sends the batch again: never lost.
        match self.save_cursor() {
            Ok(()) => self.cursor_unsaved = false,
            Err(e) => {
                if !std::mem::replace(&mut self.cursor_unsaved, true) {
                    tracing::warn!(error = %e, "remote write buffer: cannot save the position; after a restart the last batches are sent again");
                }
            }
        }
        while self.segments.len() > 1
            && self
                .segments
                .front()
                .is_some_and(|s| s.id < self.cursor.segment)
        {
            if let Some(done) = self.segments.pop_front() {
                let _ = fs::remove_file(segment_path(&self.dir, done.id));
            }
        }
        Ok(())
    }

    fn save_cursor(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec(&self.cursor).map_err(io::Error::other)?;
        crate::atomic_file::write_atomically(&self.dir.join("cursor"), &bytes)
    }
}

/// Whether an I/O error means there is no room (a full disk or a quota).
fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Reads a segment's records; a torn or corrupt tail is cut off.
fn scan(path: &Path, id: u64) -> io::Result<Segment> {
    let data = fs::read(path)?;
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset + HEADER as usize <= data.len() {
        let word = |i: usize| {
            u32::from_le_bytes([
                data[offset + i],
                data[offset + i + 1],
                data[offset + i + 2],
                data[offset + i + 3],
            ])
        };
        let (len, samples, crc) = (word(0), word(4), word(8));
        let start = offset + HEADER as usize;
        let end = start + len as usize;
        if len > MAX_RECORD || end > data.len() || crc32fast::hash(&data[start..end]) != crc {
            break;
        }
        records.push(Record {
            offset: offset as u64,
            len: HEADER + u64::from(len),
            samples,
        });
        offset = end;
    }
    if offset < data.len() {
        tracing::warn!(path = %path.display(), kept = offset, cut = data.len() - offset, "remote write buffer: torn record cut off");
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(offset as u64)?;
    }
    Ok(Segment {
        id,
        bytes: offset as u64,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32, fill: u8) -> (u32, Vec<u8>) {
        let plain = vec![fill; 100 * n as usize];
        (
            n,
            snap::raw::Encoder::new()
                .compress_vec(&plain)
                .expect("compress"),
        )
    }

    #[test]
    fn append_send_and_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::open(dir.path(), 1 << 20).expect("open");
        assert!(b.peek(10).expect("peek").is_none());
        b.append(&[record(3, 1), record(4, 2)]).expect("append");
        b.append(&[record(5, 3)]).expect("append");
        assert_eq!(b.pending(), 12);
        // A batch holds whole records, up to the limit (at least one).
        let batch = b.peek(8).expect("peek").expect("batch");
        assert_eq!(batch.samples, 7);
        assert_eq!(batch.body.len(), 700);
        assert!(batch.body[..300].iter().all(|x| *x == 1));
        b.commit(&batch).expect("commit");
        assert_eq!(b.pending(), 5);
        drop(b);

        // After a restart the cursor holds: only the unsent record is left.
        let mut b = Buffer::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(b.pending(), 5);
        let batch = b.peek(1).expect("peek").expect("batch");
        assert_eq!((batch.samples, batch.body[0]), (5, 3));
        b.commit(&batch).expect("commit");
        assert!(b.peek(100).expect("peek").is_none());
        b.append(&[record(2, 4)]).expect("append after reopen");
        assert_eq!(b.peek(100).expect("peek").expect("batch").body[0], 4);
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::open(dir.path(), 1 << 20).expect("open");
        b.append(&[record(3, 1), record(4, 2)]).expect("append");
        drop(b);
        let seg = segment_path(dir.path(), 1);
        let len = fs::metadata(&seg).expect("meta").len();
        // The crash came in the middle of the second record.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open")
            .set_len(len - 5)
            .expect("truncate");
        let mut b = Buffer::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(b.pending(), 3);
        b.append(&[record(1, 9)]).expect("append");
        let batch = b.peek(100).expect("peek").expect("batch");
        assert_eq!(batch.samples, 4);
        assert_eq!((batch.body[0], batch.body[300]), (1, 9));
    }

    #[test]
    fn a_record_gone_bad_on_disk_is_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::open(dir.path(), 1 << 20).expect("open");
        b.append(&[record(3, 1), record(4, 2), record(5, 3)])
            .expect("append");
        // A bit flips in the first record's payload after it was written.
        let seg = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).expect("read");
        bytes[HEADER as usize + 2] ^= 0x40;
        fs::write(&seg, &bytes).expect("write");
        let batch = b.peek(100).expect("peek").expect("batch");
        assert_eq!(batch.samples, 9, "the other two records");
        assert_eq!(batch.body[0], 2);
        assert_eq!(b.dropped(DropReason::Corrupt), 3);
        b.commit(&batch).expect("commit");
        assert_eq!(b.pending(), 0);
        // Only bad records ahead: skipped, then nothing.
        b.append(&[record(2, 7)]).expect("append");
        let mut bytes = fs::read(&seg).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&seg, &bytes).expect("write");
        assert!(b.peek(100).expect("peek").is_none());
        assert_eq!(b.dropped(DropReason::Corrupt), 5);
        b.append(&[record(1, 8)]).expect("append");
        assert_eq!(b.peek(100).expect("peek").expect("batch").body[0], 8);
    }

    #[test]
    fn full_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 256 KiB: 32 KiB segments. Incompressible records of about 10 KiB.
        let mut b = Buffer::open(dir.path(), 256 * 1024).expect("open");
        let noise = |seed: u32| -> (u32, Vec<u8>) {
            let mut x = seed.wrapping_mul(2_654_435_761).max(1);
            let bytes = (0..10_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect::<Vec<u8>>();
            (
                10,
                snap::raw::Encoder::new()
                    .compress_vec(&bytes)
                    .expect("compress"),
            )
        };
        for i in 0..60 {
            b.append(&[noise(i + 1)]).expect("append");
        }
        assert!(b.bytes() <= 256 * 1024 + 32 * 1024, "{}", b.bytes());
        let dropped = b.dropped(DropReason::BufferFull);
        assert!(dropped > 0);
        assert_eq!(b.dropped_total(), dropped);
        assert_eq!(
            b.pending() + dropped,
            600,
            "every sample is sent or counted"
        );
        // What is left is the newest, in order.
        let mut seen = 0;
        while let Some(batch) = b.peek(50).expect("peek") {
            seen += batch.samples;
            b.commit(&batch).expect("commit");
        }
        assert_eq!(seen + dropped, 600);
        let files = fs::read_dir(dir.path()).expect("dir").count();
        assert!(files <= 3, "sent segments are deleted ({files} files)");
    }
}
