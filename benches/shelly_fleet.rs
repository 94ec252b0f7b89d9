//! The plug hub under a fleet: N simulated plugs connected to a real
//! `shelly-server` at once, its resident memory, the round trip of
//! `GET /metrics/{id}` (an RPC over a plug's socket) at a fixed request rate, then
//! every plug notifying every second while `/plugs/metrics` is read every second
//! (hub CPU and memory, page size and render time).
//!
//! `cargo bench --bench shelly_fleet -- [PLUGS] [REQUESTS_PER_SECOND] [SECONDS]`
//! (defaults 10000, 100, 30). Prints figures; asserts nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/integration/shelly_sim.rs"]
mod shelly_sim;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge_metrics_exporter::net::client;
use shelly_sim::{SimPlug, plug_status};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() {
    let plugs = arg(0, 10_000) as usize;
    let rate = arg(1, 100);
    let seconds = arg(2, 30);
    raise_fd_limit();
    // SHELLY_FLEET_HUB="ws://...,http://...,PID" drives a hub started elsewhere
    // (under a profiler, say) instead of starting one.
    if let Ok(hub) = std::env::var("SHELLY_FLEET_HUB") {
        let parts: Vec<&str> = hub.split(',').collect();
        drive(
            parts[0].to_owned(),
            parts[1].to_owned(),
            parts[2].parse().unwrap(),
            plugs,
            rate,
            seconds,
        );
        return;
    }
    let mut server = Command::new(env!("CARGO_BIN_EXE_edge-metrics-exporter"))
        .args([
            "shelly-server",
            "--ws-port",
            "0",
            "--http-port",
            "0",
            "--ws-address",
            "127.0.0.1",
        ])
        .env(
            "EDGE_EXPORTER_LOG_LEVEL",
            "warn,edge_metrics_exporter::shelly_server=info,edge_metrics_exporter::shelly_server::hub=warn",
        )
        .env(
            "MALLOC_ARENA_MAX",
            std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "8".into()),
        )
        .stderr(Stdio::piped())
        .spawn()
        .expect("shelly-server");
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut find = |needle: &str| loop {
        let line = lines.next().expect("server log").expect("line");
        if let Some(i) = line.find(needle) {
            break line[i + needle.len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
        }
    };
    let ws = format!("ws://{}", find("shelly websocket listening on "));
    let api = format!("http://{}", find("shelly HTTP API listening on "));
    std::thread::spawn(move || for _ in lines {});
    drive(ws, api, server.id(), plugs, rate, seconds);
    let _ = server.kill();
    let _ = server.wait();
}

fn drive(ws: String, api: String, pid: u32, plugs: usize, rate: u64, seconds: u64) {
    let (idle_rss, _) = rss_kb(pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let started = Instant::now();
        let mut handles = Vec::with_capacity(plugs);
        for n in 0..plugs {
            let url = format!("{ws}/node-{n:05}");
            handles.push(tokio::spawn(async move {
                SimPlug::connect(&url, &format!("shellyplugsg3-{n:012x}"), plug_status(n as f64, 230.0, 0.01, 1.0)).await
            }));
        }
        let mut sims = Vec::with_capacity(plugs);
        for h in handles {
            sims.push(h.await.unwrap());
        }
        loop {
            let r = client::get(&format!("{api}/devices"), &[], Duration::from_secs(30), 64 << 20).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            if v["count"].as_u64() == Some(plugs as u64) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let connect_time = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss, hwm) = rss_kb(pid);
        println!("plugs connected: {plugs} in {:.1} s", connect_time.as_secs_f64());
        println!("hub resident memory: {:.1} MB with {plugs} plugs (idle before: {:.1} MB, peak {:.1} MB)",
            rss as f64 / 1024.0, idle_rss as f64 / 1024.0, hwm as f64 / 1024.0);

        // Paced requests to plugs spread over the fleet.
        let total = (rate * seconds) as usize;
        let gap = Duration::from_secs_f64(1.0 / rate as f64);
        let mut tasks = Vec::with_capacity(total);
        let begin = tokio::time::Instant::now();
        for i in 0..total {
            tokio::time::sleep_until(begin + gap * i as u32).await;
            let url = format!("{api}/metrics/node-{:05}", (i * 7919) % plugs);
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = client::get(&url, &[], Duration::from_secs(10), 1 << 20).await;
                (t.elapsed(), r.map(|r| r.status).unwrap_or(0))
            }));
        }
        let mut latencies = Vec::with_capacity(total);
        let mut failures = 0;
        for t in tasks {
            let (elapsed, status) = t.await.unwrap();
            if status != 200 {
                failures += 1;
            }
            latencies.push(elapsed);
        }
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
        println!("GET /metrics/{{id}} at {rate}/s for {seconds} s: {total} requests, {failures} failed");
        println!("  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms", pct(0.50), pct(0.90), pct(0.99), pct(1.0));
        let (rss, hwm) = rss_kb(pid);
        println!("hub resident memory after: {:.1} MB (peak {:.1} MB)", rss as f64 / 1024.0, hwm as f64 / 1024.0);

        // Every plug pushes a NotifyStatus every second (a power change), and a
        // scraper reads /plugs/metrics every second.
        let cpu_before = cpu_ticks(pid);
        let phase = Instant::now();
        let mut renders = Vec::new();
        let mut page_bytes = 0;
        let mut next = tokio::time::Instant::now();
        for second in 0..seconds {
            for (n, sim) in sims.iter().enumerate() {
                sim.update("switch:0", serde_json::json!({"apower": (n as u64 + second) as f64 * 0.5}));
            }
            let t = Instant::now();
            let r = client::get(&format!("{api}/plugs/metrics"), &[], Duration::from_secs(30), 256 << 20).await.unwrap();
            renders.push(t.elapsed());
            page_bytes = r.body.len();
            next += Duration::from_secs(1);
            tokio::time::sleep_until(next).await;
        }
        let cpu = (cpu_ticks(pid) - cpu_before) as f64 / ticks_per_second() / phase.elapsed().as_secs_f64();
        renders.sort();
        let at = |p: f64| renders[((renders.len() as f64 * p) as usize).min(renders.len() - 1)].as_secs_f64() * 1000.0;
        let (rss, hwm) = rss_kb(pid);
        println!("{plugs} plugs each notifying every second for {seconds} s:");
        println!("  hub CPU {:.1} % of one core, resident memory {:.1} MB (peak {:.1} MB)", cpu * 100.0, rss as f64 / 1024.0, hwm as f64 / 1024.0);
        println!("  GET /plugs/metrics every second: {} bytes, p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms", page_bytes, at(0.5), at(0.99), at(1.0));
        let saved = client::get(&format!("{api}/telemetry"), &[], Duration::from_secs(10), 1 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&saved.body);
        for line in text.lines().filter(|l| l.contains("event=\"rpc_")) {
            println!("  {line}");
        }
        drop(sims);
    });
}

/// User and system CPU ticks of a process.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    // After the command: state is field 3; utime and stime are 14 and 15.
    let get = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}
