//! `bench-publish-delay`: live HLS publish-to-playlist delay (see
//! `ovation_bench::publish_delay`).

fn main() -> anyhow::Result<()> {
    ovation_bench::publish_delay::main()
}
