// The path must be a string literal, not a constant or another macro.
const PLAN: &str = "generated/plan.json";

codegen_macros::edgent_plan!(PLAN);

mod other {
    codegen_macros::edgent_plan!(concat!("generated/", "plan.json"));
}

mod missing {
    codegen_macros::edgent_plan!();
}

fn main() {}
