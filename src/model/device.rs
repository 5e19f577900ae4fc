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

/// Serialised as its name (`cpu`, `cuda:0`).
impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
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

/// Makes `device`'s CUDA context current on the calling thread; does nothing on the CPU.
///
/// candle makes the context current before it launches a kernel or copies, but not before it
/// frees memory. A tensor dropped on a thread that has run no kernel yet (a fresh tokio
/// blocking thread, a worker thread dropping an adapter) then fails to free with
/// `CUDA_ERROR_INVALID_CONTEXT`; cudarc keeps that error and returns it from the next operation on
/// the device, anywhere. So every entry point that may drop device tensors on a new thread calls
/// this first.
#[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
pub fn bind_to_thread(device: &Device) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        cuda.cuda_stream().context().bind_to_thread().map_err(|e| Error::Device(format!("{:?}", device.location()), e.to_string()))?;
    }
    Ok(())
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
