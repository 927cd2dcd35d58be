//! Command-line options shared by `edgent-device` and `edgent-edge`: keys and security.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use clap::Args;
use runtime::wire::transport::{Security, load_keypair, load_public_keys};

/// CurveZMQ options. CURVE is on by default; `--insecure` selects the NULL mechanism.
#[derive(Args, Debug, Clone)]
pub struct SecurityArgs {
    /// This side's key file (`NAME.key` from `keygen`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Server: public keys admitted, one per line (e.g. concatenated `.pub` files).
    #[arg(long, value_name = "FILE")]
    pub allow: Option<PathBuf>,
    /// Client: the server's public key (`NAME.pub`).
    #[arg(long, value_name = "FILE")]
    pub server_key: Option<PathBuf>,
    /// No encryption and no authentication (ZeroMQ NULL mechanism). For trusted test
    /// networks only.
    #[arg(long, conflicts_with_all = ["key", "allow", "server_key"])]
    pub insecure: bool,
}

fn need<'a>(path: &'a Option<PathBuf>, flag: &str, role: &str) -> anyhow::Result<&'a Path> {
    match path {
        Some(p) => Ok(p),
        None => bail!(
            "{role} needs {flag} (CurveZMQ is on by default: create keys with `keygen`), or pass --insecure for the NULL mechanism"
        ),
    }
}

impl SecurityArgs {
    /// Security of a server (edge, broker): own key and allow-list.
    pub fn server(&self) -> anyhow::Result<Security> {
        if self.insecure {
            return Ok(Security::Null);
        }
        let own = load_keypair(need(&self.key, "--key", "a server")?)?;
        let allow = load_public_keys(need(&self.allow, "--allow", "a server")?)?;
        let security = Security::Curve {
            own,
            server: None,
            allow,
        };
        security.check()?;
        Ok(security)
    }

    /// Security of a client (device, or an edge behind a broker).
    pub fn client(&self) -> anyhow::Result<Security> {
        if self.insecure {
            return Ok(Security::Null);
        }
        let own = load_keypair(need(&self.key, "--key", "a client")?)?;
        let server_path = need(&self.server_key, "--server-key", "a client")?;
        let server = *load_public_keys(server_path)?
            .first()
            .context("no key in the server key file")?;
        let security = Security::Curve {
            own,
            server: Some(server),
            allow: Vec::new(),
        };
        security.check()?;
        Ok(security)
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
        println!("secret key {}", secret.display());
        println!("public key {}", public.display());
        Ok(())
    }
}

/// A flag set by SIGINT or SIGTERM.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    Ok(stop)
}
