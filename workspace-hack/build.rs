//! Empty: present so that the build-dependencies in `Cargo.toml` unify the build side's
//! features too.

fn main() {}
