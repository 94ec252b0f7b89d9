//! What a device is and runs, for `edge_device_info`: the board's model and SoC,
//! the NVIDIA L4T and JetPack releases, the kernel, the OS and the board's serial
//! number, each read through `--path.procfs`, `--path.sysfs` and `--path.rootfs`
//! and left out when the device does not tell it.
//!
//! * model: the device tree's `model`, else DMI `sys_vendor` + `product_name`;
//! * SoC: the last entry of the device tree's `compatible` (`tegra234`,
//!   `bcm2712`), else the CPU's `model name` in `/proc/cpuinfo` (x86);
//! * L4T: `/etc/nv_tegra_release` (`# R36 (release), REVISION: 4.3` → `36.4.3`),
//!   else the version of the `nvidia-l4t-core` package in dpkg's status file;
//! * JetPack: the version of the `nvidia-jetpack` package, else the release that
//!   shipped that L4T (NVIDIA's table, for the releases listed in [`JETPACK_OF_L4T`]);
//! * kernel: `/proc/sys/kernel/osrelease`; OS: `PRETTY_NAME` of `os-release`;
//! * serial: the device tree's `serial-number`, else DMI `product_serial` (root only
//!   on most PCs: then left out).

use crate::paths::{Paths, read_attr};

/// The labels of `edge_device_info`, those the device tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    pub model: Option<String>,
    pub soc: Option<String>,
    pub l4t: Option<String>,
    pub jetpack: Option<String>,
    pub kernel: Option<String>,
    pub os: Option<String>,
    pub serial: Option<String>,
}

/// L4T releases and the JetPack that shipped them (NVIDIA's JetPack archive).
pub const JETPACK_OF_L4T: &[(&str, &str)] = &[
    ("32.4.3", "4.4"),
    ("32.4.4", "4.4.1"),
    ("32.5.0", "4.5"),
    ("32.5.1", "4.5.1"),
    ("32.6.1", "4.6"),
    ("32.7.1", "4.6.1"),
    ("32.7.2", "4.6.2"),
    ("32.7.3", "4.6.3"),
    ("32.7.4", "4.6.4"),
    ("32.7.5", "4.6.5"),
    ("32.7.6", "4.6.6"),
    ("35.1.0", "5.0.2"),
    ("35.2.1", "5.1"),
    ("35.3.1", "5.1.1"),
    ("35.4.1", "5.1.2"),
    ("35.5.0", "5.1.3"),
    ("35.6.0", "5.1.4"),
    ("36.3.0", "6.0"),
    ("36.4.0", "6.1"),
    ("36.4.3", "6.2"),
];

/// A device-tree string: NUL-terminated, maybe several NUL-separated.
fn dt_strings(text: &str) -> Vec<String> {
    text.split('\0')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn device_tree(paths: &Paths, name: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(paths.proc(&format!("device-tree/{name}")))
        .or_else(|_| {
            std::fs::read_to_string(paths.sys(&format!("firmware/devicetree/base/{name}")))
        })
        .ok()?;
    Some(dt_strings(&text)).filter(|v| !v.is_empty())
}

/// `# R36 (release), REVISION: 4.3, ...` → `36.4.3`.
pub fn parse_nv_tegra_release(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let major = line.split_once("# R")?.1.split_whitespace().next()?;
    let revision = line.split_once("REVISION:")?.1.split(',').next()?.trim();
    let major: u32 = major.parse().ok()?;
    let mut parts = revision.split('.');
    let minor: u32 = parts.next()?.parse().ok()?;
    let patch: u32 = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    Some(format!("{major}.{minor}.{patch}"))
}

/// The `Version:` of `package` in a dpkg status file, if it is installed.
pub fn dpkg_version(status: &str, package: &str) -> Option<String> {
    status.split("\n\n").find_map(|stanza| {
        let mut name = None;
        let mut version = None;
        let mut installed = false;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        (name == Some(package) && installed)
            .then(|| version.map(str::to_owned))
            .flatten()
    })
}

/// `os-release`'s `PRETTY_NAME`, unquoted.
fn pretty_name(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
        .filter(|v| !v.is_empty())
}

/// Reads what the device tells about itself.
pub fn read(paths: &Paths) -> DeviceInfo {
    let dmi =
        |f: &str| read_attr(&paths.sys(&format!("class/dmi/id/{f}"))).filter(|v| !v.is_empty());
    let model = device_tree(paths, "model")
        .and_then(|v| v.into_iter().next())
        .or_else(|| match (dmi("sys_vendor"), dmi("product_name")) {
            (Some(vendor), Some(product)) if !product.contains(&vendor) => {
                Some(format!("{vendor} {product}"))
            }
            (_, Some(product)) => Some(product),
            (vendor, None) => vendor,
        });
    let soc = device_tree(paths, "compatible")
        .and_then(|v| v.last().cloned())
        .map(|c| {
            c.split_once(',')
                .map_or(c.clone(), |(_, chip)| chip.to_owned())
        })
        .or_else(|| {
            std::fs::read_to_string(paths.proc("cpuinfo"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("model name"))
                        .and_then(|l| l.split_once(':'))
                        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
                        .filter(|v| !v.is_empty())
                })
        });
    let status = std::fs::read_to_string(paths.root("var/lib/dpkg/status")).unwrap_or_default();
    let l4t = std::fs::read_to_string(paths.root("etc/nv_tegra_release"))
        .ok()
        .and_then(|t| parse_nv_tegra_release(&t))
        .or_else(|| {
            dpkg_version(&status, "nvidia-l4t-core")
                .map(|v| v.split('-').next().unwrap_or(&v).to_owned())
        });
    let jetpack = dpkg_version(&status, "nvidia-jetpack")
        .map(|v| v.split(['+', '-']).next().unwrap_or(&v).to_owned())
        .or_else(|| {
            let l4t = l4t.as_deref()?;
            JETPACK_OF_L4T
                .iter()
                .find(|(l, _)| *l == l4t)
                .map(|(_, j)| (*j).to_owned())
        });
    let kernel = read_attr(&paths.proc("sys/kernel/osrelease")).filter(|v| !v.is_empty());
    let os = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(paths.root(p)).ok())
        .and_then(|t| pretty_name(&t));
    let serial = device_tree(paths, "serial-number")
        .and_then(|v| v.into_iter().next())
        .or_else(|| dmi("product_serial"))
        // Placeholders firmware writes where there is no serial.
        .filter(|s| {
            let l = s.to_ascii_lowercase();
            ![
                "to be filled by o.e.m.",
                "default string",
                "none",
                "0",
                "system serial number",
            ]
            .contains(&l.as_str())
        });
    DeviceInfo {
        model,
        soc,
        l4t,
        jetpack,
        kernel,
        os,
        serial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l4t_and_jetpack_from_their_files() {
        assert_eq!(
            parse_nv_tegra_release(
                "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
            ),
            Some("36.4.3".into())
        );
        assert_eq!(
            parse_nv_tegra_release(
                "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref\n"
            ),
            Some("32.7.4".into())
        );
        assert_eq!(parse_nv_tegra_release("garbage"), None);
        let status = "Package: nvidia-l4t-core\nStatus: install ok installed\nVersion: 36.4.3-20250107174145\n\n\
                      Package: nvidia-jetpack\nStatus: deinstall ok config-files\nVersion: 6.1+b123\n";
        assert_eq!(
            dpkg_version(status, "nvidia-l4t-core"),
            Some("36.4.3-20250107174145".into())
        );
        assert_eq!(
            dpkg_version(status, "nvidia-jetpack"),
            None,
            "not installed"
        );
        assert_eq!(
            pretty_name("NAME=\"Ubuntu\"\nPRETTY_NAME=\"Ubuntu 22.04.5 LTS\"\n"),
            Some("Ubuntu 22.04.5 LTS".into())
        );
    }
}
