//! The systemd notification protocol (`sd_notify`), for `Type=notify` units.
//!
//! When systemd starts a service with `NOTIFY_SOCKET` set, the service sends
//! datagrams such as `READY=1` to that socket. [`run`] sends `READY=1` once the
//! listeners are serving, `WATCHDOG=1` at half of `WatchdogSec=` while the async
//! runtime that answers requests and runs the collectors keeps running (so a
//! wedged runtime is restarted by systemd), `STATUS=` lines, and `STOPPING=1` at
//! shutdown. Without `NOTIFY_SOCKET` (a shell, a container) every call does
//! nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sends one notification; whether it was delivered (false when not under
/// systemd).
pub fn notify(message: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Some(addr) = socket_address(path.as_encoded_bytes()) else {
        return false;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    socket.send_to_addr(message.as_bytes(), &addr).is_ok()
}

/// `/run/systemd/notify` or `@name` (an abstract socket).
fn socket_address(path: &[u8]) -> Option<SocketAddr> {
    match path {
        [] => None,
        [b'@', name @ ..] => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name).ok()
        }
        _ => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path)).ok()
        }
    }
}

/// The keep-alive period systemd asked for (half of `WatchdogSec=`), if it asked
/// this process (`WATCHDOG_PID`, when set, must be ours).
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Says the service is ready, keeps the watchdog fed until `shutdown`, then says
/// it is stopping. `status` is shown by `systemctl status`.
pub async fn run(status: String, shutdown: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    notify(&format!("READY=1\nSTATUS={status}"));
    let period = watchdog_period();
    if let Some(period) = period {
        tracing::debug!(?period, "systemd watchdog: keep-alive");
    }
    loop {
        let tick = async {
            match period {
                Some(period) => tokio::time::sleep(period).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick => { notify("WATCHDOG=1"); }
        }
    }
    notify("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses() {
        assert!(socket_address(b"").is_none());
        let abstract_addr = socket_address(b"@sd-notify-test").expect("abstract");
        assert!(abstract_addr.as_pathname().is_none());
        let path = socket_address(b"/run/systemd/notify").expect("path");
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }
}
