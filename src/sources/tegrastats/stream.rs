//! Where tegrastats lines come from: one long-lived `tegrastats --interval <ms>`
//! child, or a recording replayed in a loop (`--demo`, tests, `tegrastats.replay`).
//!
//! [`run`] keeps the source going until cancelled and hands every line to a
//! callback. For the child it owns the whole life cycle: spawn (in its own process
//! group, optionally through `sudo -n`), read stdout with a bound on line length,
//! restart with exponential backoff when it exits, fails to start or goes silent,
//! and on every stop SIGTERM the group (so `sudo` forwards it), then SIGKILL, and
//! always reap: no zombies, no orphans. What the stream is doing is published in a
//! [`StreamStatus`] the collector reports.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Longest line accepted; longer ones are dropped and counted.
pub const MAX_LINE: usize = 64 * 1024;
/// First restart delay; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a stopping child gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);

/// What produces the lines.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Run tegrastats.
    Command {
        program: String,
        args: Vec<String>,
        /// Prefix `sudo -n` (tegrastats prints more fields as root).
        sudo: bool,
    },
    /// Replay these lines, one per interval, looping.
    Replay {
        name: String,
        lines: Arc<Vec<String>>,
    },
    /// Replay a recording file (read when the stream starts).
    ReplayFile { path: PathBuf },
}

/// The stream's state, as the collector and `/health` report it.
#[derive(Debug, Clone)]
pub enum StreamStatus {
    /// Started; no line yet.
    Starting,
    /// Lines are arriving.
    Running,
    /// The child is not running (did not start, exited, went silent); it is being
    /// restarted. The error says why and what to do.
    Down(StreamError),
}

/// Why the stream is down.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    #[error(
        "tegrastats not found: {0} is not installed or not on PATH (on a Jetson it comes with \
         nvidia-l4t-tools; elsewhere set tegrastats.replay, or run serve --demo)"
    )]
    NotFound(String),
    #[error("tegrastats cannot be run: {0}: permission denied")]
    PermissionDenied(String),
    #[error("tegrastats could not be started: {0}")]
    Spawn(Arc<std::io::Error>),
    #[error("tegrastats has no stdout")]
    NoStdout,
    #[error("tegrastats printed nothing for {0}s")]
    Silent(u64),
    #[error("reading tegrastats output failed: {0}")]
    Read(Arc<std::io::Error>),
    #[error("tegrastats exited{}", .0.map(|s| format!(" ({s})")).unwrap_or_default())]
    Exited(Option<std::process::ExitStatus>),
    #[error("the recording has no lines")]
    EmptyRecording,
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

/// Why a recording file cannot be replayed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{} has no tegrastats lines", .0.display())]
    NoLines(PathBuf),
}

/// Callbacks from the stream to its owner.
pub trait LineSink: Send + 'static {
    fn line(&mut self, line: &str);
    /// A line over [`MAX_LINE`] or not UTF-8.
    fn unreadable(&mut self);
    fn status(&mut self, status: StreamStatus);
    /// The child was started again after it stopped.
    fn restarted(&mut self);
}

/// Runs `source` until `cancel`, feeding `sink`.
pub async fn run(
    source: Source,
    interval: Duration,
    mut sink: impl LineSink,
    cancel: CancellationToken,
) {
    match source {
        Source::Replay { lines, .. } => replay(&lines, interval, &mut sink, &cancel).await,
        Source::ReplayFile { path } => match load_recording(&path) {
            Ok(lines) => replay(&lines, interval, &mut sink, &cancel).await,
            Err(e) => sink.status(StreamStatus::Down(e.into())),
        },
        Source::Command {
            program,
            args,
            sudo,
        } => supervise(&program, &args, sudo, interval, &mut sink, &cancel).await,
    }
}

async fn replay(
    lines: &[String],
    interval: Duration,
    sink: &mut impl LineSink,
    cancel: &CancellationToken,
) {
    if lines.is_empty() {
        sink.status(StreamStatus::Down(StreamError::EmptyRecording));
        return;
    }
    sink.status(StreamStatus::Running);
    for line in lines.iter().cycle() {
        sink.line(line);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Time without a line after which a running child counts as hung.
pub fn silence_limit(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(5))
}

async fn supervise(
    program: &str,
    args: &[String],
    sudo: bool,
    interval: Duration,
    sink: &mut impl LineSink,
    cancel: &CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    let mut first = true;
    loop {
        // Every start after the first is a restart, whether it succeeds or not.
        if !std::mem::replace(&mut first, false) {
            sink.restarted();
        }
        let outcome = match spawn(program, args, sudo, interval) {
            Ok(child) => {
                let (outcome, got_lines) = drive(child, interval, sink, cancel).await;
                if got_lines {
                    backoff = MIN_BACKOFF;
                }
                outcome
            }
            Err(e) => Some(e),
        };
        let Some(reason) = outcome else {
            return; // cancelled; the child is reaped
        };
        let message = format!("{reason}; restarting in {}s", backoff.as_secs());
        tracing::warn!(error = %message, "tegrastats is down");
        sink.status(StreamStatus::Down(reason));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn spawn(
    program: &str,
    args: &[String],
    sudo: bool,
    interval: Duration,
) -> Result<Child, StreamError> {
    let mut command = if sudo {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(program);
        c
    } else {
        Command::new(program)
    };
    command
        .arg("--interval")
        .arg(interval.as_millis().max(1).to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so a stop reaches sudo and tegrastats alike.
        .process_group(0);
    command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            StreamError::NotFound(if sudo { "sudo" } else { program }.to_owned())
        }
        std::io::ErrorKind::PermissionDenied => StreamError::PermissionDenied(program.to_owned()),
        _ => StreamError::Spawn(Arc::new(e)),
    })
}

/// Reads one child until it exits, hangs or is cancelled. Returns why it stopped
/// (`None` when cancelled) and whether it printed any line.
async fn drive(
    mut child: Child,
    interval: Duration,
    sink: &mut impl LineSink,
    cancel: &CancellationToken,
) -> (Option<StreamError>, bool) {
    let pid = child.id();
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(log_stderr(stderr));
    }
    let Some(stdout) = child.stdout.take() else {
        stop(&mut child, pid).await;
        return (Some(StreamError::NoStdout), false);
    };
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::with_capacity(1024);
    let mut got_lines = false;
    let limit = silence_limit(interval);
    let reason = loop {
        let read = tokio::select! {
            _ = cancel.cancelled() => {
                stop(&mut child, pid).await;
                return (None, got_lines);
            }
            read = tokio::time::timeout(limit, read_line_bounded(&mut reader, &mut buf, MAX_LINE)) => read,
        };
        match read {
            Err(_) => break Some(StreamError::Silent(limit.as_secs())),
            Ok(Err(e)) => break Some(StreamError::Read(Arc::new(e))),
            Ok(Ok(LineRead::Eof)) => break None,
            Ok(Ok(LineRead::TooLong)) => sink.unreadable(),
            Ok(Ok(LineRead::Line)) => match std::str::from_utf8(&buf) {
                Ok(line) => {
                    if !got_lines {
                        sink.status(StreamStatus::Running);
                    }
                    got_lines = true;
                    sink.line(line.trim_end_matches('\r'));
                }
                Err(_) => sink.unreadable(),
            },
        }
    };
    let status = stop(&mut child, pid).await;
    (
        Some(reason.unwrap_or(StreamError::Exited(status))),
        got_lines,
    )
}

/// Stops the child's process group (SIGTERM, then SIGKILL) and reaps it.
async fn stop(child: &mut Child, pid: Option<u32>) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // The group id is the child's pid (process_group(0)). sudo forwards SIGTERM
        // to tegrastats, which runs as root and cannot be signalled directly.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        if let Ok(Ok(status)) = tokio::time::timeout(TERM_GRACE, child.wait()).await {
            return Some(status);
        }
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.start_kill();
    child.wait().await.ok()
}

async fn log_stderr(stderr: tokio::process::ChildStderr) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    // A few lines say why tegrastats fails (permissions, sudo password); more is noise.
    for _ in 0..20 {
        match read_line_bounded(&mut reader, &mut buf, 1024).await {
            Ok(LineRead::Line) => {
                tracing::warn!(line = %String::from_utf8_lossy(&buf), "tegrastats wrote to stderr")
            }
            Ok(LineRead::TooLong) => {}
            _ => return,
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
}

/// The outcome of reading one line.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line (without its newline) is in the buffer.
    Line,
    /// The line was longer than the limit; it was skipped up to its newline.
    TooLong,
    Eof,
}

/// Reads up to the next `\n` into `buf` (cleared first) without ever holding more
/// than `max` bytes of one line.
pub async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if too_long {
                LineRead::TooLong
            } else if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = found.map_or(available.len(), |i| i + 1);
        reader.consume(used);
        if found.is_some() {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

/// Reads a recording: one tegrastats line per line; empty lines and `#` comments
/// (provenance notes) are skipped.
pub fn recording_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Loads a recording from a file, bounded in size.
pub fn load_recording(path: &std::path::Path) -> Result<Vec<String>, RecordingError> {
    const MAX_RECORDING: u64 = 16 * 1024 * 1024;
    let unreadable = |e| RecordingError::Read {
        path: path.to_owned(),
        source: Arc::new(e),
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if meta.len() > MAX_RECORDING {
        return Err(RecordingError::TooLarge {
            path: path.to_owned(),
            limit: MAX_RECORDING,
        });
    }
    let bytes = std::fs::read(path).map_err(unreadable)?;
    let lines = recording_lines(&String::from_utf8_lossy(&bytes));
    if lines.is_empty() {
        return Err(RecordingError::NoLines(path.to_owned()));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_lines() {
        let data = format!("short\n{}\nafter\nno newline at end", "x".repeat(100));
        let mut reader = BufReader::with_capacity(7, data.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_bounded(&mut reader, &mut buf, 20)
                .await
                .expect("read")
            {
                LineRead::Eof => break,
                LineRead::TooLong => got.push("<too long>".to_owned()),
                LineRead::Line => got.push(String::from_utf8_lossy(&buf).into_owned()),
            }
            assert!(buf.capacity() <= 64, "never holds much more than the limit");
        }
        assert_eq!(got, ["short", "<too long>", "after", "no newline at end"]);
    }

    #[test]
    fn recordings_skip_comments() {
        assert_eq!(
            recording_lines("# from x\n\nRAM 1/2MB\n  \n# y\nAPE 25\n"),
            ["RAM 1/2MB", "APE 25"]
        );
    }
}
