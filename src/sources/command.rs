//! Running a board tool (`nvpmodel -q`, `vcgencmd pmic_read_adc`) for its output:
//! bounded in time and in bytes, stdin closed, never through a shell.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The most output kept; board tools print a few hundred bytes.
pub const MAX_OUTPUT: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{program} not found")]
    NotFound { program: String },
    #[error("could not start {program}: {message}")]
    Spawn { program: String, message: String },
    #[error("{program} did not finish within {limit:?}; stopped it")]
    Timeout { program: String, limit: Duration },
    #[error("{program} exited with {status}: {output}")]
    Failed {
        program: String,
        status: String,
        output: String,
    },
}

/// Runs `program args...` and returns its standard output (at most
/// [`MAX_OUTPUT`] bytes, invalid UTF-8 replaced). A program still running after
/// `limit` is killed and reaped.
pub fn run(program: &str, args: &[&str], limit: Duration) -> Result<String, CommandError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CommandError::NotFound {
                program: program.to_owned(),
            },
            _ => CommandError::Spawn {
                program: program.to_owned(),
                message: e.to_string(),
            },
        })?;
    // Read on a thread so a chatty program cannot block on a full pipe. The thread
    // ends when the pipe closes; after a timeout it is left to finish on its own.
    let reader = child.stdout.take().map(|stdout| {
        std::thread::spawn(move || {
            let mut stdout = stdout;
            let mut bytes = Vec::new();
            let _ = (&mut stdout).take(MAX_OUTPUT).read_to_end(&mut bytes);
            // Drain the rest so the program is not stopped by a closed pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            String::from_utf8_lossy(&bytes).into_owned()
        })
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Timeout {
                    program: program.to_owned(),
                    limit,
                });
            }
        }
    };
    let output = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    if status.success() {
        Ok(output)
    } else {
        Err(CommandError::Failed {
            program: program.to_owned(),
            status: status.to_string(),
            output: output.trim().chars().take(200).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_errors_and_limits() {
        let limit = Duration::from_secs(5);
        assert_eq!(run("echo", &["a", "b"], limit), Ok("a b\n".into()));
        assert!(matches!(
            run("/nonexistent/tool", &[], limit),
            Err(CommandError::NotFound { .. })
        ));
        let failed = run("sh", &["-c", "echo error=1 error_msg=nope; exit 3"], limit);
        assert!(
            matches!(&failed, Err(CommandError::Failed { status, output, .. })
                if status.contains('3') && output == "error=1 error_msg=nope"),
            "{failed:?}"
        );
        let started = Instant::now();
        assert!(matches!(
            run("sleep", &["30"], Duration::from_millis(200)),
            Err(CommandError::Timeout { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
        // More output than the cap: kept to the cap, the program not blocked.
        let big = run(
            "sh",
            &["-c", "head -c 200000 /dev/zero | tr '\\\\0' x"],
            limit,
        )
        .expect("big");
        assert_eq!(big.len() as u64, MAX_OUTPUT);
    }
}
