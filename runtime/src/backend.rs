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

/// A pool of `threads` CPU threads (0: one per core) to run layers on: a role's layers run
/// inside it (`pool.install(..)`), so burn's parallel kernels use only its threads.
///
/// A role's latency models hold the thread count they were profiled with, and the plan the
/// count each binary runs with: on a small host, one thread per role keeps the emulated
/// device and the edge from competing for cores, and a small layer's time from depending on
/// whether a second core happened to join in (up to 2× on a 2-vCPU VM).
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("layers-{i}"))
        .build()
        .map_err(|e| format!("cannot start {threads} layer threads: {e}"))
}

/// Makes every layer this process runs use `threads` CPU threads (0: one per core); call
/// once, before the first layer runs.
pub fn use_threads(threads: usize) -> Result<(), String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("layers-{i}"))
        .build_global()
        .map_err(|e| format!("cannot set this process's layer threads to {threads}: {e}"))
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
