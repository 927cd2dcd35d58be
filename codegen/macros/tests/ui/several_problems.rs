// Every problem is reported, each on the literal.
codegen_macros::edgent_plan!("fixtures/several_problems.json");

fn main() {}
