//! Every way `edgent_plan!` can fail is a compile error on the literal (trybuild, with
//! checked-in `.stderr` files; `TRYBUILD=overwrite` rewrites them).

use std::path::Path;

/// trybuild compiles the cases as a crate of its own, `<target>/tests/trybuild/codegen-macros`,
/// and the macro resolves paths against that crate's `Cargo.toml`, like any invoking crate:
/// put the fixtures beside it so the cases can say `"fixtures/…"`.
fn install_fixtures() {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target>/tmp");
    let to = target.join("tests/trybuild/codegen-macros/fixtures");
    std::fs::create_dir_all(&to).unwrap();
    let from = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn plan_failures_are_compile_errors() {
    install_fixtures();
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
