//! Criterion benchmarks of the numerical core (to be written).

fn main() {}
