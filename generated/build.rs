//! The plan compiled in can be chosen with `EDGENT_PLAN` (see `edgent_plan!`): rebuild when
//! it changes.

fn main() {
    println!("cargo:rerun-if-env-changed=EDGENT_PLAN");
}
