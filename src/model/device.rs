//! Device selection: CPU by default, CUDA behind the `cuda` feature.

use candle_core::Device;

use crate::error::{Error, Result};

/// A device as the user names it: `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The host CPU (the default).
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal; needs the `cuda` feature.
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(Error::InvalidInput(format!("unknown device `{s}`; expected cpu, cuda or cuda:N"))),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device; fails with a clear message when this build or machine lacks it.
    pub fn open(&self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            #[cfg(feature = "cuda")]
            Self::Cuda(n) => Device::new_cuda(*n).map_err(|e| Error::Device(self.to_string(), e.to_string())),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda(_) => Err(Error::Device(
                self.to_string(),
                "this build of cliptta has no CUDA support; rebuild with `--features cuda`".into(),
            )),
        }
    }
}

/// Parses a device name and opens it.
pub fn parse_device(name: &str) -> Result<Device> {
    name.parse::<DeviceSpec>()?.open()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        let cases = [("cpu", Some(DeviceSpec::Cpu)), ("CUDA", Some(DeviceSpec::Cuda(0))), ("cuda:3", Some(DeviceSpec::Cuda(3))), ("tpu", None), ("cuda:x", None)];
        for (s, want) in cases {
            assert_eq!(s.parse::<DeviceSpec>().ok(), want, "{s}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        let err = parse_device("cuda").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
