//! The `ina2xx` collector: the INA260/INA226/INA219 sensors listed under
//! `ina2xx:` (default on `raspberry_pi`: one INA260 named `board` at 0x40 on bus 1).
//!
//! Each sensor is read through the kernel's hwmon node when the `ina2xx` driver owns
//! the chip (raw access would fail with EBUSY), else over `/dev/i2c-N` (under the
//! root path) with the driver in `sources::ina2xx`, which checks the chip's ids
//! before trusting it. A sensor that does not answer is "no data"; a wrong chip, a
//! bus without permission or a failed read is a failure. Flat ids are
//! `board_power_<sensor>_watts` (with `…_joules_total` and `…_peak_watts`),
//! `board_voltage_<sensor>_volts` and `board_current_<sensor>_amps`: apart from the
//! Shelly collector's `power_*` ids.
//!
//! The sensors are read by a sampler thread every `power.sample_interval` (no
//! faster than the chip converts), so a slow or failing bus never stalls another
//! collector; the collector publishes what the sampler gathered.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use embedded_hal::i2c::{ErrorKind, I2c, NoAcknowledgeSource};

use super::jetson_rails::{push_sampler_counts, sampler_result};
use super::{BuildContext, CollectError, Collector};
use crate::config::Ina2xxSensor;
use crate::energy::families;
pub use crate::energy::sampler::Problem;
use crate::energy::sampler::{Probe, Reading, Sampled};
use crate::paths::Paths;
use crate::sample::{Family, Sample, SampleSink};
use crate::sources::ina2xx::{self, Ina2xx, Measurement};

pub const NAME: &str = "ina2xx";

static VOLTAGE: Family = Family::gauge(
    "board_voltage_volts",
    "Bus voltage measured by an INA2xx sensor",
    "volts",
);
static CURRENT: Family = Family::gauge(
    "board_current_amps",
    "Current measured by an INA2xx sensor (negative when it flows backwards through the shunt)",
    "amps",
);

/// Opens an I2C bus by number: `/dev/i2c-N` in the daemon, a mock in tests.
pub trait Opener: Send + 'static {
    type Bus: I2c + Send + 'static;
    fn open(&self, bus: u8) -> Result<Self::Bus, Problem>;
}

/// `/dev/i2c-N` under the root path, through `linux-embedded-hal`.
#[derive(Debug, Clone)]
pub struct DevOpener {
    pub paths: Paths,
}

impl Opener for DevOpener {
    type Bus = linux_embedded_hal::I2cdev;

    fn open(&self, bus: u8) -> Result<Self::Bus, Problem> {
        let path = self.paths.root(&format!("dev/i2c-{bus}"));
        linux_embedded_hal::I2cdev::new(&path).map_err(|e| {
            let io = match &e {
                linux_embedded_hal::i2cdev::linux::LinuxI2CError::Io(io) => Some(io.kind()),
                linux_embedded_hal::i2cdev::linux::LinuxI2CError::Errno(_) => None,
            };
            match io {
                Some(std::io::ErrorKind::NotFound) => Problem::Absent(format!(
                    "{} does not exist: enable the I2C bus (raspi-config, or dtparam=i2c_arm=on) and load i2c-dev",
                    path.display()
                )),
                Some(std::io::ErrorKind::PermissionDenied) => Problem::Failed(format!(
                    "permission denied opening {}: add the exporter's user to the i2c group",
                    path.display()
                )),
                _ => Problem::Failed(format!("opening {}: {e}", path.display())),
            }
        })
    }
}

enum Access<B> {
    /// Not opened yet, or dropped after an error: probed again next time.
    Closed,
    Hwmon(PathBuf),
    I2c(Ina2xx<B>),
}

impl<B> Access<B> {
    fn describe(&self) -> &'static str {
        match self {
            Access::Closed => "closed",
            Access::Hwmon(_) => "hwmon",
            Access::I2c(_) => "i2c",
        }
    }
}

struct SensorState<B> {
    config: Ina2xxSensor,
    access: Access<B>,
    /// `board_power_<name>_watts`, built once.
    watts_id: Arc<str>,
    label: Arc<str>,
    /// Through hwmon, the driver's `update_interval`: the chip converts at the
    /// driver's settings, not the config's.
    hwmon_update: Option<std::time::Duration>,
}

/// Reads every configured sensor once per call: what the sampler runs.
pub struct Ina2xxProbe<O: Opener = DevOpener> {
    paths: Paths,
    opener: O,
    sensors: Vec<SensorState<O::Bus>>,
}

impl<O: Opener> std::fmt::Debug for Ina2xxProbe<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ina2xxProbe")
            .field(
                "sensors",
                &self
                    .sensors
                    .iter()
                    .map(|s| (&s.config.name, s.access.describe()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Ina2xxProbe<DevOpener> {
    pub fn new(paths: Paths, sensors: Vec<Ina2xxSensor>) -> Self {
        Ina2xxProbe::with_opener(paths.clone(), DevOpener { paths }, sensors)
    }
}

impl<O: Opener> Ina2xxProbe<O> {
    pub fn with_opener(paths: Paths, opener: O, sensors: Vec<Ina2xxSensor>) -> Self {
        Ina2xxProbe {
            paths,
            opener,
            sensors: sensors
                .into_iter()
                .map(|config| SensorState {
                    watts_id: format!("board_power_{}_watts", config.name).into(),
                    label: config.name.as_str().into(),
                    config,
                    access: Access::Closed,
                    hwmon_update: None,
                })
                .collect(),
        }
    }
}

/// How often `sensors` are read: `sample_interval`, but no faster than the
/// slowest chip has a new reading.
pub fn sample_period(sensors: &[Ina2xxSensor], sample_interval: Duration) -> Duration {
    sensors
        .iter()
        .map(|s| s.settings.update_period())
        .fold(sample_interval, Duration::max)
}

impl<O: Opener> Probe for Ina2xxProbe<O> {
    fn min_period(&self) -> Duration {
        self.sensors
            .iter()
            .map(|s| match (&s.access, s.hwmon_update) {
                (Access::Hwmon(_), Some(update)) => update,
                _ => s.config.settings.update_period(),
            })
            .max()
            .unwrap_or_default()
    }

    fn read(&mut self, out: &mut Vec<Reading>, problems: &mut Vec<Problem>) {
        for state in &mut self.sensors {
            match read_one(&self.paths, &self.opener, state) {
                Ok(m) => out.push(Reading {
                    watts_id: state.watts_id.clone(),
                    labels: vec![("sensor", state.label.clone())],
                    families: &families::INA2XX,
                    watts: Some(m.power_watts),
                    volts: Some(m.bus_volts),
                    amps: Some(m.current_amps),
                    joules: None,
                }),
                Err(p) => problems.push(p),
            }
        }
    }
}

/// The sensors, sampled in the background.
#[derive(Debug)]
pub struct Ina2xxCollector {
    sampled: Sampled,
}

impl Ina2xxCollector {
    /// Starts sampling `probe` every `period` (every `fast` while a run is
    /// open, no faster than the chips convert); `interval` is the publish
    /// interval.
    pub fn start<O: Opener>(
        probe: Ina2xxProbe<O>,
        period: Duration,
        fast: Duration,
        interval: Duration,
        ctx: &BuildContext,
    ) -> Self
    where
        O::Bus: Send,
    {
        Ina2xxCollector {
            sampled: ctx.sampled(probe, period, fast, interval),
        }
    }
}

/// Where a sensor is, for messages: `board (ina260 at 0x40 on bus 1)`.
fn place(s: &Ina2xxSensor) -> String {
    let chip = match s.settings.chip {
        ina2xx::Chip::Ina260 => "ina260",
        ina2xx::Chip::Ina226 { .. } => "ina226",
        ina2xx::Chip::Ina219 { .. } => "ina219",
    };
    format!("{} ({chip} at {:#04x} on bus {})", s.name, s.address, s.bus)
}

fn read_one<O: Opener>(
    paths: &Paths,
    opener: &O,
    state: &mut SensorState<O::Bus>,
) -> Result<Measurement, Problem> {
    let config = &state.config;
    if let Some(dir) = ina2xx::hwmon_dir(&paths.sys(""), config.bus, config.address) {
        if !matches!(&state.access, Access::Hwmon(d) if *d == dir) {
            tracing::info!(sensor = %place(config), dir = %dir.display(), "reading through the kernel's hwmon driver");
            state.access = Access::Hwmon(dir.clone());
            state.hwmon_update = crate::paths::read_i64(&dir.join("update_interval"))
                .and_then(|ms| u64::try_from(ms).ok())
                .filter(|ms| *ms > 0)
                .map(std::time::Duration::from_millis);
        }
        return ina2xx::read_hwmon(&dir).ok_or_else(|| {
            Problem::Failed(format!(
                "{}: {} has no readable in1_input and curr1_input",
                place(config),
                dir.display()
            ))
        });
    }
    if !matches!(state.access, Access::I2c(_)) {
        let bus = opener.open(config.bus).map_err(|p| match p {
            Problem::Absent(m) => Problem::Absent(format!("{}: {m}", place(config))),
            Problem::Failed(m) => Problem::Failed(format!("{}: {m}", place(config))),
        })?;
        let ina =
            Ina2xx::new(bus, config.address, config.settings).map_err(|e| describe(config, e))?;
        tracing::info!(sensor = %place(config), "reading over I2C");
        state.access = Access::I2c(ina);
    }
    let Access::I2c(ina) = &mut state.access else {
        unreachable!("opened above")
    };
    ina.read().map_err(|e| {
        state.access = Access::Closed;
        describe(&state.config, e)
    })
}

fn describe<E: embedded_hal::i2c::Error>(config: &Ina2xxSensor, e: ina2xx::Error<E>) -> Problem {
    let at = place(config);
    match e {
        ina2xx::Error::Bus(e) => match e.kind() {
            ErrorKind::NoAcknowledge(
                NoAcknowledgeSource::Address | NoAcknowledgeSource::Unknown,
            ) => Problem::Absent(format!("{at}: no chip answers at the address")),
            kind => {
                let text = format!("{e:?}");
                if text.contains("EBUSY")
                    || text.contains("Errno(16)")
                    || text.contains("os error 16")
                {
                    Problem::Failed(format!(
                        "{at}: the address is busy: a kernel driver owns it but made no hwmon node"
                    ))
                } else {
                    Problem::Failed(format!("{at}: I2C transfer failed ({kind:?}): {text}"))
                }
            }
        },
        other => Problem::Failed(format!("{at}: {other}")),
    }
}

impl Collector for Ina2xxCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let pushed = self.sampled.push(out);
        // Each sensor's bus voltage and current, beside the power.
        for r in &pushed.readings {
            let Some((_, name)) = r.labels.first() else {
                continue;
            };
            out.push_some(r.volts, |v| {
                Sample::with_id(format!("board_voltage_{name}_volts"), &VOLTAGE, v)
                    .label("sensor", name.clone())
            });
            out.push_some(r.amps, |a| {
                Sample::with_id(format!("board_current_{name}_amps"), &CURRENT, a)
                    .label("sensor", name.clone())
            });
        }
        let problems = pushed.problems;
        push_sampler_counts(out, NAME, &self.sampled);
        // Failures first, then what is absent, in the order the sensors are listed.
        let (failed, absent): (Vec<Problem>, Vec<Problem>) = problems
            .into_iter()
            .partition(|p| matches!(p, Problem::Failed(_)));
        sampler_result(failed.into_iter().chain(absent).collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    struct MockOpener(Option<Mock>);

    impl Opener for MockOpener {
        type Bus = Mock;
        fn open(&self, bus: u8) -> Result<Mock, Problem> {
            self.0
                .clone()
                .ok_or_else(|| Problem::Absent(format!("no bus {bus}")))
        }
    }

    pub(crate) fn sensor(name: &str) -> Ina2xxSensor {
        Ina2xxSensor {
            name: name.into(),
            ..Ina2xxSensor::raspberry_pi_default()
        }
    }

    fn read(reg: u8, value: u16) -> Transaction {
        Transaction::write_read(0x40, vec![reg], value.to_be_bytes().to_vec())
    }

    /// (watts id, watts, volts, amps) of one sensor's reading.
    type Values = (String, f64, f64, f64);

    /// One read of the probe: the values of each sensor read, and the problems.
    fn read_once<O: Opener>(probe: &mut Ina2xxProbe<O>) -> (Vec<Values>, Vec<Problem>) {
        let (mut out, mut problems) = (Vec::new(), Vec::new());
        probe.read(&mut out, &mut problems);
        let values = out
            .iter()
            .map(|r| {
                (
                    r.watts_id.to_string(),
                    r.watts.unwrap_or(f64::NAN),
                    r.volts.unwrap_or(f64::NAN),
                    r.amps.unwrap_or(f64::NAN),
                )
            })
            .collect();
        (values, problems)
    }

    pub(crate) fn no_sysfs() -> Paths {
        Paths {
            sysfs: "/nonexistent-sysfs".into(),
            ..Paths::default()
        }
    }

    #[test]
    fn raw_i2c_readings_become_board_samples() {
        let mut bus = Mock::new(&[
            read(0xFE, 0x5449),
            read(0xFF, 0x2270),
            Transaction::write(0x40, vec![0x00, 0x65, 0x27]),
            read(0x01, 800),    // 1.0 A
            read(0x02, 4000),   // 5.0 V
            read(0x03, 500),    // 5.0 W
            read(0x01, 0xFFF8), // -10 mA: current flowing back
            read(0x02, 4000),
            read(0x03, 0),
        ]);
        let mut c = Ina2xxProbe::with_opener(
            no_sysfs(),
            MockOpener(Some(bus.clone())),
            vec![sensor("board")],
        );
        let (values, problems) = read_once(&mut c);
        assert_eq!(problems, []);
        assert_eq!(
            values,
            [("board_power_board_watts".to_owned(), 5.0, 5.0, 1.0)]
        );
        // The second read reuses the configured chip: no second id check.
        let (values, _) = read_once(&mut c);
        assert_eq!(values[0].3, -0.01);
        drop(c);
        bus.done();
    }

    #[test]
    fn absent_and_wrong_chips() {
        let mut c = Ina2xxProbe::with_opener(no_sysfs(), MockOpener(None), vec![sensor("board")]);
        let (_, problems) = read_once(&mut c);
        assert!(matches!(&problems[..], [Problem::Absent(m)] if m.contains("no bus 1")));

        let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
        let mut bus = Mock::new(&[read(0xFE, 0).with_error(nack)]);
        let mut c = Ina2xxProbe::with_opener(
            no_sysfs(),
            MockOpener(Some(bus.clone())),
            vec![sensor("board")],
        );
        let (_, problems) = read_once(&mut c);
        assert_eq!(
            problems,
            [Problem::Absent(
                "board (ina260 at 0x40 on bus 1): no chip answers at the address".into()
            )]
        );
        drop(c);
        bus.done();

        // Something else at the address (an INA226): refused, and a failure.
        let mut bus = Mock::new(&[read(0xFE, 0x5449), read(0xFF, 0x2260)]);
        let mut c = Ina2xxProbe::with_opener(
            no_sysfs(),
            MockOpener(Some(bus.clone())),
            vec![sensor("board")],
        );
        let (values, problems) = read_once(&mut c);
        assert!(matches!(&problems[..], [Problem::Failed(m)] if m.contains("die id 0x2260")));
        assert!(values.is_empty());
        drop(c);
        bus.done();
    }

    #[test]
    fn hwmon_is_preferred_when_the_driver_owns_the_chip() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("bus/i2c/devices/1-0040/hwmon/hwmon3");
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (file, value) in [
            ("in1_input", "12000"),
            ("curr1_input", "-250"),
            ("power1_input", "3000000"),
        ] {
            std::fs::write(dir.join(file), format!("{value}\n")).expect("write");
        }
        let paths = Paths {
            sysfs: root.path().to_owned(),
            ..Paths::default()
        };
        // No bus at all: the raw path would fail; hwmon is read instead.
        let mut c = Ina2xxProbe::with_opener(paths, MockOpener(None), vec![sensor("board")]);
        let (values, problems) = read_once(&mut c);
        assert_eq!(problems, []);
        assert_eq!(
            values,
            [("board_power_board_watts".to_owned(), 3.0, 12.0, -0.25)]
        );
    }

    /// An INA260 as a register file: what the sampler reads at its own rate.
    #[derive(Clone)]
    pub(crate) struct FakeIna260 {
        regs: Arc<std::sync::Mutex<[u16; 256]>>,
        pointer: u8,
    }

    impl FakeIna260 {
        pub(crate) fn new() -> Self {
            let mut regs = [0u16; 256];
            regs[0xFE] = 0x5449;
            regs[0xFF] = 0x2270;
            FakeIna260 {
                regs: Arc::new(std::sync::Mutex::new(regs)),
                pointer: 0,
            }
        }

        /// Sets the bus voltage and current (and the power register, V × I).
        pub(crate) fn set(&self, volts: f64, amps: f64) {
            let mut regs = self.regs.lock().expect("regs");
            regs[0x02] = (volts / 0.00125).round() as u16;
            regs[0x01] = (amps / 0.00125).round() as u16;
            regs[0x03] = (volts * amps / 0.01).round() as u16;
        }
    }

    impl embedded_hal::i2c::ErrorType for FakeIna260 {
        type Error = ErrorKind;
    }

    impl I2c for FakeIna260 {
        fn transaction(
            &mut self,
            _address: u8,
            operations: &mut [embedded_hal::i2c::Operation<'_>],
        ) -> Result<(), ErrorKind> {
            use embedded_hal::i2c::Operation;
            for op in operations {
                match op {
                    Operation::Write(bytes) => {
                        self.pointer = bytes[0];
                        if let [reg, hi, lo] = bytes[..] {
                            self.regs.lock().expect("regs")[reg as usize] =
                                u16::from_be_bytes([hi, lo]);
                        }
                    }
                    Operation::Read(buf) => {
                        let v = self.regs.lock().expect("regs")[self.pointer as usize];
                        buf.copy_from_slice(&v.to_be_bytes());
                    }
                }
            }
            Ok(())
        }
    }

    pub(crate) struct FakeOpener(pub(crate) FakeIna260);

    impl Opener for FakeOpener {
        type Bus = FakeIna260;
        fn open(&self, _bus: u8) -> Result<FakeIna260, Problem> {
            Ok(self.0.clone())
        }
    }

    fn value(out: &SampleSink, id: &str) -> Option<f64> {
        out.samples().iter().find(|s| &*s.id == id).map(|s| s.value)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sampled_at_its_own_rate_into_energy() {
        let chip = FakeIna260::new();
        chip.set(5.0, 2.0);
        let ctx = BuildContext {
            tracker: tokio_util::task::TaskTracker::new(),
            cancel: tokio_util::sync::CancellationToken::new(),
            hub: None,
            energy: crate::energy::Registry::new(),
        };
        let probe =
            Ina2xxProbe::with_opener(no_sysfs(), FakeOpener(chip.clone()), vec![sensor("board")]);
        let mut c = Ina2xxCollector::start(
            probe,
            Duration::from_millis(10),
            Duration::from_millis(10),
            Duration::from_secs(1),
            &ctx,
        );
        let collect = |c: &mut Ina2xxCollector| {
            let mut out = SampleSink::default();
            c.collect(&mut out).expect("reads");
            out
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let first = collect(&mut c);
        let start = std::time::Instant::now();
        assert_eq!(value(&first, "board_power_board_watts"), Some(10.0));
        assert_eq!(value(&first, "board_voltage_board_volts"), Some(5.0));
        let j1 = value(&first, "board_power_board_joules_total").expect("joules");
        // 20 W for half a second, read 100 times a second.
        chip.set(5.0, 4.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let second = collect(&mut c);
        let seconds = start.elapsed().as_secs_f64();
        let j2 = value(&second, "board_power_board_joules_total").expect("joules");
        assert!(
            ((j2 - j1) - 20.0 * seconds).abs() < 0.05 * 20.0 * seconds,
            "{j1} → {j2} over {seconds} s"
        );
        assert_eq!(value(&second, "board_power_board_peak_watts"), Some(20.0));
        let shown = value(&second, "board_power_board_watts").expect("watts");
        assert!(
            (shown - 20.0).abs() < 1.0,
            "mean over the interval: {shown}"
        );
        let reads = second
            .samples()
            .iter()
            .find(|s| &*s.id == "edge_exporter_power_samples_total")
            .expect("reads")
            .value;
        assert!(reads >= 40.0, "{reads} reads in 0.8 s");
        drop(c);
        ctx.tracker.close();
        ctx.tracker.wait().await;
    }
}
