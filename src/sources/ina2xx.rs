//! TI INA260, INA226 and INA219 current/power monitors over I2C, generic over
//! `embedded_hal::i2c::I2c` (a Linux `/dev/i2c-N` in the daemon, a mock bus in
//! tests), and the same chips read through the kernel's `ina2xx` hwmon driver.
//!
//! Facts from TI's datasheets (INA260 SBOS656C, INA226 SBOS547A, INA219 SBOS448G):
//! registers are 16-bit, big-endian on the wire.
//!
//! | | INA260 | INA226 | INA219 |
//! |---|---|---|---|
//! | shunt | internal 2 mΩ | external | external |
//! | current | reg 0x01, signed, 1.25 mA/LSB | reg 0x04, signed, `current_lsb` | reg 0x04, signed, `current_lsb` |
//! | bus voltage | reg 0x02, 1.25 mV/LSB | reg 0x02, 1.25 mV/LSB | reg 0x02 bits 15–3, 4 mV/LSB |
//! | power | reg 0x03, 10 mW/LSB | reg 0x03, 25 × `current_lsb` | reg 0x03, 20 × `current_lsb` |
//! | calibration (reg 0x05) | none | 0.00512 / (`current_lsb` × R) | 0.04096 / (`current_lsb` × R) |
//! | ids (0xFE / 0xFF) | 0x5449 / 0x2270 | 0x5449 / 0x2260 | none |
//!
//! `current_lsb` is the largest expected current / 2^15.

use std::path::Path;

use embedded_hal::i2c::I2c;

use crate::paths;

const REG_CONFIG: u8 = 0x00;
const REG_BUS: u8 = 0x02;
const REG_POWER: u8 = 0x03;
const REG_CURRENT_260: u8 = 0x01;
const REG_CURRENT: u8 = 0x04;
const REG_CALIBRATION: u8 = 0x05;
const REG_MANUFACTURER: u8 = 0xFE;
const REG_DIE: u8 = 0xFF;
const TI: u16 = 0x5449;
const DIE_260: u16 = 0x2270;
const DIE_226: u16 = 0x2260;

/// Averaging choices of INA260/INA226 (AVG bits 11–9).
pub const AVERAGING: [u16; 8] = [1, 4, 16, 64, 128, 256, 512, 1024];
/// Conversion times of INA260/INA226 in µs (VBUSCT bits 8–6, ISHCT/VSHCT 5–3).
pub const CONVERSION_US: [u32; 8] = [140, 204, 332, 588, 1100, 2116, 4156, 8244];
/// Averaging choices of INA219 (BADC/SADC `1nnn`: 2^nnn samples at 12 bits).
pub const AVERAGING_219: [u16; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Which chip, with what it needs to be calibrated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Chip {
    Ina260,
    Ina226 {
        shunt_ohms: f64,
        max_current_amps: f64,
    },
    Ina219 {
        shunt_ohms: f64,
        max_current_amps: f64,
    },
}

/// How a chip is set up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub chip: Chip,
    /// Samples averaged per reading.
    pub averaging: u16,
    /// Conversion time of each sample, µs (INA260/INA226 only).
    pub conversion_time_us: u32,
}

/// One reading in base units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Negative when current flows backwards through the shunt.
    pub current_amps: f64,
    pub bus_volts: f64,
    pub power_watts: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error<E: std::fmt::Debug> {
    #[error("I2C transfer failed: {0:?}")]
    Bus(E),
    #[error(
        "not the configured chip: manufacturer id {manufacturer:#06x}, die id {die:#06x} (expected {expected})"
    )]
    WrongDevice {
        manufacturer: u16,
        die: u16,
        expected: &'static str,
    },
    #[error(transparent)]
    BadSetting(#[from] SettingError),
}

/// A setting the chip cannot take (checked when the config is read, and again
/// when the chip is configured).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingError {
    #[error("address {0:#04x} is outside 0x40..0x4F")]
    Address(u8),
    #[error("{what} must be one of {allowed}, got {got}")]
    NotOneOf {
        what: &'static str,
        /// The values the chip takes, as a list.
        allowed: String,
        got: u32,
    },
    #[error("shunt_ohms and max_current_amps must be positive")]
    NotPositive,
    #[error(
        "shunt_ohms {shunt} and max_current_amps {max} give calibration {calibration}, outside 1..65535"
    )]
    Calibration {
        shunt: f64,
        max: f64,
        calibration: f64,
    },
}

/// A configured chip on a bus.
#[derive(Debug)]
pub struct Ina2xx<I2C> {
    i2c: I2C,
    address: u8,
    chip: Chip,
    /// Amps per current-register LSB.
    current_lsb: f64,
}

impl Settings {
    /// How often the chip has a new reading: in continuous mode it converts the
    /// shunt and the bus voltage in turn, each `averaging` times (INA219: 532 µs
    /// per 12-bit sample). Reading faster returns the same values again.
    pub fn update_period(&self) -> std::time::Duration {
        let per_sample_us = match self.chip {
            Chip::Ina260 | Chip::Ina226 { .. } => self.conversion_time_us.max(140),
            Chip::Ina219 { .. } => 532,
        };
        std::time::Duration::from_micros(
            2 * u64::from(per_sample_us) * u64::from(self.averaging.max(1)),
        )
    }
}

/// The config register value for `settings`.
pub fn config_word(settings: &Settings) -> Result<u16, SettingError> {
    let index = |table: &'static [u16], v: u16, what: &'static str| {
        table
            .iter()
            .position(|x| *x == v)
            .map(|i| i as u16)
            .ok_or_else(|| SettingError::NotOneOf {
                what,
                allowed: format!("{table:?}"),
                got: u32::from(v),
            })
    };
    match settings.chip {
        Chip::Ina260 | Chip::Ina226 { .. } => {
            let avg = index(&AVERAGING, settings.averaging, "averaging")?;
            let ct = CONVERSION_US
                .iter()
                .position(|x| *x == settings.conversion_time_us)
                .map(|i| i as u16)
                .ok_or_else(|| SettingError::NotOneOf {
                    what: "conversion_time_us",
                    allowed: format!("{CONVERSION_US:?}"),
                    got: settings.conversion_time_us,
                })?;
            // Bits 14–12 read back 110 on the INA260 and 100 on the INA226; mode
            // 111 is continuous current and voltage.
            let fixed = if settings.chip == Chip::Ina260 {
                0x6000
            } else {
                0x4000
            };
            Ok(fixed | avg << 9 | ct << 6 | ct << 3 | 0b111)
        }
        Chip::Ina219 { .. } => {
            let n = index(&AVERAGING_219, settings.averaging, "averaging")?;
            // 0011 is a single 12-bit sample (the power-on value); 1nnn averages
            // 2^nnn 12-bit samples.
            let adc = if n == 0 { 0b0011 } else { 0b1000 | n };
            // 32 V bus range, shunt gain /8 (±320 mV), continuous.
            Ok(1 << 13 | 0b11 << 11 | adc << 7 | adc << 3 | 0b111)
        }
    }
}

/// Amps per LSB and the calibration register for a chip with an external shunt.
pub fn calibration(chip: Chip) -> Result<(f64, Option<u16>), SettingError> {
    let (shunt, max, scale) = match chip {
        Chip::Ina260 => return Ok((1.25e-3, None)),
        Chip::Ina226 {
            shunt_ohms,
            max_current_amps,
        } => (shunt_ohms, max_current_amps, 0.00512),
        Chip::Ina219 {
            shunt_ohms,
            max_current_amps,
        } => (shunt_ohms, max_current_amps, 0.04096),
    };
    if !(shunt > 0.0 && shunt.is_finite() && max > 0.0 && max.is_finite()) {
        return Err(SettingError::NotPositive);
    }
    let lsb = max / 32768.0;
    let cal = (scale / (lsb * shunt)).trunc();
    if !(1.0..=65535.0).contains(&cal) {
        return Err(SettingError::Calibration {
            shunt,
            max,
            calibration: cal,
        });
    }
    let cal = cal as u16;
    // The chip works with the truncated calibration: derive the LSB it implies.
    Ok((scale / (f64::from(cal) * shunt), Some(cal)))
}

/// Bus voltage from the raw register.
pub fn decode_bus(chip: Chip, raw: u16) -> f64 {
    match chip {
        Chip::Ina219 { .. } => f64::from(raw >> 3) * 4e-3,
        _ => f64::from(raw) * 1.25e-3,
    }
}

/// Current from the raw (two's complement) register.
pub fn decode_current(raw: u16, current_lsb: f64) -> f64 {
    f64::from(raw as i16) * current_lsb
}

/// Power from the raw register.
pub fn decode_power(chip: Chip, raw: u16, current_lsb: f64) -> f64 {
    let lsb = match chip {
        Chip::Ina260 => 10e-3,
        Chip::Ina226 { .. } => 25.0 * current_lsb,
        Chip::Ina219 { .. } => 20.0 * current_lsb,
    };
    f64::from(raw) * lsb
}

impl<I2C: I2c> Ina2xx<I2C>
where
    I2C::Error: std::fmt::Debug,
{
    /// Checks the chip's identity (where it has one) and configures it. No reading
    /// is trusted from a chip whose ids do not match.
    pub fn new(i2c: I2C, address: u8, settings: Settings) -> Result<Self, Error<I2C::Error>> {
        if !(0x40..=0x4F).contains(&address) {
            return Err(SettingError::Address(address).into());
        }
        let config = config_word(&settings)?;
        let (current_lsb, calibration) = calibration(settings.chip)?;
        let mut ina = Ina2xx {
            i2c,
            address,
            chip: settings.chip,
            current_lsb,
        };
        let expected = match settings.chip {
            Chip::Ina260 => Some((DIE_260, "INA260: 0x5449 / 0x2270")),
            Chip::Ina226 { .. } => Some((DIE_226, "INA226: 0x5449 / 0x2260")),
            Chip::Ina219 { .. } => None,
        };
        if let Some((die_id, expected)) = expected {
            let manufacturer = ina.read_register(REG_MANUFACTURER)?;
            let die = ina.read_register(REG_DIE)?;
            if manufacturer != TI || die != die_id {
                return Err(Error::WrongDevice {
                    manufacturer,
                    die,
                    expected,
                });
            }
        }
        ina.write_register(REG_CONFIG, config)?;
        if let Some(cal) = calibration {
            ina.write_register(REG_CALIBRATION, cal)?;
        }
        Ok(ina)
    }

    pub fn read(&mut self) -> Result<Measurement, Error<I2C::Error>> {
        let current_reg = if self.chip == Chip::Ina260 {
            REG_CURRENT_260
        } else {
            REG_CURRENT
        };
        let current = self.read_register(current_reg)?;
        let bus = self.read_register(REG_BUS)?;
        let power = self.read_register(REG_POWER)?;
        Ok(Measurement {
            current_amps: decode_current(current, self.current_lsb),
            bus_volts: decode_bus(self.chip, bus),
            power_watts: decode_power(self.chip, power, self.current_lsb),
        })
    }

    fn read_register(&mut self, register: u8) -> Result<u16, Error<I2C::Error>> {
        let mut buf = [0u8; 2];
        self.i2c
            .write_read(self.address, &[register], &mut buf)
            .map_err(Error::Bus)?;
        Ok(u16::from_be_bytes(buf))
    }

    fn write_register(&mut self, register: u8, value: u16) -> Result<(), Error<I2C::Error>> {
        let [hi, lo] = value.to_be_bytes();
        self.i2c
            .write(self.address, &[register, hi, lo])
            .map_err(Error::Bus)
    }

    /// Gives the bus back (tests check their expectations with it).
    pub fn release(self) -> I2C {
        self.i2c
    }
}

/// The hwmon node the kernel's `ina2xx` driver created for a chip, when it owns it
/// (raw access would then fail with EBUSY).
pub fn hwmon_dir(sysfs: &Path, bus: u8, address: u8) -> Option<std::path::PathBuf> {
    let dir = sysfs.join(format!("bus/i2c/devices/{bus}-{address:04x}/hwmon"));
    paths::list_prefixed(&dir, "hwmon")
        .into_iter()
        .next()
        .map(|name| dir.join(name))
}

/// Reads a chip through hwmon: `in1_input` bus mV, `curr1_input` mA,
/// `power1_input` µW (computed as V × I where the driver has no power file).
pub fn read_hwmon(dir: &Path) -> Option<Measurement> {
    let bus_volts = paths::read_i64(&dir.join("in1_input"))? as f64 / 1e3;
    let current_amps = paths::read_i64(&dir.join("curr1_input"))? as f64 / 1e3;
    let power_watts = paths::read_i64(&dir.join("power1_input"))
        .map(|uw| uw as f64 / 1e6)
        .unwrap_or(bus_volts * current_amps.abs());
    Some(Measurement {
        current_amps,
        bus_volts,
        power_watts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    const ADDR: u8 = 0x40;

    fn read(reg: u8, value: u16) -> Transaction {
        Transaction::write_read(ADDR, vec![reg], value.to_be_bytes().to_vec())
    }

    fn write(reg: u8, value: u16) -> Transaction {
        let [hi, lo] = value.to_be_bytes();
        Transaction::write(ADDR, vec![reg, hi, lo])
    }

    fn ina260(averaging: u16, ct: u32) -> Settings {
        Settings {
            chip: Chip::Ina260,
            averaging,
            conversion_time_us: ct,
        }
    }

    #[test]
    fn ina260_ids_setup_and_readings() {
        let mut bus = Mock::new(&[
            read(0xFE, 0x5449),
            read(0xFF, 0x2270),
            // AVG=16 (010), CT 1.1 ms (100) both, continuous: the Linux driver's 0x6527.
            write(0x00, 0x6527),
            read(0x01, 0xFF38),
            read(0x02, 0x2580),
            read(0x03, 0x00F0),
        ]);
        let mut ina = Ina2xx::new(bus.clone(), ADDR, ina260(16, 1100)).expect("ina260");
        let m = ina.read().expect("read");
        // The datasheet's scales: -200 × 1.25 mA, 9600 × 1.25 mV, 240 × 10 mW.
        assert_eq!(m.current_amps, -0.25);
        assert_eq!(m.bus_volts, 12.0);
        assert_eq!(m.power_watts, 2.4);
        ina.release();
        bus.done();
    }

    #[test]
    fn averaging_and_conversion_bits() {
        assert_eq!(
            config_word(&ina260(1, 1100)),
            Ok(0x6127),
            "the power-on value"
        );
        assert_eq!(config_word(&ina260(1024, 8244)), Ok(0x6FFF));
        assert_eq!(config_word(&ina260(4, 140)), Ok(0x6207));
        assert!(config_word(&ina260(3, 1100)).is_err());
        assert!(config_word(&ina260(16, 1000)).is_err());
    }

    #[test]
    fn a_wrong_chip_is_refused_before_any_write() {
        // An INA226 at the address configured for an INA260.
        let mut bus = Mock::new(&[read(0xFE, 0x5449), read(0xFF, 0x2260)]);
        let err = Ina2xx::new(bus.clone(), ADDR, ina260(16, 1100)).expect_err("wrong die");
        assert_eq!(
            err,
            Error::WrongDevice {
                manufacturer: 0x5449,
                die: 0x2260,
                expected: "INA260: 0x5449 / 0x2270"
            }
        );
        bus.done();
        let mut bus = Mock::new(&[read(0xFE, 0xFFFF), read(0xFF, 0xFFFF)]);
        assert!(matches!(
            Ina2xx::new(bus.clone(), ADDR, ina260(16, 1100)),
            Err(Error::WrongDevice { .. })
        ));
        bus.done();
    }

    #[test]
    fn bus_errors_are_reported() {
        use embedded_hal::i2c::ErrorKind;
        let mut bus = Mock::new(&[read(0xFE, 0).with_error(ErrorKind::Other)]);
        assert!(matches!(
            Ina2xx::new(bus.clone(), ADDR, ina260(16, 1100)),
            Err(Error::Bus(_))
        ));
        bus.done();
        let mut bus = Mock::new(&[
            read(0xFE, 0x5449),
            read(0xFF, 0x2270),
            write(0x00, 0x6527),
            read(0x01, 0).with_error(ErrorKind::NoAcknowledge(
                embedded_hal::i2c::NoAcknowledgeSource::Address,
            )),
        ]);
        let mut ina = Ina2xx::new(bus.clone(), ADDR, ina260(16, 1100)).expect("setup");
        assert!(matches!(ina.read(), Err(Error::Bus(_))));
        ina.release();
        bus.done();
    }

    #[test]
    fn ina226_calibration_and_scaling() {
        // 0.1 Ω shunt, 3.2768 A max: current_lsb 100 µA, CAL = 0.00512/(1e-4 × 0.1) = 512.
        let chip = Chip::Ina226 {
            shunt_ohms: 0.1,
            max_current_amps: 3.2768,
        };
        let (lsb, cal) = calibration(chip).expect("calibration");
        assert_eq!(cal, Some(512));
        assert!((lsb - 1e-4).abs() < 1e-12);
        let mut bus = Mock::new(&[
            read(0xFE, 0x5449),
            read(0xFF, 0x2260),
            write(0x00, 0x4527),
            write(0x05, 512),
            read(0x04, 10_000),
            read(0x02, 0x0FA0),
            read(0x03, 200),
        ]);
        let settings = Settings {
            chip,
            averaging: 16,
            conversion_time_us: 1100,
        };
        let mut ina = Ina2xx::new(bus.clone(), ADDR, settings).expect("ina226");
        let m = ina.read().expect("read");
        assert!((m.current_amps - 1.0).abs() < 1e-9, "{m:?}");
        assert_eq!(m.bus_volts, 5.0);
        // 200 × 25 × 100 µA = 0.5 W.
        assert!((m.power_watts - 0.5).abs() < 1e-9);
        ina.release();
        bus.done();
    }

    #[test]
    fn ina219_has_no_ids_and_its_own_bus_format() {
        // 0.1 Ω, 3.2 A max: lsb 97.66 µA, CAL = trunc(0.04096/(lsb × 0.1)) = 4194.
        let chip = Chip::Ina219 {
            shunt_ohms: 0.1,
            max_current_amps: 3.2,
        };
        let (lsb, cal) = calibration(chip).expect("calibration");
        assert_eq!(cal, Some(4194));
        let settings = Settings {
            chip,
            averaging: 1,
            conversion_time_us: 0,
        };
        // 32 V, /8 gain, 12-bit single samples, continuous: the power-on 0x399F.
        assert_eq!(config_word(&settings), Ok(0x399F));
        let mut bus = Mock::new(&[
            write(0x00, 0x399F),
            write(0x05, 4194),
            read(0x04, 0xFC18), // -1000 LSB
            // 5 V: 1250 × 4 mV in bits 15–3, with the conversion-ready bit set.
            read(0x02, (1250 << 3) | 0b10),
            read(0x03, 100),
        ]);
        let mut ina = Ina2xx::new(bus.clone(), ADDR, settings).expect("ina219");
        let m = ina.read().expect("read");
        assert!((m.current_amps + 1000.0 * lsb).abs() < 1e-12);
        assert_eq!(m.bus_volts, 5.0);
        assert!((m.power_watts - 2000.0 * lsb).abs() < 1e-12);
        ina.release();
        bus.done();
    }

    #[test]
    fn bad_settings() {
        let bad = Chip::Ina226 {
            shunt_ohms: 0.0,
            max_current_amps: 1.0,
        };
        assert!(calibration(bad).is_err());
        // A calibration over 16 bits.
        assert!(
            calibration(Chip::Ina226 {
                shunt_ohms: 0.0001,
                max_current_amps: 0.001
            })
            .is_err()
        );
        let bus = Mock::new(&[]);
        let mut check = bus.clone();
        assert!(matches!(
            Ina2xx::new(bus, 0x39, ina260(16, 1100)),
            Err(Error::BadSetting(_))
        ));
        check.done();
    }
}
