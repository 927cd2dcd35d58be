// A syntax error in the plan: serde's line and column.
codegen_macros::edgent_plan!("fixtures/bad_json.json");

fn main() {}
