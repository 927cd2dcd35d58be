//! Choosing the burn backend the model runs on.

use burn::prelude::Device;

/// A burn backend this build can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// burn-flex, pure Rust CPU backend with SIMD and rayon: the fastest here (see `cargo xtask bench`).
    #[default]
    Flex,
    /// burn-ndarray CPU backend.
    Ndarray,
}

impl Backend {
    /// Every backend of this build.
    pub const ALL: [Backend; 2] = [Self::Flex, Self::Ndarray];

    /// The backend's device.
    #[allow(deprecated)]
    pub fn device(self) -> Device {
        match self {
            Self::Flex => Device::flex(),
            Self::Ndarray => Device::ndarray(),
        }
    }

    /// The backend's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown backend `{s}`: expected flex or ndarray"))
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
