//! `edgent_plan!`: the Edgent plan file, compiled in (DESIGN.md §6).
//!
//! A thin shell over the `codegen` crate, which does the work and is unit-tested: this crate
//! only parses the macro's input, finds the file and turns failures into compile errors.

use std::path::{Path, PathBuf};

use proc_macro::TokenStream;
use syn::LitStr;

/// The environment variable that overrides the plan file the literal names.
const PLAN_VARIABLE: &str = "EDGENT_PLAN";

/// Reads the plan file at compile time and emits `pub mod plan { … }` with its constants,
/// the `(exit, partition)` cost tables and lower envelopes as `static` data, and
/// `plan::decide(bandwidth_bps, rtt_ms, deadline_ms)`.
///
/// The path is a string literal relative to the invoking crate's `Cargo.toml`; the file is
/// `include_bytes!`-ed, so editing it rebuilds the crate, and so are the weights beside it
/// (`plan::WEIGHTS`). The crate must depend on `runtime`, whose `plan` module the emitted
/// code calls.
///
/// The environment variable `EDGENT_PLAN`, when set, names another plan file (an absolute
/// path) to compile in instead: `cargo xtask pipeline` builds the binaries of its own run
/// this way without touching the committed plan. A crate using it should rebuild when the
/// variable changes (`cargo:rerun-if-env-changed=EDGENT_PLAN` in its build script).
///
/// ```ignore
/// codegen_macros::edgent_plan!("../generated/plan.json");
///
/// let decision = plan::decide(2e6, 5.0, 100.0);
/// assert_eq!(plan::TABLES.len(), plan::EXITS);
/// ```
///
/// A missing or stale plan, bad JSON, another schema version or an inconsistent plan is a
/// compile error on the literal that says what to do (usually `cargo xtask generate`).
#[proc_macro]
pub fn edgent_plan(input: TokenStream) -> TokenStream {
    match expand(input.into()) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn expand(input: proc_macro2::TokenStream) -> syn::Result<proc_macro2::TokenStream> {
    let literal: LitStr = syn::parse2(input).map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected the plan file's path as a string literal, relative to the crate's \
             Cargo.toml: `edgent_plan!(\"generated/plan.json\")`",
        )
    })?;
    if !literal.suffix().is_empty() {
        return Err(syn::Error::new(
            literal.span(),
            "the plan's path takes no suffix",
        ));
    }
    let written = literal.value();
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").map_err(|_| {
        syn::Error::new(
            literal.span(),
            "CARGO_MANIFEST_DIR is not set: build with cargo, which sets it",
        )
    })?;
    let from_literal = codegen::resolve(Path::new(&manifest_dir), &written)
        .map_err(|message| syn::Error::new(literal.span(), message))?;
    // The plan as a path, and as messages name it (never this checkout's absolute path).
    let (path, written) = match std::env::var_os(PLAN_VARIABLE).filter(|v| !v.is_empty()) {
        None => (from_literal, written),
        Some(chosen) => {
            let chosen = PathBuf::from(chosen);
            if !chosen.is_absolute() {
                return Err(syn::Error::new(
                    literal.span(),
                    format!(
                        "{PLAN_VARIABLE} must be an absolute path to a plan file, got `{}`",
                        chosen.display()
                    ),
                ));
            }
            let named = format!("{PLAN_VARIABLE}={}", chosen.display());
            (chosen, named)
        }
    };
    if path.to_str().is_none() {
        return Err(syn::Error::new(
            literal.span(),
            format!("the path of `{written}` is not UTF-8: move the crate or the plan"),
        ));
    }
    // The messages name the file as written, never the absolute path of this checkout.
    let plan = codegen::load(&path).map_err(|problems| {
        problems
            .into_iter()
            .map(|problem| syn::Error::new(literal.span(), format!("`{written}`: {problem}")))
            .reduce(|mut all, next| {
                all.combine(next);
                all
            })
            .unwrap_or_else(|| {
                syn::Error::new(literal.span(), format!("`{written}` cannot be read"))
            })
    })?;
    let weights = path.with_file_name(&plan.weights_file);
    if Path::new(&plan.weights_file).components().count() != 1 || !weights.is_file() {
        return Err(syn::Error::new(
            literal.span(),
            format!(
                "`{written}`: the weights file `{}` it names is not beside it: run `cargo xtask generate`, which copies the weights there",
                plan.weights_file
            ),
        ));
    }
    Ok(codegen::tokens::expand(&plan, &path))
}
