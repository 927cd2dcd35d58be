//! ZeroMQ security for device, edge and broker: CurveZMQ keys in files, an allow-list of
//! device public keys enforced by a ZAP handler, and the explicit NULL fallback.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

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

impl KeyPair {
    /// A new random key pair.
    pub fn generate() -> Result<Self, TransportError> {
        let pair = zmq::CurveKeyPair::new().map_err(zmq_err("generating a CURVE key pair"))?;
        Ok(Self {
            public: pair.public_key,
            secret: pair.secret_key,
        })
    }
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
    let pair = KeyPair::generate()?;
    let (secret_path, public_path) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    write(
        &secret_path,
        &format!(
            "# Edgent CurveZMQ secret key: keep private\npublic {}\nsecret {}\n",
            z85(&pair.public),
            z85(&pair.secret)
        ),
        true,
    )?;
    write(
        &public_path,
        &format!("# Edgent CurveZMQ public key\n{}\n", z85(&pair.public)),
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

/// The public keys a CURVE server admits. Shared by the server and its ZAP handler, and
/// reloaded from its file while the server runs: on request (SIGHUP) or when the file's
/// modification time changes. A failed reload keeps the keys in force.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    keys: Arc<RwLock<HashSet<[u8; 32]>>>,
    path: Option<PathBuf>,
    stamp: Arc<Mutex<Option<SystemTime>>>,
}

impl AllowList {
    /// A fixed list (not backed by a file).
    pub fn new(keys: impl IntoIterator<Item = [u8; 32]>) -> Self {
        Self {
            keys: Arc::new(RwLock::new(keys.into_iter().collect())),
            ..Self::default()
        }
    }

    /// The keys in `path` ([`load_public_keys`]); [`AllowList::reload`] reads it again.
    pub fn load(path: &Path) -> Result<Self, TransportError> {
        let list = Self {
            path: Some(path.to_path_buf()),
            ..Self::default()
        };
        list.reload()?;
        Ok(list)
    }

    /// Whether `key` is admitted now.
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.keys.read().is_ok_and(|k| k.contains(key))
    }

    /// Keys admitted now.
    pub fn len(&self) -> usize {
        self.keys.read().map_or(0, |k| k.len())
    }

    /// Whether no key is admitted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file the list is read from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reads the file again and puts its keys in force; `Ok(false)` for a fixed list.
    /// On an error the keys in force stay.
    pub fn reload(&self) -> Result<bool, TransportError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        // Noted before reading, so a broken file is reported once per change.
        if let Ok(mut s) = self.stamp.lock() {
            *s = modified(path);
        }
        let keys: HashSet<[u8; 32]> = load_public_keys(path)?.into_iter().collect();
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        Ok(true)
    }

    /// Reloads when the file's modification time differs from the last load.
    pub fn reload_if_changed(&self) -> Result<bool, TransportError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let last = self.stamp.lock().ok().and_then(|s| *s);
        if modified(path) == last {
            return Ok(false);
        }
        self.reload()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
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
        allow: AllowList,
    },
    /// No encryption, no authentication: only when asked for (`--insecure`).
    Null,
}

impl Security {
    /// A CURVE server with key pair `own` admitting `allow`.
    pub fn curve_server(own: KeyPair, allow: AllowList) -> Self {
        Security::Curve {
            own,
            server: None,
            allow,
        }
    }

    /// A CURVE client with key pair `own` of the server whose public key is `server`.
    pub fn curve_client(own: KeyPair, server: [u8; 32]) -> Self {
        Security::Curve {
            own,
            server: Some(server),
            allow: AllowList::default(),
        }
    }

    /// Checks that libzmq can do what this asks.
    pub fn check(&self) -> Result<(), TransportError> {
        match self {
            Security::Curve { .. } if !curve_available() => Err(TransportError::NoCurve),
            _ => Ok(()),
        }
    }

    /// The allow-list of a CURVE server.
    pub fn allow_list(&self) -> Option<&AllowList> {
        match self {
            Security::Curve { allow, .. } => Some(allow),
            Security::Null => None,
        }
    }

    /// Makes `socket` a CURVE server whose clients the ZAP handler checks against the
    /// allow-list of `domain` (see [`start_zap`]).
    pub fn apply_server(&self, socket: &zmq::Socket, domain: &str) -> Result<(), TransportError> {
        if let Security::Curve { own, .. } = self {
            socket
                .set_zap_domain(domain)
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

/// The ZAP domain of the sockets devices connect to (an edge, a broker's front end).
pub const ZAP_DOMAIN: &str = "edgent";
/// The ZAP domain of a broker's back end, where edges connect: a separate allow-list, so
/// a device key cannot register as an edge.
pub const ZAP_DOMAIN_EDGES: &str = "edgent-edges";

/// Counts of ZAP decisions and allow-list changes.
#[derive(Debug, Default)]
pub struct ZapCounters {
    /// Handshakes admitted.
    pub allowed: AtomicU64,
    /// Handshakes refused (key not on the allow-list, or an unexpected mechanism).
    pub denied: AtomicU64,
    /// Messages dropped because their sender's key was removed after its handshake.
    pub revoked: AtomicU64,
    /// Allow-list reloads that put a file's keys in force.
    pub reloads: AtomicU64,
    /// Reloads that failed (the keys in force stayed).
    pub reload_errors: AtomicU64,
}

/// The running ZAP handler: stops and joins its thread when dropped, so that the
/// context can terminate (and flush its sockets' last messages).
#[derive(Debug)]
pub struct Zap {
    /// What it decided.
    pub counters: Arc<ZapCounters>,
    domains: Vec<(String, AllowList)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Zap {
    /// Keys on its allow-lists now.
    pub fn keys(&self) -> usize {
        self.domains.iter().map(|(_, l)| l.len()).sum()
    }

    /// Whether a message from a sender that authenticated with `user` (the ZAP user id,
    /// see [`recv_authenticated`]) may be served now on `domain`: its key is still listed.
    /// Counts a refusal as revoked.
    pub fn still_allowed(&self, domain: &str, user: Option<&[u8; 32]>) -> bool {
        let listed = self
            .domains
            .iter()
            .find(|(d, _)| d == domain)
            .zip(user)
            .is_some_and(|((_, list), key)| list.contains(key));
        if !listed {
            self.counters.revoked.fetch_add(1, Ordering::Relaxed);
        }
        listed
    }
}

impl Drop for Zap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often the ZAP thread looks at the stop flag, the reload flag and the allow-lists'
/// files: a changed file is in force within this (well under the one second promised).
const ZAP_TICK: Duration = Duration::from_millis(100);

/// Starts the ZAP handler for `context` (RFC 27): a CURVE client is admitted when its
/// public key is on the allow-list of the domain its server socket names (see
/// [`Security::apply_server`]); everything else is refused. Must run before a server
/// socket of the context accepts connections. The handler answers with the client's key
/// as ZAP user id, so the server can re-check each message ([`Zap::still_allowed`]).
/// The allow-lists are reloaded when `reload` is set (SIGHUP), and whenever their
/// files change.
pub fn start_zap(
    context: &zmq::Context,
    domains: &[(&str, &AllowList)],
    reload: Option<Arc<AtomicBool>>,
) -> Result<Zap, TransportError> {
    let socket = context
        .socket(zmq::REP)
        .map_err(zmq_err("creating the ZAP socket"))?;
    socket
        .set_linger(0)
        .map_err(zmq_err("configuring the ZAP socket"))?;
    socket
        .bind("inproc://zeromq.zap.01")
        .map_err(zmq_err("binding the ZAP handler"))?;
    let domains: Vec<(String, AllowList)> = domains
        .iter()
        .map(|(d, l)| (d.to_string(), (*l).clone()))
        .collect();
    let counters = Arc::new(ZapCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, lists, stopping) = (Arc::clone(&counters), domains.clone(), Arc::clone(&stop));
    let thread = std::thread::Builder::new()
        .name("edgent-zap".into())
        .spawn(move || {
            let mut last_check = Instant::now();
            while !stopping.load(Ordering::Relaxed) {
                let forced = reload
                    .as_ref()
                    .is_some_and(|r| r.swap(false, Ordering::Relaxed));
                if forced || last_check.elapsed() >= ZAP_TICK {
                    refresh(&lists, forced, &seen);
                    last_check = Instant::now();
                }
                match socket.poll(zmq::POLLIN, ZAP_TICK.as_millis() as i64) {
                    Ok(0) | Err(zmq::Error::EINTR) => continue,
                    Ok(_) => {}
                    Err(_) => break,
                }
                let Ok(frames) = socket.recv_multipart(0) else {
                    break;
                };
                let reply = zap_reply(&frames, &lists, &seen);
                if socket.send_multipart(reply, 0).is_err() {
                    break;
                }
            }
        })
        .map_err(|source| TransportError::Io {
            path: PathBuf::from("<zap thread>"),
            source,
        })?;
    Ok(Zap {
        counters,
        domains,
        stop,
        thread: Some(thread),
    })
}

/// Reloads every file-backed list that changed (or all, when `forced`).
fn refresh(lists: &[(String, AllowList)], forced: bool, counters: &ZapCounters) {
    for (_, list) in lists {
        let outcome = if forced {
            list.reload()
        } else {
            list.reload_if_changed()
        };
        match outcome {
            Ok(true) => {
                counters.reloads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) => {
                counters.reload_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "edgent: allow-list not reloaded, {} keys stay in force: {e}",
                    list.len()
                );
            }
        }
    }
}

/// The ZAP reply to one request (version, request id, domain, address, identity,
/// mechanism, credentials…).
fn zap_reply(
    frames: &[Vec<u8>],
    lists: &[(String, AllowList)],
    counters: &ZapCounters,
) -> Vec<Vec<u8>> {
    let key = (frames.len() >= 7 && frames[0] == b"1.0" && frames[5] == b"CURVE")
        .then(|| <[u8; 32]>::try_from(frames[6].as_slice()).ok())
        .flatten();
    let list = frames.get(2).and_then(|domain| {
        lists
            .iter()
            .find(|(d, _)| d.as_bytes() == domain.as_slice())
    });
    let admitted = key.zip(list).filter(|(k, (_, l))| l.contains(k));
    let request_id = frames.get(1).cloned().unwrap_or_default();
    // The user id is the key in hex: libzmq hands it to the server as a C string.
    let (status, text, user): (&[u8], &[u8], Vec<u8>) = match admitted {
        Some((k, _)) => {
            counters.allowed.fetch_add(1, Ordering::Relaxed);
            (b"200", b"OK", hex::encode(k).into_bytes())
        }
        None => {
            counters.denied.fetch_add(1, Ordering::Relaxed);
            (b"400", b"public key not on the allow-list", Vec::new())
        }
    };
    vec![
        b"1.0".to_vec(),
        request_id,
        status.to_vec(),
        text.to_vec(),
        user,
        Vec::new(),
    ]
}

/// A multipart message and the CURVE key its sender authenticated with, if any.
pub type Authenticated = (Vec<Vec<u8>>, Option<[u8; 32]>);

/// Receives one multipart message, with the CURVE key its sender authenticated with (the
/// ZAP user id of [`start_zap`]; `None` under NULL).
pub fn recv_authenticated(socket: &zmq::Socket, flags: i32) -> Result<Authenticated, zmq::Error> {
    let mut frames = Vec::new();
    let mut user = None;
    loop {
        let mut msg = socket.recv_msg(flags)?;
        let more = msg.get_more();
        // The last frame came from the peer (a ROUTER makes the first, the routing id,
        // itself, without the connection's metadata). The user id is the key in hex.
        if !more {
            user = msg
                .gets("User-Id")
                .and_then(|u| hex::decode(u).ok())
                .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok());
        }
        frames.push(msg.to_vec());
        if !more {
            return Ok((frames, user));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ROUTER that is a CURVE server with `own`, on a loopback port (CURVE and ZAP apply
    /// to tcp and ipc; inproc has no handshake). Returns it and its endpoint.
    fn curve_router(ctx: &zmq::Context, own: &KeyPair) -> (zmq::Socket, String) {
        let server = ctx.socket(zmq::ROUTER).unwrap();
        server.set_linger(0).unwrap();
        Security::curve_server(own.clone(), AllowList::default())
            .apply_server(&server, ZAP_DOMAIN)
            .unwrap();
        server.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = server.get_last_endpoint().unwrap().unwrap();
        (server, endpoint)
    }

    /// A DEALER that is a CURVE client with `own` of `server` at `endpoint`.
    fn curve_dealer(
        ctx: &zmq::Context,
        own: &KeyPair,
        server: &KeyPair,
        endpoint: &str,
    ) -> zmq::Socket {
        let s = ctx.socket(zmq::DEALER).unwrap();
        s.set_linger(0).unwrap();
        s.set_reconnect_ivl(50).unwrap();
        Security::curve_client(own.clone(), server.public)
            .apply_client(&s)
            .unwrap();
        s.connect(endpoint).unwrap();
        s
    }

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
    fn allow_list_changes_take_effect_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("allow.pub");
        let ctx = zmq::Context::new();
        let keys: Vec<KeyPair> = (0..3).map(|_| KeyPair::generate().unwrap()).collect();
        let (server_keys, a, b) = (&keys[0], &keys[1], &keys[2]);
        std::fs::write(&file, z85(&a.public) + "\n").unwrap();
        let allow = AllowList::load(&file).unwrap();
        let reload = Arc::new(AtomicBool::new(false));
        let zap = start_zap(&ctx, &[(ZAP_DOMAIN, &allow)], Some(Arc::clone(&reload))).unwrap();
        let (server, endpoint) = curve_router(&ctx, server_keys);
        let client = |k: &KeyPair| curve_dealer(&ctx, k, server_keys, &endpoint);
        // Whose message the server gets within `ms`, if any.
        let served = |ms: i64| {
            (server.poll(zmq::POLLIN, ms).unwrap() > 0)
                .then(|| recv_authenticated(&server, 0).unwrap())
                .map(|(frames, user)| (frames.len(), user))
        };
        let (ca, cb) = (client(a), client(b));
        // DONTWAIT: a DEALER whose handshake was refused has no peer to queue for.
        let send = |s: &zmq::Socket, text: &str| {
            let _ = s.send(text, zmq::DONTWAIT);
        };
        ca.send("a", 0).unwrap();
        send(&cb, "b");
        assert_eq!(served(3000), Some((2, Some(a.public))));
        assert_eq!(served(300), None, "b is not listed");
        assert!(zap.still_allowed(ZAP_DOMAIN, Some(&a.public)));

        // Swap a for b in the file: in force within a second, without a restart. (A
        // client refused at its handshake does not retry, libzmq 4.3: b connects anew
        // each try, as a device that reconnects would.)
        std::fs::write(&file, z85(&b.public) + "\n").unwrap();
        let changed = Instant::now();

        let mut b_served = None;
        while changed.elapsed() < Duration::from_secs(3) && b_served.is_none() {
            let cb = client(b);
            send(&cb, "b");
            if let Some((_, Some(user))) = served(200)
                && user == b.public
            {
                b_served = Some(changed.elapsed());
            }
        }
        let took = b_served.expect("an added key starts working");
        eprintln!("added key served {took:?} after the file changed");
        assert!(
            took < Duration::from_secs(1),
            "added key working after {took:?}"
        );
        assert!(
            !zap.still_allowed(ZAP_DOMAIN, Some(&a.public)),
            "a removed key stops working on its open connection"
        );
        assert!(zap.counters.revoked.load(Ordering::Relaxed) >= 1);
        assert!(zap.counters.reloads.load(Ordering::Relaxed) >= 1);

        // SIGHUP's flag reloads even when the modification time did not change.
        let stamp = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::write(&file, z85(&a.public) + "\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(stamp)
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(!allow.contains(&a.public), "same mtime: not noticed");
        reload.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        assert!(allow.contains(&a.public) && !allow.contains(&b.public));
        // A broken file keeps the keys in force.
        std::fs::write(&file, "not a key\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(allow.contains(&a.public));
        assert!(zap.counters.reload_errors.load(Ordering::Relaxed) >= 1);
        drop(zap);
    }

    #[test]
    fn curve_pair_talks_and_unlisted_key_gets_nothing() {
        assert!(zmq::has("curve").unwrap(), "Debian's libzmq has CURVE");
        let ctx = zmq::Context::new();
        let [server_keys, good, bad] = [(); 3].map(|_| KeyPair::generate().unwrap());
        let allow = AllowList::new([good.public]);
        let zap = start_zap(&ctx, &[(ZAP_DOMAIN, &allow)], None).unwrap();
        let counters = &zap.counters;
        let (server, endpoint) = curve_router(&ctx, &server_keys);
        let client = |k: &KeyPair| curve_dealer(&ctx, k, &server_keys, &endpoint);
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
