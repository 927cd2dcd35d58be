//! Command-line options shared by `edgent-device` and `edgent-edge`: keys, security, threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use clap::Args;
use runtime::wire::transport::{AllowList, Security, load_keypair, load_public_keys};

/// This side's CurveZMQ key, or no security at all. CURVE is on by default; `--insecure`
/// selects the NULL mechanism.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// This side's key file (`NAME.key` from `keygen`).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub key: Option<PathBuf>,
    /// No encryption and no authentication (ZeroMQ NULL mechanism). For trusted test
    /// networks only.
    #[arg(long)]
    pub insecure: bool,
}

fn need<'a>(path: Option<&'a Path>, flag: &str, role: &str) -> anyhow::Result<&'a Path> {
    match path {
        Some(p) => Ok(p),
        None => bail!(
            "{role} needs {flag} (CurveZMQ is on by default: create keys with `keygen`), or pass --insecure for the NULL mechanism"
        ),
    }
}

impl KeyArgs {
    /// Security of a server (edge, broker): this key and the public keys in `allow` (the
    /// file named by `flag`), reloaded while it runs when the file changes or on SIGHUP.
    pub fn server(&self, allow: Option<&Path>, flag: &str) -> anyhow::Result<Security> {
        if self.insecure {
            return Ok(Security::Null);
        }
        let own = load_keypair(need(self.key.as_deref(), "--key", "a server")?)?;
        let allow = AllowList::load(need(allow, flag, "a server")?)?;
        let security = Security::curve_server(own, allow);
        security.check()?;
        Ok(security)
    }

    /// Security of a client (device, or an edge behind a broker) of the server whose public
    /// key is in `server_key`.
    pub fn client(&self, server_key: Option<&Path>) -> anyhow::Result<Security> {
        if self.insecure {
            return Ok(Security::Null);
        }
        let own = load_keypair(need(self.key.as_deref(), "--key", "a client")?)?;
        let server_path = need(server_key, "--server-key", "a client")?;
        let server = *load_public_keys(server_path)?
            .first()
            .context("no key in the server key file")?;
        let security = Security::curve_client(own, server);
        security.check()?;
        Ok(security)
    }
}

/// CPU threads for the layers.
#[derive(Args, Debug, Clone, Copy)]
pub struct ThreadArgs {
    /// CPU threads the layers run on (0: one per core; default: the count the plan's
    /// latency models for this side were profiled with).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl ThreadArgs {
    /// Runs the layers on the given count, or on `planned` (the plan's) when none was given.
    pub fn apply(self, planned: usize) -> anyhow::Result<()> {
        runtime::model::backend::use_threads(self.threads.unwrap_or(planned))
            .map_err(anyhow::Error::msg)
    }
}

/// `keygen` options.
#[derive(Args, Debug, Clone)]
pub struct KeygenArgs {
    /// Directory for the key files.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Base name: writes NAME.key (secret) and NAME.pub (public).
    #[arg(long)]
    pub name: String,
}

impl KeygenArgs {
    /// Writes the key pair and says where.
    pub fn run(&self) -> anyhow::Result<()> {
        let (secret, public) = runtime::wire::transport::keygen(&self.out, &self.name)?;
        crate::outln!("secret key {}", secret.display());
        crate::outln!("public key {}", public.display());
        Ok(())
    }
}

/// A flag set by SIGINT or SIGTERM, for a clean shutdown. A second SIGINT or SIGTERM
/// while shutting down exits at once (status 130).
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Checked before the flag is set: exits only if it was already set.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    Ok(stop)
}

/// A flag set by SIGHUP: reload the allow-lists now.
pub fn reload_on_sighup() -> anyhow::Result<Arc<AtomicBool>> {
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("installing the SIGHUP handler")?;
    Ok(reload)
}

/// Heartbeats between broker and edges.
#[derive(Args, Debug, Clone, Copy)]
pub struct HeartbeatArgs {
    /// Milliseconds between heartbeats (broker ↔ edge).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub heartbeat_ms: u64,
    /// Heartbeat intervals of silence before the peer counts as dead (5 × 500 ms = 2.5 s:
    /// a frozen peer is found within 2.5 s, or 3 s counting the first missed beat).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(3..=100))]
    pub liveness: u32,
}

impl HeartbeatArgs {
    /// As the runtime takes it.
    pub fn heartbeat(self) -> runtime::edge::Heartbeat {
        runtime::edge::Heartbeat {
            interval: std::time::Duration::from_millis(self.heartbeat_ms),
            liveness: self.liveness,
        }
    }
}
