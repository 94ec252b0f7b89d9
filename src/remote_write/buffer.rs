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
//! segment is deleted and its unsent samples are counted as dropped.

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
    /// Samples dropped because the buffer was full, since it was opened.
    pub dropped: u64,
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
            // Small enough that dropping one segment frees little; large enough
            // that a file holds many records.
            segment_max: (max_bytes / 8).clamp(64 * 1024, 16 * 1024 * 1024),
            segments,
            active: None,
            cursor,
            pending,
            dropped: 0,
        })
    }

    /// Samples waiting to be sent.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Appends records of (sample count, compressed payload) and syncs them.
    pub fn append(&mut self, records: &[(u32, Vec<u8>)]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
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
            if roll {
                self.segments.push_back(Segment {
                    id,
                    bytes: 0,
                    records: Vec::new(),
                });
            }
            self.active = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(segment_path(&self.dir, id))?,
            );
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
        if let Err(e) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
            // A partial write is cut off at the next open; this handle is dropped so
            // the next append starts from a fresh one.
            self.active = None;
            return Err(e);
        }
        segment.bytes = offset;
        self.pending += added.iter().map(|r| u64::from(r.samples)).sum::<u64>();
        segment.records.extend(added);
        self.enforce_limit()
    }

    /// Drops the oldest segments while the buffer is over its limit.
    fn enforce_limit(&mut self) -> io::Result<()> {
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            let Some(oldest) = self.segments.pop_front() else {
                break;
            };
            let unsent: u64 = oldest
                .records
                .iter()
                .filter(|r| (oldest.id, r.offset) >= (self.cursor.segment, self.cursor.offset))
                .map(|r| u64::from(r.samples))
                .sum();
            self.pending -= unsent;
            self.dropped += unsent;
            if unsent > 0 {
                tracing::warn!(
                    samples = unsent,
                    "remote write buffer full: oldest samples dropped"
                );
            }
            let _ = fs::remove_file(segment_path(&self.dir, oldest.id));
            if self.cursor.segment <= oldest.id
                && let Some(next) = self.segments.front()
            {
                self.cursor = Position {
                    segment: next.id,
                    offset: 0,
                };
                self.save_cursor()?;
            }
        }
        Ok(())
    }

    /// The next records from the cursor, up to `max_samples` (at least one record).
    pub fn peek(&self, max_samples: u64) -> io::Result<Option<Batch>> {
        let mut body = Vec::new();
        let mut samples = 0u64;
        let mut end = self.cursor;
        let mut decoder = snap::raw::Decoder::new();
        for segment in self.segments.iter().filter(|s| s.id >= self.cursor.segment) {
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
                    return Ok(Some(Batch { body, samples, end }));
                }
                file.seek(SeekFrom::Start(record.offset + HEADER))?;
                let mut payload = vec![0; (record.len - HEADER) as usize];
                file.read_exact(&mut payload)?;
                let plain = decoder
                    .decompress_vec(&payload)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                body.extend_from_slice(&plain);
                samples += u64::from(record.samples);
                end = Position {
                    segment: segment.id,
                    offset: record.offset + record.len,
                };
            }
        }
        Ok((samples > 0).then_some(Batch { body, samples, end }))
    }

    /// Moves the cursor past a batch the receiver accepted (or refused for good),
    /// and deletes the segments it has left behind.
    pub fn commit(&mut self, batch: &Batch) -> io::Result<()> {
        if batch.end <= self.cursor {
            return Ok(());
        }
        self.cursor = batch.end;
        self.pending = self.pending.saturating_sub(batch.samples);
        self.save_cursor()?;
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
    fn full_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 256 KiB: 64 KiB segments. Incompressible records of about 10 KiB.
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
        assert!(b.bytes() <= 256 * 1024 + 64 * 1024, "{}", b.bytes());
        assert!(b.dropped > 0);
        assert_eq!(
            b.pending() + b.dropped,
            600,
            "every sample is sent or counted"
        );
        // What is left is the newest, in order.
        let mut seen = 0;
        while let Some(batch) = b.peek(50).expect("peek") {
            seen += batch.samples;
            b.commit(&batch).expect("commit");
        }
        assert_eq!(seen + b.dropped, 600);
        let files = fs::read_dir(dir.path()).expect("dir").count();
        assert!(files <= 3, "sent segments are deleted ({files} files)");
    }
}
