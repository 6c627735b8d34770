//! Runs the root package's startup limit check (src/limits.rs) with the tuning tests: the
//! module is compiled into this test crate, so its unit tests (parsing, formulas, warnings
//! against fake /proc trees) run here, and the formulas it shares with tuning/check are
//! checked against the script's own output.

#[allow(dead_code)]
#[path = "../../src/limits.rs"]
mod limits;

mod common;

use common::FakeHost;

#[test]
fn check_host_limits_on_this_host_points_every_shortfall_to_tuning_check() {
    let report = limits::check_host_limits(100_000, 2);
    for warning in &report.warnings {
        assert!(
            warning.contains("tuning/check --connections 100000 --shards 2")
                || warning.contains("skipped"),
            "{warning}"
        );
    }
    report.log();
}

#[test]
fn descriptor_and_backlog_formulas_agree_with_tuning_check() {
    for (connections, shards) in [(1_000u64, 1u64), (100_000, 2), (250_000, 2), (1_000_000, 2)] {
        let host = FakeHost::small();
        let out = host.run(
            "check",
            &[
                "--json",
                "--connections",
                &connections.to_string(),
                "--shards",
                &shards.to_string(),
            ],
        );
        let rows = out.json_rows();
        let rec = |name: &str| -> String {
            rows.iter()
                .find(|r| r["setting"] == name)
                .unwrap_or_else(|| panic!("no row {name}: {}", out.stdout))["recommended"]
                .as_str()
                .expect("recommended is a string")
                .to_owned()
        };
        assert_eq!(
            rec("fs.nr_open"),
            format!(">= {}", limits::required_descriptors(connections)),
            "{connections} connections"
        );
        assert_eq!(
            rec("net.core.somaxconn"),
            format!(">= {}", limits::required_backlog(connections, shards)),
            "{connections} connections over {shards} shards"
        );
        let memlock_mib = limits::recommended_memlock(shards) >> 20;
        assert_eq!(rec("systemd LimitMEMLOCK"), format!(">= {memlock_mib}M"));
    }
}
