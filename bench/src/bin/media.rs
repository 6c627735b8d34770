//! `bench-media`: HLS to N players from ovation (zero-copy on and off) and nginx (see
//! `ovation_bench::media_load`).

fn main() -> anyhow::Result<()> {
    ovation_bench::media_load::main()
}
