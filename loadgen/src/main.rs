//! Simulated viewers for benchmarks.
fn main() {}
