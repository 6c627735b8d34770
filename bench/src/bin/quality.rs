//! `bench-quality`: server CPU per telemetry report and per remediation evaluation (see
//! `ovation_bench::quality`).

fn main() -> anyhow::Result<()> {
    ovation_bench::quality::main()
}
