//! One power meter: timestamped readings in, a monotonic energy counter and
//! per-window mean and peak out.
//!
//! A reading is either a power (watts, integrated with the trapezoidal rule) or a
//! hardware energy counter (joules, whose increases are taken as they are). Times
//! are monotonic ([`Instant`]), so a wall-clock step changes nothing.
//!
//! The rules, all here and nowhere else:
//! * a segment between two readings further apart than [`GAP_PERIODS`] sample
//!   periods is not bridged: its energy is left out and the gap is counted;
//! * energy only grows: power below zero counts as zero, a hardware counter that
//!   goes down (a reset) adds nothing, a reading older than the last is ignored;
//! * a window (the publish interval, a measured run) opened between two readings
//!   gets the part of the next segment after its start, the power at its start
//!   taken on the straight line between the two readings.
//!
//! Each window also carries a bound on its integration error, from the readings
//! alone (`Window::bound`, derived in docs/energy.md): a segment from `a` to `b`
//! watts over `dt` can be off by at most `|b − a|·dt/2` when the power between
//! the two readings stays between them (a step, a ramp, any monotone change); the
//! part of a segment cut by a window's start by `|b − a|` times its length; the
//! time after the last reading by its length times how far the window's
//! readings strayed from that last one. A run's window may also keep its
//! readings as a trace ([`Trace`]).
//!
//! The meter knows nothing of metrics or sources: `energy` wires it up.

use std::time::{Duration, Instant};

/// A segment longer than this many sample periods is a gap.
pub const GAP_PERIODS: u32 = 3;

/// A counter's power is taken over at least this many of its updates (RAPL:
/// 10 ms), so its steps move it by a tenth at most.
pub const POWER_STEPS: u32 = 10;

/// What one window saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub opened: Instant,
    /// Energy in the window, joules.
    pub joules: f64,
    /// Time the energy was measured over (the window less its gaps), seconds.
    pub seconds: f64,
    /// Highest power reading in the window.
    pub peak: Option<f64>,
    /// Readings taken in the window.
    pub samples: u64,
    /// Gaps in the window, and the time they left out.
    pub gaps: u64,
    pub gap_seconds: f64,
    /// How far `joules` can be from the true energy over the measured time, from
    /// the readings themselves (see the module's header).
    pub bound: f64,
    /// Lowest reading in the window (for the bound of its tail).
    low: Option<f64>,
}

impl Window {
    fn new(opened: Instant) -> Self {
        Window {
            opened,
            joules: 0.0,
            seconds: 0.0,
            peak: None,
            samples: 0,
            gaps: 0,
            gap_seconds: 0.0,
            bound: 0.0,
            low: None,
        }
    }

    /// Energy over measured time, when any time was measured; to the microwatt,
    /// so a steady source reads as its value and not as rounding noise.
    pub fn mean_watts(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| micro(self.joules / self.seconds))
    }

    fn add(&mut self, joules: f64, seconds: f64) {
        self.joules += joules;
        self.seconds += seconds;
    }

    fn peak(&mut self, watts: f64) {
        self.peak = Some(self.peak.map_or(watts, |p| p.max(watts)));
        self.low = Some(self.low.map_or(watts, |l| l.min(watts)));
    }

    /// The bound of `seconds` after the last reading (`latest` watts), counted
    /// at that reading: as far as the window's readings strayed from it.
    fn tail_bound(&self, latest: f64, seconds: f64) -> f64 {
        let high = self.peak.unwrap_or(latest).max(latest);
        let low = self.low.unwrap_or(latest).min(latest);
        (high - latest).max(latest - low).max(0.0) * seconds
    }
}

/// The readings a measured run keeps: seconds since it opened and watts, at the
/// rate they came, halving that rate (every second one dropped, then every
/// other reading skipped) when the run's share is full.
#[derive(Debug)]
pub struct Trace {
    opened: Instant,
    points: Vec<(f32, f32)>,
    /// Every `stride`-th reading is kept.
    stride: u32,
    skipped: u32,
    cap: usize,
    budget: std::sync::Arc<TraceBudget>,
}

/// Trace points held by every open run together; past its limit each trace
/// that grows halves itself, so traces never hold more than this.
#[derive(Debug)]
pub struct TraceBudget {
    held: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl TraceBudget {
    pub fn new(limit: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(TraceBudget {
            held: std::sync::atomic::AtomicUsize::new(0),
            limit,
        })
    }

    /// Points held now.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Trace {
    /// A trace of a run opened at `opened`, of at most `cap` points.
    pub fn new(opened: Instant, cap: usize, budget: std::sync::Arc<TraceBudget>) -> Self {
        Trace {
            opened,
            points: Vec::new(),
            stride: 1,
            skipped: 0,
            cap: cap.max(2),
            budget,
        }
    }

    fn push(&mut self, at: Instant, watts: f64) {
        use std::sync::atomic::Ordering;
        if at < self.opened {
            return;
        }
        self.skipped += 1;
        if self.skipped < self.stride {
            return;
        }
        self.skipped = 0;
        if self.points.len() >= self.cap || self.budget.held() >= self.budget.limit {
            let before = self.points.len();
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.points.shrink_to_fit();
            self.budget
                .held
                .fetch_sub(before - self.points.len(), Ordering::Relaxed);
            self.stride = self.stride.saturating_mul(2);
        }
        self.points
            .push(((at - self.opened).as_secs_f64() as f32, watts as f32));
        self.budget.held.fetch_add(1, Ordering::Relaxed);
    }

    /// The points: seconds since the run opened, watts.
    pub fn points(&self) -> &[(f32, f32)] {
        &self.points
    }

    /// Every `stride`-th reading is in the trace (1: all of them).
    pub fn stride(&self) -> u32 {
        self.stride
    }

    /// A copy (for a run still open).
    pub fn snapshot(&self) -> TracePoints {
        TracePoints {
            points: self.points.clone(),
            stride: self.stride,
        }
    }

    /// Its points, given up (the budget no longer counts them).
    pub fn into_points(mut self) -> TracePoints {
        let points = std::mem::take(&mut self.points);
        self.budget
            .held
            .fetch_sub(points.len(), std::sync::atomic::Ordering::Relaxed);
        TracePoints {
            points,
            stride: self.stride,
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        self.budget
            .held
            .fetch_sub(self.points.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// A trace's points, owned: seconds since the run opened and watts, and the
/// stride they were kept at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracePoints {
    pub points: Vec<(f32, f32)>,
    pub stride: u32,
}

/// `watts` to the microwatt: a figure derived by division, without its noise.
fn micro(watts: f64) -> f64 {
    (watts * 1e6).round() / 1e6
}

/// What a reading is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Power,
    Counter,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    at: Instant,
    /// Watts (power mode) or the hardware counter in joules (counter mode).
    value: f64,
    /// How far from `at` the reading may really have been taken.
    slack: Duration,
}

/// A window kept open by its owner until it is taken or closed.
#[derive(Debug)]
struct Open {
    key: u64,
    window: Window,
    trace: Option<Trace>,
}

/// Key of the publish window, which [`Meter::publish`] takes and reopens.
const PUBLISH: u64 = 0;

/// The meter of one power series.
#[derive(Debug)]
pub struct Meter {
    mode: Mode,
    period: Duration,
    last: Option<Point>,
    /// The latest power reading (watts), in either mode.
    latest: Option<(Instant, f64)>,
    joules: f64,
    samples: u64,
    gaps: u64,
    gap_seconds: f64,
    windows: Vec<Open>,
    /// How often a hardware counter updates: a read sees the energy up to its
    /// last update, up to this much old.
    counter_step: Duration,
    /// The read a counter's power is taken from.
    power_base: Option<Point>,
}

impl Meter {
    /// A meter of power readings about every `period`.
    pub fn power(period: Duration, now: Instant) -> Self {
        Self::new(Mode::Power, period, now)
    }

    /// A meter of a hardware energy counter read about every `period`.
    pub fn counter(period: Duration, now: Instant) -> Self {
        Self::new(Mode::Counter, period, now)
    }

    fn new(mode: Mode, period: Duration, now: Instant) -> Self {
        Meter {
            mode,
            period,
            last: None,
            latest: None,
            joules: 0.0,
            samples: 0,
            gaps: 0,
            gap_seconds: 0.0,
            counter_step: Duration::ZERO,
            power_base: None,
            windows: vec![Open {
                key: PUBLISH,
                window: Window::new(now),
                trace: None,
            }],
        }
    }

    /// The source's sample period changed (a reload): gaps are judged on the new one.
    pub fn set_period(&mut self, period: Duration) {
        self.period = period;
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// A hardware counter updates every `step` (RAPL: about 1 ms): each end of
    /// a window may miss that much time at the power of then, which its bound
    /// says.
    pub fn set_counter_step(&mut self, step: Duration) {
        self.counter_step = step;
    }

    /// What a counter's update step can put at one end of a window.
    fn step_bound(&self, watts: f64) -> f64 {
        match self.mode {
            Mode::Counter => watts.max(0.0) * self.counter_step.as_secs_f64(),
            Mode::Power => 0.0,
        }
    }

    /// A power reading, in watts, taken at `at`.
    pub fn record(&mut self, at: Instant, watts: f64) {
        self.record_read(at, watts, Duration::ZERO);
    }

    /// A power reading, in watts, taken within `slack` of `at` (a read that
    /// took a while, or was preempted, is timed at its middle): the windows'
    /// bounds widen by the jump times that uncertainty.
    pub fn record_read(&mut self, at: Instant, watts: f64, slack: Duration) {
        debug_assert_eq!(self.mode, Mode::Power);
        if !watts.is_finite() || self.last.is_some_and(|p| at <= p.at) {
            return;
        }
        if let Some(prev) = self.last {
            let (a, b) = (prev.value.max(0.0), watts.max(0.0));
            let timing = (b - a).abs() * (prev.slack + slack).as_secs_f64();
            self.segment(prev.at, at, (b - a).abs(), timing, |from| {
                // Power at `from` on the line from a to b, then the trapezoid.
                let span = (at - prev.at).as_secs_f64();
                let start = a + (b - a) * ((from - prev.at).as_secs_f64() / span);
                (start + b) / 2.0 * (at - from).as_secs_f64()
            });
        }
        self.last = Some(Point {
            at,
            value: watts,
            slack,
        });
        self.reading(at, watts);
    }

    /// A hardware energy counter, in joules, read at `at`; `watts` is the power
    /// the hardware reports beside it, if any (else the power since an earlier
    /// read at least [`POWER_STEPS`] counter updates back is the reading: over
    /// shorter spans the counter's own steps would swing it by half or more).
    pub fn record_counter(&mut self, at: Instant, joules: f64, watts: Option<f64>) {
        debug_assert_eq!(self.mode, Mode::Counter);
        if !joules.is_finite() || self.last.is_some_and(|p| at <= p.at) {
            return;
        }
        let mut power = watts.filter(|w| w.is_finite());
        if let Some(prev) = self.last {
            let delta = joules - prev.value;
            if delta >= 0.0 {
                let span = (at - prev.at).as_secs_f64();
                // A hardware counter measured through any gap: always bridged.
                for open in &mut self.windows {
                    let from = open.window.opened.max(prev.at);
                    if from < at {
                        let share = (at - from).as_secs_f64() / span;
                        open.window.add(delta * share, (at - from).as_secs_f64());
                        // Cut by the window's start: the counter says how much
                        // in the whole segment, not where in it.
                        if share < 1.0 {
                            open.window.bound += delta * share.max(1.0 - share);
                        }
                    }
                }
                self.joules += delta;
            } else {
                // A counter that dropped: the power starts over from here.
                self.power_base = None;
            }
        }
        match self.power_base {
            Some(base) if at - base.at >= self.counter_step * POWER_STEPS => {
                let span = (at - base.at).as_secs_f64();
                power = power.or(Some(micro((joules - base.value).max(0.0) / span)));
                self.power_base = Some(Point {
                    at,
                    value: joules,
                    slack: Duration::ZERO,
                });
            }
            Some(_) => {}
            None => {
                self.power_base = Some(Point {
                    at,
                    value: joules,
                    slack: Duration::ZERO,
                })
            }
        }
        self.last = Some(Point {
            at,
            value: joules,
            slack: Duration::ZERO,
        });
        if let Some(w) = power {
            self.reading(at, w);
        } else {
            self.samples += 1;
            for open in &mut self.windows {
                open.window.samples += 1;
            }
        }
    }

    /// Counts a reading and its power in every window.
    fn reading(&mut self, at: Instant, watts: f64) {
        self.samples += 1;
        self.latest = Some((at, watts));
        for open in &mut self.windows {
            open.window.samples += 1;
            open.window.peak(watts);
            if let Some(trace) = &mut open.trace {
                trace.push(at, watts);
            }
        }
    }

    /// Adds the segment `start..end` to the counter and to each window the part
    /// after its opening (`energy_from(from)` is the energy of `from..end`), or
    /// counts it as a gap. `rise` is how far the power moved over it (|b − a|),
    /// for the windows' bounds, and `timing` what the readings' own timing
    /// uncertainty can add (joules).
    fn segment(
        &mut self,
        start: Instant,
        end: Instant,
        rise: f64,
        timing: f64,
        energy_from: impl Fn(Instant) -> f64,
    ) {
        let span = end - start;
        let gap = span > self.period * GAP_PERIODS;
        if gap {
            self.gaps += 1;
            self.gap_seconds += span.as_secs_f64();
        } else {
            self.joules += energy_from(start);
        }
        for open in &mut self.windows {
            let from = open.window.opened.max(start);
            if from >= end {
                continue;
            }
            if gap {
                open.window.gaps += 1;
                open.window.gap_seconds += (end - from).as_secs_f64();
            } else {
                let seconds = (end - from).as_secs_f64();
                open.window.add(energy_from(from), seconds);
                // Whole: the trapezoid is the middle of what the power between
                // the readings allows. Cut by the window's start: the
                // interpolated start can be off by the whole rise.
                open.window.bound += timing
                    + if from == start {
                        rise * seconds / 2.0
                    } else {
                        rise * seconds
                    };
            }
        }
    }

    /// The energy counter, joules.
    pub fn joules(&self) -> f64 {
        self.joules
    }

    /// The latest power reading and when it was taken.
    pub fn latest(&self) -> Option<(Instant, f64)> {
        self.latest
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Gaps left out since the meter started, and their length in seconds.
    pub fn gaps(&self) -> (u64, f64) {
        (self.gaps, self.gap_seconds)
    }

    /// Takes the publish window (since the last publish) and opens the next at `now`.
    pub fn publish(&mut self, now: Instant) -> Window {
        self.take(PUBLISH, now).unwrap_or_else(|| Window::new(now))
    }

    /// What the watts gauge shows for a published window of `interval`: the mean
    /// over it for a counter, or for a source sampled at least twice per interval;
    /// else (or when the window has no measured time) the latest reading.
    pub fn shown_watts(&self, window: &Window, interval: Duration) -> Option<f64> {
        let latest = self.latest.map(|(_, w)| w);
        match self.mode {
            Mode::Power if self.period * 2 > interval => latest,
            _ => window.mean_watts().or(latest),
        }
    }

    /// Opens a window under `key` (not 0) at `at`; an open one is replaced. With
    /// `trace`, it keeps its readings.
    pub fn open(&mut self, key: u64, at: Instant, mut trace: Option<Trace>) {
        debug_assert_ne!(key, PUBLISH);
        self.windows.retain(|o| o.key != key);
        // The trace begins with the reading the window opens on (a run's start
        // takes one just before), not with the next one.
        if let (Some(trace), Some((read, watts))) = (&mut trace, self.latest)
            && at >= read
            && at - read <= self.period * GAP_PERIODS
        {
            trace.push(at, watts);
        }
        let mut window = Window::new(at);
        window.bound += self.step_bound(self.latest.map_or(0.0, |(_, w)| w));
        self.windows.push(Open { key, window, trace });
    }

    /// The window under `key` so far, its tail up to `now` included (see [`Meter::close`]).
    pub fn peek(&self, key: u64, now: Instant) -> Option<Window> {
        let open = self.windows.iter().find(|o| o.key == key)?;
        let mut window = open.window.clone();
        self.add_tail(&mut window, now);
        Some(window)
    }

    /// A copy of the trace of the window under `key`.
    pub fn peek_trace(&self, key: u64) -> Option<TracePoints> {
        let open = self.windows.iter().find(|o| o.key == key)?;
        open.trace.as_ref().map(Trace::snapshot)
    }

    /// Closes the window under `key` at `now`, with its trace. The time since the
    /// last reading is counted at that reading's power (or, for a counter, the
    /// last segment's), if it is shorter than a gap: a run that ends between two
    /// readings still gets its last part.
    pub fn close(&mut self, key: u64, now: Instant) -> Option<(Window, Option<TracePoints>)> {
        let i = self.windows.iter().position(|o| o.key == key)?;
        let open = self.windows.swap_remove(i);
        let mut window = open.window;
        self.add_tail(&mut window, now);
        Some((window, open.trace.map(Trace::into_points)))
    }

    fn add_tail(&self, window: &mut Window, now: Instant) {
        let Some((mut at, watts)) = self.latest else {
            return;
        };
        // A counter's energy is counted up to its last read; its power may be
        // from an earlier one.
        if let (Mode::Counter, Some(last)) = (self.mode, self.last) {
            at = at.max(last.at);
        }
        window.bound += self.step_bound(watts);
        let from = window.opened.max(at);
        if now > from && now - at <= self.period * GAP_PERIODS {
            let seconds = (now - from).as_secs_f64();
            window.add(watts.max(0.0) * seconds, seconds);
            window.bound += window.tail_bound(watts.max(0.0), seconds);
        }
    }

    fn take(&mut self, key: u64, now: Instant) -> Option<Window> {
        let open = self.windows.iter_mut().find(|o| o.key == key)?;
        Some(std::mem::replace(&mut open.window, Window::new(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `f(t)` every `step` over `0..=len` and returns the meter.
    fn run(step: Duration, len: Duration, f: impl Fn(f64) -> f64) -> (Meter, Instant) {
        let t0 = Instant::now();
        let mut m = Meter::power(step, t0);
        let mut t = Duration::ZERO;
        while t <= len {
            m.record(t0 + t, f(t.as_secs_f64()));
            t += step;
        }
        (m, t0)
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance * b.abs().max(1e-9)
    }

    #[test]
    fn constant_power_integrates_exactly() {
        let (m, _) = run(10 * MS, Duration::from_secs(10), |_| 10.0);
        assert!(close(m.joules(), 100.0, 1e-9), "{}", m.joules());
        assert_eq!(m.gaps(), (0, 0.0));
    }

    #[test]
    fn ramp_is_exact_with_trapezoids() {
        // P = 2t W over 0..=5 s: 25 J exactly, even sampled coarsely.
        let (m, _) = run(Duration::from_millis(500), Duration::from_secs(5), |t| {
            2.0 * t
        });
        assert!(close(m.joules(), 25.0, 1e-9), "{}", m.joules());
    }

    #[test]
    fn square_wave_error_shrinks_with_rate() {
        // 5 W / 15 W, period 1 s (half 0.5 s, phase-shifted so edges fall between
        // samples): 10 W mean, 100 J over 10 s.
        let square = |t: f64| if ((t + 0.013) % 1.0) < 0.5 { 15.0 } else { 5.0 };
        let (slow, _) = run(Duration::from_millis(100), Duration::from_secs(10), square);
        let (fast, _) = run(Duration::from_millis(10), Duration::from_secs(10), square);
        assert!(
            close(slow.joules(), 100.0, 0.05),
            "10 Hz: {}",
            slow.joules()
        );
        assert!(
            close(fast.joules(), 100.0, 0.005),
            "100 Hz: {}",
            fast.joules()
        );
    }

    #[test]
    fn gaps_are_left_out_and_counted() {
        let t0 = Instant::now();
        let mut m = Meter::power(100 * MS, t0);
        m.record(t0, 10.0);
        m.record(t0 + 100 * MS, 10.0); // 1 J
        m.record(t0 + 250 * MS, 10.0); // 1.5 periods: bridged, 1.5 J
        m.record(t0 + 2250 * MS, 10.0); // 20 periods: a gap
        m.record(t0 + 2350 * MS, 10.0); // 1 J
        assert!(close(m.joules(), 3.5, 1e-9), "{}", m.joules());
        assert_eq!(m.gaps().0, 1);
        assert!(close(m.gaps().1, 2.0, 1e-9));
        // Exactly 3 periods is still bridged.
        m.record(t0 + 2650 * MS, 10.0);
        assert_eq!(m.gaps().0, 1);
    }

    #[test]
    fn restart_and_disorder_never_lower_the_counter() {
        let t0 = Instant::now();
        let mut m = Meter::power(100 * MS, t0);
        m.record(t0, 5.0);
        m.record(t0 + 100 * MS, 5.0);
        let before = m.joules();
        // A reading from before the last one, a non-finite one, a negative one.
        m.record(t0 + 50 * MS, 1000.0);
        m.record(t0 + 150 * MS, f64::NAN);
        assert_eq!(m.joules(), before);
        m.record(t0 + 200 * MS, -40.0);
        assert!(m.joules() >= before);
        // The source restarts after 5 s: a gap, then counting resumes.
        m.record(t0 + 5200 * MS, 5.0);
        m.record(t0 + 5300 * MS, 5.0);
        assert!(m.joules() > before);
        assert_eq!(m.gaps().0, 1);
    }

    #[test]
    fn counter_mode_takes_increases_and_skips_resets() {
        let t0 = Instant::now();
        let mut m = Meter::counter(Duration::from_secs(1), t0);
        m.record_counter(t0, 1000.0, None);
        m.record_counter(t0 + Duration::from_secs(1), 1020.0, None);
        m.record_counter(t0 + Duration::from_secs(2), 5.0, None); // reset
        m.record_counter(t0 + Duration::from_secs(12), 105.0, None); // long, but measured
        assert!(close(m.joules(), 120.0, 1e-9), "{}", m.joules());
        let w = m.publish(t0 + Duration::from_secs(12));
        assert_eq!(w.peak, Some(20.0));
        assert!(close(
            m.shown_watts(&w, Duration::from_secs(1)).unwrap_or(0.0),
            120.0 / 11.0,
            1e-6
        ));
    }

    #[test]
    fn publish_window_mean_and_peak() {
        let t0 = Instant::now();
        let mut m = Meter::power(100 * MS, t0);
        // 10 W, a 200 ms 30 W pulse, then 10 W again, sampled at 10 Hz for 1 s.
        for i in 0..=10u32 {
            let w = if (4..6).contains(&i) { 30.0 } else { 10.0 };
            m.record(t0 + i * 100 * MS, w);
        }
        let w = m.publish(t0 + 1000 * MS);
        assert_eq!(w.peak, Some(30.0));
        assert_eq!(w.samples, 11);
        // Trapezoids: 10 W for 1 s plus the pulse (20 W extra over 0.2 s, edges ramped).
        assert!(close(w.joules, 10.0 + 20.0 * 0.2, 1e-9), "{}", w.joules);
        let second = Duration::from_secs(1);
        assert!(close(m.shown_watts(&w, second).unwrap_or(0.0), 14.0, 1e-9));
        // Published every 100 ms (the sample period), it shows the reading.
        assert_eq!(m.shown_watts(&w, 100 * MS), Some(10.0));
        // The next window starts empty; one reading shows as the latest value.
        m.record(t0 + 1100 * MS, 12.0);
        let next = m.publish(t0 + 1150 * MS);
        assert_eq!(next.samples, 1);
        assert_eq!(next.peak, Some(12.0));
        // 10 W → 12 W over the 100 ms segment after the publish.
        assert!(close(
            m.shown_watts(&next, second).unwrap_or(0.0),
            11.0,
            1e-9
        ));
    }

    #[test]
    fn a_window_opened_between_readings_gets_its_share() {
        let t0 = Instant::now();
        let mut m = Meter::power(Duration::from_secs(1), t0);
        m.record(t0, 0.0);
        m.open(7, t0 + 500 * MS, None);
        // Ramp 0 → 20 W over 1 s: the window gets 0.5 s from 10 W to 20 W = 7.5 J.
        m.record(t0 + 1000 * MS, 20.0);
        let so_far = m.peek(7, t0 + 1000 * MS).expect("open");
        assert!(close(so_far.joules, 7.5, 1e-9), "{}", so_far.joules);
        // Closing 0.4 s after the last reading holds its 20 W: 8 J more.
        let (w, _) = m.close(7, t0 + 1400 * MS).expect("open");
        assert!(close(w.joules, 15.5, 1e-9), "{}", w.joules);
        assert!(close(w.seconds, 0.9, 1e-9));
        assert!(m.close(7, t0 + 1500 * MS).is_none());
    }
}
