// No such file: the error says to generate the plan.
codegen_macros::edgent_plan!("fixtures/missing.json");

fn main() {}
