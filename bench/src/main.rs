//! `bench-suite`: runs the benchmark scenarios against ovation and its peers and prints the
//! markdown tables. `bench/run` builds everything and calls it; see bench/README.md.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ovation_bench::suite::main()
}
