//! The `ina2xx` collector: the INA260/INA226/INA219 sensors listed under
//! `ina2xx:` (default on `raspberry_pi`: one INA260 named `board` at 0x40 on bus 1).
//!
//! Each sensor is read through the kernel's hwmon node when the `ina2xx` driver owns
//! the chip (raw access would fail with EBUSY), else over `/dev/i2c-N` (under the
//! root path) with the driver in `sources::ina2xx`, which checks the chip's ids
//! before trusting it. A sensor that does not answer is "no data"; a wrong chip, a
//! bus without permission or a failed read is a failure. Flat ids are
//! `board_power_<sensor>_watts`, `board_voltage_<sensor>_volts` and
//! `board_current_<sensor>_amps`: apart from the Shelly collector's `power_*` ids.

use std::path::PathBuf;

use embedded_hal::i2c::{ErrorKind, I2c, NoAcknowledgeSource};

use super::{CollectError, Collector};
use crate::config::Ina2xxSensor;
use crate::paths::Paths;
use crate::sample::{Family, Sample, SampleSink};
use crate::sources::ina2xx::{self, Ina2xx, Measurement};

pub const NAME: &str = "ina2xx";

static POWER: Family = Family::gauge(
    "board_power_watts",
    "Power measured by an INA2xx sensor",
    "watts",
);
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

/// Why a sensor gave nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not there: no bus, nothing answering at the address.
    Absent(String),
    Failed(String),
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
}

pub struct Ina2xxCollector<O: Opener = DevOpener> {
    paths: Paths,
    opener: O,
    sensors: Vec<SensorState<O::Bus>>,
}

impl<O: Opener> std::fmt::Debug for Ina2xxCollector<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ina2xxCollector")
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

impl Ina2xxCollector<DevOpener> {
    pub fn new(paths: Paths, sensors: Vec<Ina2xxSensor>) -> Self {
        Ina2xxCollector::with_opener(paths.clone(), DevOpener { paths }, sensors)
    }
}

impl<O: Opener> Ina2xxCollector<O> {
    pub fn with_opener(paths: Paths, opener: O, sensors: Vec<Ina2xxSensor>) -> Self {
        Ina2xxCollector {
            paths,
            opener,
            sensors: sensors
                .into_iter()
                .map(|config| SensorState {
                    config,
                    access: Access::Closed,
                })
                .collect(),
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

impl<O: Opener> Collector for Ina2xxCollector<O> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn collect(&mut self, out: &mut SampleSink) -> Result<(), CollectError> {
        let mut absent = Vec::new();
        let mut failed = Vec::new();
        for state in &mut self.sensors {
            match read_one(&self.paths, &self.opener, state) {
                Ok(m) => push(out, &state.config.name, &m),
                Err(Problem::Absent(m)) => absent.push(m),
                Err(Problem::Failed(m)) => failed.push(m),
            }
        }
        if failed.is_empty() {
            return if absent.is_empty() {
                Ok(())
            } else {
                Err(CollectError::NoData(absent.join("; ")))
            };
        }
        let errors = failed
            .into_iter()
            .map(CollectError::Sensor)
            .chain(absent.into_iter().map(CollectError::NoData))
            .collect();
        CollectError::all(errors).map_or(Ok(()), Err)
    }
}

fn push(out: &mut SampleSink, name: &str, m: &Measurement) {
    let fields = [
        (format!("board_power_{name}_watts"), &POWER, m.power_watts),
        (format!("board_voltage_{name}_volts"), &VOLTAGE, m.bus_volts),
        (
            format!("board_current_{name}_amps"),
            &CURRENT,
            m.current_amps,
        ),
    ];
    for (id, family, value) in fields {
        out.push(Sample::with_id(id, family, value).label("sensor", name));
    }
}

#[cfg(test)]
mod tests {
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

    fn sensor(name: &str) -> Ina2xxSensor {
        Ina2xxSensor {
            name: name.into(),
            ..Ina2xxSensor::raspberry_pi_default()
        }
    }

    fn read(reg: u8, value: u16) -> Transaction {
        Transaction::write_read(0x40, vec![reg], value.to_be_bytes().to_vec())
    }

    fn values(out: &SampleSink) -> Vec<(String, f64)> {
        out.samples()
            .iter()
            .map(|s| (s.id.to_string(), s.value))
            .collect()
    }

    fn no_sysfs() -> Paths {
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
        let mut c = Ina2xxCollector::with_opener(
            no_sysfs(),
            MockOpener(Some(bus.clone())),
            vec![sensor("board")],
        );
        let mut out = SampleSink::default();
        c.collect(&mut out).expect("reads");
        assert_eq!(
            values(&out),
            [
                ("board_power_board_watts".to_owned(), 5.0),
                ("board_voltage_board_volts".to_owned(), 5.0),
                ("board_current_board_amps".to_owned(), 1.0),
            ]
        );
        assert_eq!(out.samples()[0].labels[0].1.as_ref(), "board");
        // The second collection reuses the configured chip: no second id check.
        let mut out = SampleSink::default();
        c.collect(&mut out).expect("reads");
        assert_eq!(out.samples()[2].value, -0.01);
        drop(c);
        bus.done();
    }

    #[test]
    fn absent_and_wrong_chips() {
        let mut c =
            Ina2xxCollector::with_opener(no_sysfs(), MockOpener(None), vec![sensor("board")]);
        let mut out = SampleSink::default();
        assert!(
            matches!(c.collect(&mut out), Err(CollectError::NoData(m)) if m.contains("no bus 1"))
        );

        let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
        let mut bus = Mock::new(&[read(0xFE, 0).with_error(nack)]);
        let mut c = Ina2xxCollector::with_opener(
            no_sysfs(),
            MockOpener(Some(bus.clone())),
            vec![sensor("board")],
        );
        let err = c.collect(&mut out).expect_err("nothing at 0x40");
        assert!(
            matches!(&err, CollectError::NoData(m)
                if m == "board (ina260 at 0x40 on bus 1): no chip answers at the address"),
            "{err:?}"
        );
        drop(c);
        bus.done();

        // Something else at the address (an INA226): refused, and a failure.
        let mut bus = Mock::new(&[read(0xFE, 0x5449), read(0xFF, 0x2260)]);
        let mut c = Ina2xxCollector::with_opener(
            no_sysfs(),
            MockOpener(Some(bus.clone())),
            vec![sensor("board")],
        );
        assert!(
            matches!(c.collect(&mut out), Err(e) if !e.is_no_data() && e.detail().contains("die id 0x2260"))
        );
        assert!(out.samples().is_empty());
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
        let mut c = Ina2xxCollector::with_opener(paths, MockOpener(None), vec![sensor("board")]);
        let mut out = SampleSink::default();
        c.collect(&mut out).expect("hwmon");
        assert_eq!(
            values(&out),
            [
                ("board_power_board_watts".to_owned(), 3.0),
                ("board_voltage_board_volts".to_owned(), 12.0),
                ("board_current_board_amps".to_owned(), -0.25),
            ]
        );
    }
}
