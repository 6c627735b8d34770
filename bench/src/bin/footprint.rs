//! `bench-footprint`: where an idle viewer's bytes go (see `ovation_bench::footprint`).

// The server's allocator, so the pieces weighed in process round as they do there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    ovation_bench::footprint::main()
}
