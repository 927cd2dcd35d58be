// A layer takes a different shape from what the layer before it outputs.
codegen_macros::edgent_plan!("fixtures/inconsistent_shapes.json");

fn main() {}
