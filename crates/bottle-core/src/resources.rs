//! What a bottle may use of the host: memory, CPUs, processes, disk, and how
//! much of the agent's state may come out at teardown. The manifest's
//! `resources:` sets them (`{ memory: 4g, cpus: 2, pids: 512, disk: 20g,
//! state: 1g }`); what it leaves out gets a default that protects the host.
//! Backends apply what their engine can and say what they apply.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A size in bytes, written `512m`, `4g`, `1024k` or plain bytes (binary units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }

    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }

    /// Parses `512m`, `4g`, `4GiB`, `1.5g`, `1024k`, `100` (bytes).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let shift = match unit.trim() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return None,
        };
        let value: f64 = number.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
        let bytes = value * (1u64 << shift) as f64;
        (bytes < u64::MAX as f64).then_some(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        for (shift, unit) in units {
            let size = 1u64 << shift;
            if self.0 >= size {
                let whole = self.0 / size;
                let tenths = (self.0 % size) * 10 / size;
                return if tenths == 0 { write!(f, "{whole} {unit}") } else { write!(f, "{whole}.{tenths} {unit}") };
            }
        }
        write!(f, "{} B", self.0)
    }
}

/// A number of CPUs, in thousandths (`1.5` is 1500); written as the number of CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub struct Cpus(pub u32);

impl Serialize for Cpus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(f64::from(self.0) / 1000.0)
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        Cpus::parse(&value.to_string())
            .ok_or_else(|| serde::de::Error::custom(format!("{value} is not a number of CPUs")))
    }
}

impl Cpus {
    /// Parses `2`, `0.5`, `1.25`.
    pub fn parse(text: &str) -> Option<Self> {
        let value: f64 = text.trim().parse().ok()?;
        (value.is_finite() && (0.01..=1024.0).contains(&value)).then(|| Cpus((value * 1000.0).round() as u32))
    }

    /// As the engine takes it: CPUs × 10⁹.
    pub fn nano(self) -> i64 {
        i64::from(self.0) * 1_000_000
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, rest) = (self.0 / 1000, self.0 % 1000);
        if rest == 0 { write!(f, "{whole}") } else { write!(f, "{}", f64::from(self.0) / 1000.0) }
    }
}

/// The manifest's `resources:` of a bottle; each left out gets its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory the bottle may use (`4g`); over it, its processes are killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("type" = ["string", "integer"]))]
    pub memory: Option<ByteSize>,
    /// CPUs the bottle may use (`2`, `0.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<f64>", extend("type" = ["string", "number"]))]
    pub cpus: Option<Cpus>,
    /// Processes (and threads) the bottle may run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// Disk the bottle's own files may take (`20g`), where the engine can limit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("type" = ["string", "integer"]))]
    pub disk: Option<ByteSize>,
    /// The most the agent's saved state (for `resume`) may take when it is
    /// copied out at teardown (`1g`); over it, that state is not saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("type" = ["string", "integer"]))]
    pub state: Option<ByteSize>,
}

impl Resources {
    /// Whether nothing is set (the manifest says nothing).
    pub fn is_default(&self) -> bool {
        *self == Resources::default()
    }
}

/// A bottle's limits, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory.
    pub memory: ByteSize,
    /// CPUs.
    pub cpus: Cpus,
    /// Processes.
    pub pids: u32,
    /// Disk.
    pub disk: ByteSize,
    /// The agent's saved state.
    pub state: ByteSize,
}

impl Limits {
    /// The default memory limit.
    pub const MEMORY: ByteSize = ByteSize::gib(4);
    /// The default CPU limit (fewer when the host has fewer).
    pub const CPUS: Cpus = Cpus(2000);
    /// The default process limit.
    pub const PIDS: u32 = 1024;
    /// The default disk limit.
    pub const DISK: ByteSize = ByteSize::gib(20);
    /// The default cap on the saved state.
    pub const STATE: ByteSize = ByteSize::gib(1);

    /// `resources` with the defaults filled in; CPUs never more than the host has.
    pub fn resolve(resources: &Resources, host_cpus: usize) -> Self {
        let host = Cpus(u32::try_from(host_cpus.max(1)).unwrap_or(u32::MAX).saturating_mul(1000));
        Limits {
            memory: resources.memory.unwrap_or(Self::MEMORY),
            cpus: resources.cpus.unwrap_or(Self::CPUS).min(host),
            pids: resources.pids.unwrap_or(Self::PIDS),
            disk: resources.disk.unwrap_or(Self::DISK),
            state: resources.state.unwrap_or(Self::STATE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_and_print_in_binary_units() {
        for (text, bytes) in [
            ("512m", 512 << 20),
            ("4g", 4 << 30),
            ("4GiB", 4 << 30),
            ("1.5g", 3 << 29),
            ("1024k", 1 << 20),
            ("100", 100),
            (" 2 MB ", 2 << 20),
        ] {
            assert_eq!(ByteSize::parse(text), Some(ByteSize(bytes)), "{text}");
        }
        for bad in ["", "g", "4x", "-1g", "1.2.3m", "nanm"] {
            assert_eq!(ByteSize::parse(bad), None, "{bad}");
        }
        assert_eq!(ByteSize::gib(4).to_string(), "4 GiB");
        assert_eq!(ByteSize(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(ByteSize(100).to_string(), "100 B");
    }

    #[test]
    fn cpus_read_in_thousandths_and_defaults_fit_the_host() {
        assert_eq!(Cpus::parse("1.5"), Some(Cpus(1500)));
        assert_eq!(Cpus::parse("2"), Some(Cpus(2000)));
        assert_eq!(Cpus::parse("0"), None);
        assert_eq!(Cpus::parse("x"), None);
        assert_eq!(Cpus(1500).to_string(), "1.5");
        assert_eq!(Cpus(1500).nano(), 1_500_000_000);
        let limits = Limits::resolve(&Resources::default(), 1);
        assert_eq!(limits.cpus, Cpus(1000), "never more CPUs than the host has");
        assert_eq!((limits.memory, limits.pids, limits.state), (Limits::MEMORY, Limits::PIDS, Limits::STATE));
        let set = Resources { memory: Some(ByteSize::mib(64)), pids: Some(64), ..Default::default() };
        let limits = Limits::resolve(&set, 8);
        assert_eq!((limits.memory, limits.pids, limits.cpus), (ByteSize::mib(64), 64, Limits::CPUS));
    }
}
