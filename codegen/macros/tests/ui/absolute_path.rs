// Absolute paths are refused: builds must not depend on where the checkout lives.
codegen_macros::edgent_plan!("/etc/edgent/plan.json");

fn main() {}
