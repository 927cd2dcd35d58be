//! ZeroMQ security for device, edge and broker: CurveZMQ keys in files, an allow-list of
//! device public keys enforced by a ZAP handler, and the explicit NULL fallback.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

/// Errors setting up keys, sockets or the ZAP handler.
#[derive(Debug, Error)]
pub enum TransportError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file's content is not what `keygen` writes.
    #[error("{path}: {reason} (create keys with `keygen`)")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// libzmq was built without CURVE.
    #[error(
        "the linked libzmq has no CURVE support (zmq::has(\"curve\") is false): install a libzmq built with libsodium (Debian's libzmq3-dev is), or run with --insecure to use the NULL mechanism"
    )]
    NoCurve,
    /// A ZeroMQ call failed.
    #[error("ZeroMQ: {context}: {source}")]
    Zmq {
        /// What was being done.
        context: String,
        /// The cause.
        source: zmq::Error,
    },
}

/// Whether the linked libzmq supports CURVE.
pub fn curve_available() -> bool {
    zmq::has("curve").unwrap_or(false)
}

/// Wraps a ZeroMQ error with what was being done.
pub fn zmq_err(context: impl Into<String>) -> impl FnOnce(zmq::Error) -> TransportError {
    let context = context.into();
    move |source| TransportError::Zmq { context, source }
}

/// A CurveZMQ key pair (raw 32-byte keys).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// Public key.
    pub public: [u8; 32],
    /// Secret key.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyPair {{ public: {}, secret: <hidden> }}",
            z85(&self.public)
        )
    }
}

/// Z85 text of a 32-byte key (40 characters).
pub fn z85(key: &[u8; 32]) -> String {
    zmq::z85_encode(key).expect("32 bytes is a multiple of 4")
}

fn parse_z85(text: &str, path: &Path) -> Result<[u8; 32], TransportError> {
    let bad = |reason: String| TransportError::BadKey {
        path: path.to_path_buf(),
        reason,
    };
    if text.len() != 40 {
        return Err(bad(format!(
            "a key is 40 Z85 characters, found {} (`{text}`)",
            text.len()
        )));
    }
    let bytes = zmq::z85_decode(text).map_err(|e| bad(format!("`{text}` is not Z85: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| bad("a key decodes to 32 bytes".into()))
}

fn read(path: &Path) -> Result<String, TransportError> {
    std::fs::read_to_string(path).map_err(|source| TransportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), TransportError> {
    let io = |source| TransportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    use std::io::Write;
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io)
}

/// Creates a key pair and writes `DIR/NAME.key` (secret, mode 0600) and `DIR/NAME.pub`.
/// Refuses to overwrite existing files. Returns the two paths.
pub fn keygen(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), TransportError> {
    if !curve_available() {
        return Err(TransportError::NoCurve);
    }
    std::fs::create_dir_all(dir).map_err(|source| TransportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let pair = zmq::CurveKeyPair::new().map_err(zmq_err("generating a CURVE key pair"))?;
    let (secret_path, public_path) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    write(
        &secret_path,
        &format!(
            "# Edgent CurveZMQ secret key: keep private\npublic {}\nsecret {}\n",
            z85(&pair.public_key),
            z85(&pair.secret_key)
        ),
        true,
    )?;
    write(
        &public_path,
        &format!("# Edgent CurveZMQ public key\n{}\n", z85(&pair.public_key)),
        false,
    )?;
    Ok((secret_path, public_path))
}

/// Reads a `.key` file written by [`keygen`].
pub fn load_keypair(path: &Path) -> Result<KeyPair, TransportError> {
    let text = read(path)?;
    let mut public = None;
    let mut secret = None;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("public ") {
            public = Some(parse_z85(v.trim(), path)?);
        } else if let Some(v) = line.strip_prefix("secret ") {
            secret = Some(parse_z85(v.trim(), path)?);
        }
    }
    match (public, secret) {
        (Some(public), Some(secret)) => Ok(KeyPair { public, secret }),
        _ => Err(TransportError::BadKey {
            path: path.to_path_buf(),
            reason: "expected a `public <z85>` and a `secret <z85>` line; is this a .pub file?"
                .into(),
        }),
    }
}

/// Reads public keys: one Z85 key per line, `#` comments and blank lines ignored (a `.pub`
/// file, or several concatenated into an allow-list).
pub fn load_public_keys(path: &Path) -> Result<Vec<[u8; 32]>, TransportError> {
    let text = read(path)?;
    let keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_z85(l, path))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(TransportError::BadKey {
            path: path.to_path_buf(),
            reason: "no public key in the file".into(),
        });
    }
    Ok(keys)
}

/// How a socket authenticates.
#[derive(Debug, Clone)]
pub enum Security {
    /// CurveZMQ. A server uses `own` and admits the `allow` list; a client uses `own` and
    /// authenticates the server by `server`.
    Curve {
        /// This side's key pair.
        own: KeyPair,
        /// The server's public key (clients only).
        server: Option<[u8; 32]>,
        /// Public keys admitted (servers only).
        allow: Vec<[u8; 32]>,
    },
    /// No encryption, no authentication: only when asked for (`--insecure`).
    Null,
}

impl Security {
    /// Checks that libzmq can do what this asks.
    pub fn check(&self) -> Result<(), TransportError> {
        match self {
            Security::Curve { .. } if !curve_available() => Err(TransportError::NoCurve),
            _ => Ok(()),
        }
    }

    /// Makes `socket` a CURVE server admitting the allow-list (via the ZAP handler).
    pub fn apply_server(&self, socket: &zmq::Socket) -> Result<(), TransportError> {
        if let Security::Curve { own, .. } = self {
            socket
                .set_zap_domain(ZAP_DOMAIN)
                .map_err(zmq_err("setting the ZAP domain"))?;
            socket
                .set_curve_server(true)
                .map_err(zmq_err("making a CURVE server"))?;
            socket
                .set_curve_secretkey(&own.secret)
                .map_err(zmq_err("setting the server's secret key"))?;
        }
        Ok(())
    }

    /// Makes `socket` a CURVE client of the configured server.
    pub fn apply_client(&self, socket: &zmq::Socket) -> Result<(), TransportError> {
        if let Security::Curve { own, server, .. } = self {
            let server = server.ok_or_else(|| TransportError::BadKey {
                path: PathBuf::from("--server-key"),
                reason: "a CURVE client needs the server's public key".into(),
            })?;
            socket
                .set_curve_serverkey(&server)
                .map_err(zmq_err("setting the server key"))?;
            socket
                .set_curve_publickey(&own.public)
                .map_err(zmq_err("setting the public key"))?;
            socket
                .set_curve_secretkey(&own.secret)
                .map_err(zmq_err("setting the secret key"))?;
        }
        Ok(())
    }
}

/// The ZAP domain Edgent servers use.
pub const ZAP_DOMAIN: &str = "edgent";

/// Counts of ZAP decisions.
#[derive(Debug, Default)]
pub struct ZapCounters {
    /// Handshakes admitted.
    pub allowed: AtomicU64,
    /// Handshakes refused (key not on the allow-list, or an unexpected mechanism).
    pub denied: AtomicU64,
}

/// Starts the ZAP handler for `context` (RFC 27): CURVE clients whose public key is in
/// `allow` are admitted, everything else is refused. Must run before a server socket of
/// the context accepts connections. The thread ends when the context is terminated.
pub fn start_zap(
    context: &zmq::Context,
    allow: &[[u8; 32]],
) -> Result<Arc<ZapCounters>, TransportError> {
    let socket = context
        .socket(zmq::REP)
        .map_err(zmq_err("creating the ZAP socket"))?;
    socket
        .set_linger(0)
        .map_err(zmq_err("configuring the ZAP socket"))?;
    socket
        .bind("inproc://zeromq.zap.01")
        .map_err(zmq_err("binding the ZAP handler"))?;
    let allow: HashSet<[u8; 32]> = allow.iter().copied().collect();
    let counters = Arc::new(ZapCounters::default());
    let seen = Arc::clone(&counters);
    std::thread::Builder::new()
        .name("edgent-zap".into())
        .spawn(move || {
            // recv fails with ETERM when the context ends: then the handler stops.
            while let Ok(frames) = socket.recv_multipart(0) {
                // version, request id, domain, address, identity, mechanism, credentials…
                let admitted = frames.len() >= 7
                    && frames[0] == b"1.0"
                    && frames[5] == b"CURVE"
                    && <[u8; 32]>::try_from(frames[6].as_slice())
                        .is_ok_and(|key| allow.contains(&key));
                let (status, text): (&[u8], &[u8]) = if admitted {
                    seen.allowed.fetch_add(1, Ordering::Relaxed);
                    (b"200", b"OK")
                } else {
                    seen.denied.fetch_add(1, Ordering::Relaxed);
                    (b"400", b"public key not on the allow-list")
                };
                let request_id = frames.get(1).cloned().unwrap_or_default();
                let reply: [&[u8]; 6] = [b"1.0", &request_id, status, text, b"", b""];
                if socket.send_multipart(reply, 0).is_err() {
                    break;
                }
            }
        })
        .map_err(|source| TransportError::Io {
            path: PathBuf::from("<zap thread>"),
            source,
        })?;
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_files_that_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = keygen(dir.path(), "device").unwrap();
        let pair = load_keypair(&secret).unwrap();
        assert_eq!(load_public_keys(&public).unwrap(), vec![pair.public]);
        assert!(
            keygen(dir.path(), "device").is_err(),
            "never overwrites keys"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = load_keypair(&public).unwrap_err().to_string();
        assert!(err.contains("is this a .pub file"), "{err}");
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow.pub");
        std::fs::write(&path, "# nothing\n\n").unwrap();
        assert!(
            load_public_keys(&path)
                .unwrap_err()
                .to_string()
                .contains("no public key")
        );
        std::fs::write(&path, "short\n").unwrap();
        assert!(
            load_public_keys(&path)
                .unwrap_err()
                .to_string()
                .contains("40 Z85")
        );
    }

    #[test]
    fn curve_pair_talks_and_unlisted_key_gets_nothing() {
        assert!(zmq::has("curve").unwrap(), "Debian's libzmq has CURVE");
        let ctx = zmq::Context::new();
        let server_keys = zmq::CurveKeyPair::new().unwrap();
        let good = zmq::CurveKeyPair::new().unwrap();
        let bad = zmq::CurveKeyPair::new().unwrap();
        let pair = |k: &zmq::CurveKeyPair| KeyPair {
            public: k.public_key,
            secret: k.secret_key,
        };
        let counters = start_zap(&ctx, &[good.public_key]).unwrap();
        let server = ctx.socket(zmq::ROUTER).unwrap();
        Security::Curve {
            own: pair(&server_keys),
            server: None,
            allow: vec![],
        }
        .apply_server(&server)
        .unwrap();
        // CURVE and ZAP apply to tcp and ipc; inproc has no security handshake.
        server.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = server.get_last_endpoint().unwrap().unwrap();
        let client = |k: &zmq::CurveKeyPair| {
            let s = ctx.socket(zmq::DEALER).unwrap();
            s.set_linger(0).unwrap();
            Security::Curve {
                own: pair(k),
                server: Some(server_keys.public_key),
                allow: vec![],
            }
            .apply_client(&s)
            .unwrap();
            s.connect(&endpoint).unwrap();
            s
        };
        let denied = client(&bad);
        denied.send("hello", 0).unwrap();
        let admitted = client(&good);
        admitted.send("hello", 0).unwrap();
        assert!(
            server.poll(zmq::POLLIN, 5000).unwrap() > 0,
            "the listed key is served"
        );
        let frames = server.recv_multipart(0).unwrap();
        assert_eq!(frames[1], b"hello");
        assert_eq!(
            server.poll(zmq::POLLIN, 300).unwrap(),
            0,
            "nothing from the unlisted key"
        );
        assert_eq!(counters.allowed.load(Ordering::Relaxed), 1);
        assert!(counters.denied.load(Ordering::Relaxed) >= 1);
        server.set_linger(0).unwrap();
    }
}
