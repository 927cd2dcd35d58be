//! Choosing the burn backend the model runs on.

use std::sync::OnceLock;

use burn::prelude::Device;

/// A burn backend this build can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// burn-flex, pure Rust CPU backend with SIMD and rayon: the fastest here (see `cargo xtask bench`).
    #[default]
    Flex,
    /// burn-ndarray CPU backend.
    Ndarray,
    /// burn-wgpu: the GPU wgpu picks (Vulkan on Linux, Metal on macOS), or Mesa's CPU
    /// Vulkan driver (lavapipe) where there is no GPU.
    Wgpu,
}

/// The wgpu device, opened once per process (burn's wgpu runtime cannot be initialised
/// twice), with a description of its adapter; or why there is none.
static WGPU: OnceLock<Result<(Device, String), String>> = OnceLock::new();

impl Backend {
    /// Every backend of this build.
    pub const ALL: [Backend; 3] = [Self::Flex, Self::Ndarray, Self::Wgpu];

    /// The backend's device. The CPU backends always have one; for `wgpu` this is
    /// [`Backend::open`]'s device, or — when no adapter could be opened — a lazy one that
    /// fails at first use: call [`Backend::open`] to get the reason instead.
    #[allow(deprecated)]
    pub fn device(self) -> Device {
        match self {
            Self::Flex => Device::flex(),
            Self::Ndarray => Device::ndarray(),
            Self::Wgpu => self
                .open()
                .unwrap_or_else(|_| Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        }
    }

    /// The backend's device, or why it cannot run here: for `wgpu`, the adapter that
    /// could not be found or opened (no GPU and no Vulkan driver: install Mesa's
    /// `mesa-vulkan-drivers` for a CPU one).
    pub fn open(self) -> Result<Device, String> {
        match self {
            Self::Flex | Self::Ndarray => Ok(self.device()),
            Self::Wgpu => wgpu().map(|(device, _)| device.clone()),
        }
    }

    /// What the backend runs on, for reports: for `wgpu` the adapter, its type, graphics API
    /// and driver (e.g. `llvmpipe (…) (Cpu, Vulkan, driver llvmpipe Mesa 22.3.6 …)`), or
    /// why there is none.
    pub fn adapter(self) -> String {
        match self {
            Self::Flex | Self::Ndarray => "this CPU".into(),
            Self::Wgpu => match wgpu() {
                Ok((_, adapter)) => adapter.clone(),
                Err(why) => format!("none ({why})"),
            },
        }
    }

    /// The backend's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
        }
    }
}

/// Opens burn's wgpu runtime on the adapter wgpu prefers (a discrete GPU first; a CPU
/// driver such as lavapipe last), once per process.
fn wgpu() -> Result<&'static (Device, String), String> {
    WGPU.get_or_init(|| {
        let (device, setup) = Device::wgpu_options()
            .init_with_setup()
            .map_err(|e| format!("no wgpu adapter: {e}"))?;
        let info = setup.adapter.get_info();
        let driver = [info.driver.as_str(), info.driver_info.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let adapter = format!(
            "{} ({:?}, {:?}, driver {})",
            info.name, info.device_type, info.backend, driver
        );
        Ok((device, adapter))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// A pool of `threads` CPU threads (0: one per core) for burn's parallel kernels: layers
/// run inside it (`pool.install(..)`) split their work over its threads only.
///
/// A role's latency models hold the thread count they were profiled with, and the plan the
/// count each binary runs with: on a small host, one thread per role keeps a small layer's
/// time from depending on whether a second core happened to join in (up to 2× on a 2-vCPU
/// VM), and the emulated device's and the edge's kernels from competing for cores.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, String> {
    pool_builder(threads)
        .build()
        .map_err(|e| format!("cannot start {threads} layer threads: {e}"))
}

/// Makes burn's parallel kernels in this process use `threads` CPU threads (0: one per
/// core); call once, before the first layer runs. The threads that call the layers (the
/// device's main and speculation threads, the edge's workers) run their serial parts
/// themselves.
pub fn use_threads(threads: usize) -> Result<(), String> {
    pool_builder(threads)
        .build_global()
        .map_err(|e| format!("cannot set this process's layer threads to {threads}: {e}"))
}

/// The builder of a pool of `threads` layer threads; 0 is one per core, whatever
/// `RAYON_NUM_THREADS` says, so that a recorded count means the same everywhere.
fn pool_builder(threads: usize) -> rayon::ThreadPoolBuilder {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("layers-{i}"))
}

/// Threads of the pool the calling thread's layers run on (the process's, or the one it
/// was installed in).
pub fn current_threads() -> usize {
    rayon::current_num_threads()
}

/// "1 thread", "4 threads", or "every core" (0).
pub fn threads_in_words(threads: usize) -> String {
    match threads {
        0 => "every core".into(),
        1 => "1 thread".into(),
        n => format!("{n} threads"),
    }
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown backend `{s}`: expected flex, ndarray or wgpu"))
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_runs_layers_on_its_own_threads() {
        let one = thread_pool(1).unwrap();
        assert_eq!(one.install(rayon::current_num_threads), 1);
        assert_eq!(one.install(rayon::current_thread_index), Some(0));
        let every = thread_pool(0).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(every.install(rayon::current_num_threads), cores);
        // A layer run inside the pool gives the same result as outside it.
        let device = Backend::default().device();
        let x = crate::Features::from_values(vec![-1.0, 2.0], &[1, 2], &device).unwrap();
        let relu =
            crate::model::layers::spec(String::new(), crate::model::layers::Op::Relu, &[2], 10);
        let layer = crate::Layer::init(&relu, &device);
        let inside = one.install(|| layer.forward(x.clone(), &relu.input).to_values());
        assert_eq!(inside, layer.forward(x, &relu.input).to_values());
    }
}
