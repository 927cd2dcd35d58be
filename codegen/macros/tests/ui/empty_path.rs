codegen_macros::edgent_plan!("");

fn main() {}
