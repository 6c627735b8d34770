//! `bench-churn`: server memory under connect-and-leave churn (see `ovation_bench::churn`).

fn main() -> anyhow::Result<()> {
    ovation_bench::churn::main()
}
