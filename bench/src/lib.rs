//! Benchmark scenarios and microbenchmarks.
