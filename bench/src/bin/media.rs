//! `bench-media`: HLS to N players from ovation (`zerocopy` auto, on and off, and from its
//! recording) and nginx (see
//! `ovation_bench::media_load`).

fn main() -> anyhow::Result<()> {
    ovation_bench::media_load::main()
}
