//! Readers of the hardware, one module per data source, named after the source.
//!
//! Each turns bytes into typed values in base units and knows nothing of metric
//! names; collectors (`crate::collectors`) map these values to samples. Every
//! filesystem read goes through a [`crate::paths::Paths`] root.

pub mod board;
pub mod command;
pub mod control;
pub mod cpu;
pub mod device_info;
pub mod hwmon;
pub mod ina2xx;
pub mod jetson_rails;
pub mod meminfo;
pub mod pmic;
pub mod power_supply;
pub mod rapl;
pub mod shelly;
pub mod tegrastats;
pub mod thermal;
