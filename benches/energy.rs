//! How close the energy layer's counter comes to the true energy, and what a
//! reading costs. A square wave of 5 W / 15 W (10 W mean) with edges that fall
//! between samples, and a 300 ms 30 W pulse over 5 W (an inference), sampled at
//! 1, 10 and 100 Hz. Two errors against the exact integral: of the whole span (what
//! a day's counter gets), and the worst of the 1 s publish windows (what the watts
//! gauge, the mean over an interval, shows).
//!
//! `cargo bench --bench energy` prints one line per wave and rate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use edge_metrics_exporter::energy::Meter;

/// A test waveform: its name, power in watts over time in seconds, its length and
/// its exact energy.
type Wave<'a> = (&'a str, &'a dyn Fn(f64) -> f64, f64, f64);

/// The exact energy of `f` over `a..b` (0.05 ms steps; the waves are piecewise
/// constant, so this is exact to far below the figures printed).
fn truth(f: &dyn Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let dt = 5e-5;
    let n = ((b - a) / dt).round() as u64;
    (0..n).map(|i| f(a + (i as f64 + 0.5) * dt) * dt).sum()
}

/// Integrates `f` sampled every `step` over `0..=len` seconds, publishing a window
/// every second (5 ms after the second, between samples). Returns the counter and
/// the worst relative error of the windows' energy.
fn integrate(f: &dyn Fn(f64) -> f64, step: Duration, len: f64) -> (f64, f64) {
    let t0 = Instant::now();
    let mut m = Meter::power(step, t0);
    let mut t = Duration::ZERO;
    let mut next_publish = 1.005;
    let mut opened = 0.0;
    let mut worst: f64 = 0.0;
    while t.as_secs_f64() <= len + 1e-9 {
        if t.as_secs_f64() > next_publish {
            let w = m.publish(t0 + Duration::from_secs_f64(next_publish));
            // The first window starts at the first reading.
            if opened > 0.0 {
                let exact = truth(f, opened, next_publish);
                // A window gets the segments that end in it: compare like with like.
                worst = worst.max(((w.joules - exact) / exact).abs());
            }
            opened = next_publish;
            next_publish += 1.0;
        }
        m.record(t0 + t, f(t.as_secs_f64()));
        t += step;
    }
    (m.joules(), worst)
}

fn main() {
    // Square wave, period 1 s, phase chosen so edges are not on sample instants.
    let square = |t: f64| {
        if ((t + 0.0137) % 1.0) < 0.5 {
            15.0
        } else {
            5.0
        }
    };
    // A slower square wave: period 4 s.
    let slow = |t: f64| {
        if ((t + 0.0137) % 4.0) < 2.0 {
            15.0
        } else {
            5.0
        }
    };
    // 5 W with one 300 ms pulse of 30 W starting at 2.0137 s.
    let pulse = |t: f64| {
        if (2.0137..2.3137).contains(&t) {
            30.0
        } else {
            5.0
        }
    };
    // (name, power over time, seconds, exact joules)
    let waves: [Wave; 3] = [
        ("square 1 s, 5/15 W, 60 s", &square, 60.0, 600.0),
        ("square 4 s, 5/15 W, 60 s", &slow, 60.0, 600.0),
        (
            "300 ms pulse of 30 W on 5 W, 5 s",
            &pulse,
            5.0,
            25.0 + 25.0 * 0.3,
        ),
    ];
    println!(
        "{:<36} {:>6} {:>10} {:>10} {:>8} {:>14}",
        "wave", "rate", "true J", "counted J", "error", "worst 1 s window"
    );
    for (name, f, len, exact) in waves {
        for hz in [1.0, 10.0, 100.0] {
            let step = Duration::from_secs_f64(1.0 / hz);
            let (got, worst) = integrate(f, step, len);
            println!(
                "{name:<36} {:>4} Hz {exact:>10.3} {got:>10.3} {:>7.2}% {:>13.1}%",
                hz,
                100.0 * (got - exact) / exact,
                100.0 * worst
            );
        }
    }
    // A run that brackets a 300 ms job drawing 30 W (over 5 W idle): opened when
    // the job starts, closed when it ends, at ten points spread over 0.1 s against the samples.
    println!(
        "\n{:<36} {:>6} {:>10} {:>22}",
        "run around a 300 ms job", "rate", "true J", "counted J (min..max)"
    );
    for hz in [1.0, 10.0, 100.0] {
        let step = Duration::from_secs_f64(1.0 / hz);
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for phase in 0..10 {
            // Start points spread over a sample period (and, at 1 Hz, over a tenth of it).
            let start = 2.003 + f64::from(phase) * 0.0093;
            let job = |t: f64| {
                if (start..start + 0.3).contains(&t) {
                    30.0
                } else {
                    5.0
                }
            };
            let t0 = Instant::now();
            let mut m = Meter::power(step, t0);
            let mut t = Duration::ZERO;
            let mut opened = false;
            let mut got = None;
            while t.as_secs_f64() <= 5.0 {
                let now = t.as_secs_f64();
                if !opened && now >= start {
                    m.open(1, t0 + Duration::from_secs_f64(start), None);
                    opened = true;
                }
                if opened && got.is_none() && now >= start + 0.3 {
                    got = m.close(1, t0 + Duration::from_secs_f64(start + 0.3));
                }
                m.record(t0 + t, job(now));
                t += step;
            }
            let j = got.map_or(0.0, |(w, _)| w.joules);
            lo = lo.min(j);
            hi = hi.max(j);
        }
        println!(
            "{:<36} {:>4} Hz {:>10.3} {:>10.3} .. {:<10.3}",
            "", hz, 9.0, lo, hi
        );
    }

    // Cost of one reading (record), with the publish window and one run open.
    let t0 = Instant::now();
    let mut m = Meter::power(Duration::from_millis(10), t0);
    let budget = edge_metrics_exporter::energy::TraceBudget::new(usize::MAX);
    m.open(
        1,
        t0,
        Some(edge_metrics_exporter::energy::Trace::new(
            t0, 1_000_000, budget,
        )),
    );
    let n = 10_000_000u32;
    let start = Instant::now();
    for i in 1..=n {
        m.record(
            t0 + Duration::from_micros(u64::from(i) * 10),
            f64::from(i % 7),
        );
    }
    let per = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!(
        "one reading: {per:.1} ns (publish window and one run open, with its trace of at most 1,000,000 points)"
    );
    std::hint::black_box(m.joules());

    // Memory of a run's trace at its cap: 1,000,000 readings kept.
    let rss = || {
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * 4096)
    };
    let before = rss();
    let t0 = Instant::now();
    let mut m = Meter::power(Duration::from_millis(10), t0);
    let budget = edge_metrics_exporter::energy::TraceBudget::new(4_000_000);
    m.open(
        2,
        t0,
        Some(edge_metrics_exporter::energy::Trace::new(
            t0, 1_000_000, budget,
        )),
    );
    for i in 1..=1_000_000u32 {
        m.record(
            t0 + Duration::from_micros(u64::from(i) * 100),
            f64::from(i % 13),
        );
    }
    let during = rss();
    let (_, trace) = m.close(2, t0 + Duration::from_secs(101)).unwrap();
    let trace = trace.unwrap();
    println!(
        "a trace of {} points (stride {}): {:.1} MB resident while open ({} bytes a point kept)",
        trace.points.len(),
        trace.stride,
        (during.saturating_sub(before)) as f64 / 1e6,
        std::mem::size_of::<(f32, f32)>()
    );
}
