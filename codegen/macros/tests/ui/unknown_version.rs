// A plan of another schema version: the version, not its fields.
codegen_macros::edgent_plan!("fixtures/unknown_version.json");

fn main() {}
