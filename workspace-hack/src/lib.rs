//! No code: this crate exists for its `Cargo.toml`, which unifies dependency features across
//! the workspace's commands so that burn is compiled once (see the manifest's comment).
