//! tuning/check against fake hosts: what it reports, where it takes limits from, its exit
//! codes, and that it only reads.

mod common;

use common::{limits_text, scripts_dir, FakeHost};

#[test]
fn small_host_is_reported_low_and_exits_1() {
    let host = FakeHost::small();
    let before = host.snapshot();
    let out = host.run("check", &["--json", "--connections", "100000"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    for low in [
        "fs.file-max",
        "nofile soft (this shell)",
        "net.ipv4.tcp_max_syn_backlog",
        "net.core.netdev_max_backlog",
        "net.core.somaxconn",
        "net.ipv4.tcp_mem",
        "net.netfilter.nf_conntrack_max",
        "net.netfilter.nf_conntrack_buckets",
    ] {
        assert_eq!(out.status(low), "LOW", "{low}: {}", out.json_row(low));
    }
    for ok in ["fs.nr_open", "net.ipv4.tcp_syncookies", "net.ipv4.tcp_wmem"] {
        assert_eq!(out.status(ok), "ok", "{ok}: {}", out.json_row(ok));
    }
    // Buffers and memlock are advice, not failures; ports do not matter to a server.
    assert_eq!(out.status("net.ipv4.tcp_rmem"), "ADVISE");
    assert_eq!(out.status("memlock soft (this shell)"), "ADVISE");
    assert_eq!(out.status("net.ipv4.ip_local_port_range"), "info");
    // 100000 x (8 KiB + 3.5 KiB) = 1.1 GiB is more than half of 2 GB.
    assert_eq!(out.status("kernel memory estimate"), "ADVISE");

    let file_max = out.json_row("fs.file-max");
    assert_eq!(file_max["current"], "65536");
    assert_eq!(file_max["recommended"], ">= 177152");
    assert!(
        file_max["why"].as_str().unwrap_or("").contains("111616"),
        "{file_max}"
    );
    let tcp_mem = out.json_row("net.ipv4.tcp_mem");
    assert_eq!(tcp_mem["current"], "21462 28616 42924");
    assert_eq!(tcp_mem["recommended"], ">= 100000 200000 400000");
    assert_eq!(host.snapshot(), before, "check must not change anything");
}

#[test]
fn table_shows_current_recommended_status_and_why() {
    let host = FakeHost::small();
    let out = host.run("check", &["--connections", "100000", "--shards", "2"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("target: 100000 connections, 2 shards on CPUs 0-1, role server;"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("SETTING"), "{}", out.stdout);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("fs.file-max "))
        .unwrap_or_else(|| panic!("no fs.file-max line:\n{}", out.stdout));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &fields[..5],
        ["fs.file-max", "65536", ">=", "177152", "LOW"],
        "{line}"
    );
    assert!(line.contains("system-wide open files"), "{line}");
    assert!(
        out.stdout.contains("do not meet the target"),
        "{}",
        out.stdout
    );
}

#[test]
fn tuned_host_exits_0() {
    let host = FakeHost::tuned();
    let out = host.run("check", &["--connections", "100000", "--shards", "2"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains(" LOW "), "{}", out.stdout);
    assert!(
        out.stdout.contains("all settings meet the target"),
        "{}",
        out.stdout
    );
    let json = host.run("check", &["--json", "--connections", "100000"]);
    assert_eq!(json.code, 0);
    assert!(json.stdout.contains("\"failing\":0"), "{}", json.stdout);
}

#[test]
fn tuned_host_is_low_for_a_bigger_target() {
    let host = FakeHost::tuned();
    let out = host.run("check", &["--json", "--connections", "2000000"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.status("fs.nr_open"), "LOW");
    assert_eq!(out.json_row("fs.nr_open")["recommended"], ">= 2201600");
    assert_eq!(out.status("nofile soft (this shell)"), "LOW");
}

#[test]
fn limits_of_a_running_ovation_are_the_ones_checked() {
    let host = FakeHost::tuned();
    host.add_process(
        4242,
        "ovation",
        Some(&limits_text("4096", "4096", "unlimited", "unlimited")),
    );
    host.add_process(17, "bash", None);
    let out = host.run("check", &["--json", "--connections", "100000"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let row = out.json_row("nofile soft (ovation pid 4242)");
    assert_eq!(row["current"], "4096");
    assert_eq!(row["status"], "LOW");

    // --pid picks the process explicitly.
    host.write(
        "proc/99/limits",
        &limits_text("200000", "200000", "unlimited", "unlimited"),
    );
    let out = host.run("check", &["--json", "--pid", "99"]);
    assert_eq!(out.status("nofile soft (pid 99)"), "ok");
}

#[test]
fn unit_limits_come_from_the_unit_and_its_drop_ins() {
    let host = FakeHost::tuned();
    host.write(
        "etc/systemd/system/ovation.service",
        "[Service]\nExecStart=/usr/local/bin/ovation serve\nLimitNOFILE=4096\n",
    );
    let out = host.run("check", &["--json", "--connections", "100000"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.status("systemd LimitNOFILE"), "LOW");
    // The unit's memlock is unset: the default may be 64K, below glommio's 512K.
    assert_eq!(out.status("systemd LimitMEMLOCK"), "LOW");
    // With a unit installed and ovation stopped, this shell's limits are only information.
    assert_eq!(out.status("nofile soft (this shell)"), "info");

    host.write(
        "etc/systemd/system/ovation.service.d/50-limits.conf",
        "[Service]\nLimitNOFILE=200000:300000\nLimitMEMLOCK=infinity\n",
    );
    let out = host.run("check", &["--json", "--connections", "100000"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(
        out.json_row("systemd LimitNOFILE")["current"],
        "200000:300000"
    );

    // An empty assignment resets to systemd's default (soft 1024).
    host.write(
        "etc/systemd/system/ovation.service.d/60-reset.conf",
        "[Service]\nLimitNOFILE=\n",
    );
    let out = host.run("check", &["--json", "--connections", "100000"]);
    assert_eq!(out.status("systemd LimitNOFILE"), "LOW");
}

#[test]
fn example_unit_meets_a_900k_connection_target() {
    let host = FakeHost::tuned();
    let unit = scripts_dir().join("ovation.service");
    let mut cmd = host.command(
        "check",
        &["--json", "--connections", "900000", "--shards", "2"],
    );
    cmd.env("OVATION_TUNING_UNIT", &unit);
    let out = common::run(cmd);
    assert_eq!(out.status("systemd LimitNOFILE"), "ok", "{}", out.stdout);
    assert_eq!(out.status("systemd LimitMEMLOCK"), "ok", "{}", out.stdout);
    assert_eq!(out.json_row("systemd LimitNOFILE")["current"], "1048576");
}

#[test]
fn example_unit_has_the_settings_the_readme_promises() {
    let unit = std::fs::read_to_string(scripts_dir().join("ovation.service")).expect("read unit");
    let keys: Vec<&str> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for key in [
        "User",
        "ExecStart",
        "LimitNOFILE",
        "LimitMEMLOCK",
        "Restart",
        "TimeoutStopSec",
        "StateDirectory",
    ] {
        assert!(keys.contains(&key), "ovation.service lacks {key}=");
    }
    assert!(unit.contains("\nUser=ovation\n"));
    assert!(unit.contains("ovation serve --config /etc/ovation/ovation.toml"));
    assert!(unit.contains("\nRestart=on-failure\n"));
    // A syscall filter would block io_uring_setup/io_uring_enter; no capability is needed.
    assert!(
        !keys.contains(&"SystemCallFilter"),
        "a SystemCallFilter can block io_uring"
    );
    assert!(unit.contains("\nAmbientCapabilities=\n"));
}

#[test]
fn example_unit_passes_systemd_analyze_verify() {
    let Ok(probe) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("note: systemd-analyze is not installed; skipping the unit file verification");
        return;
    };
    assert!(probe.status.success());
    // verify insists that ExecStart's binary exists: check a copy that runs /bin/true.
    let unit = std::fs::read_to_string(scripts_dir().join("ovation.service")).expect("read unit");
    let copy = unit.replace("ExecStart=/usr/local/bin/ovation", "ExecStart=/bin/true");
    assert_ne!(copy, unit);
    let dir = std::env::temp_dir().join(format!("ovation-unit-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("ovation.service");
    std::fs::write(&path, copy).expect("write unit copy");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // verify exits 0 on unknown keys and bad values too, but says so on stderr.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify complained:\n{stderr}"
    );
}

#[test]
fn loadgen_role_needs_the_ephemeral_port_range() {
    let host = FakeHost::tuned();
    let out = host.run(
        "check",
        &["--json", "--connections", "100000", "--role", "loadgen"],
    );
    assert_eq!(out.code, 1);
    let row = out.json_row("net.ipv4.ip_local_port_range");
    assert_eq!(row["status"], "LOW");
    assert_eq!(row["recommended"], "1024 65535");
    assert!(
        out.stdout.contains("needs 2 source addresses"),
        "{}",
        out.stdout
    );

    host.write("proc/sys/net/ipv4/ip_local_port_range", "1024\t65535\n");
    let out = host.run(
        "check",
        &["--json", "--connections", "50000", "--role", "loadgen"],
    );
    assert_eq!(out.status("net.ipv4.ip_local_port_range"), "ok");
    assert_eq!(out.code, 0, "{}", out.stdout);
}

#[test]
fn conntrack_not_loaded_is_information_only() {
    let host = FakeHost::tuned();
    std::fs::remove_dir_all(host.path("proc/sys/net/netfilter")).expect("unload conntrack");
    let out = host.run("check", &["--json"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.json_row("conntrack")["current"], "not loaded");
}

#[test]
fn old_kernel_explains_that_rings_count_against_memlock() {
    let host = FakeHost::tuned();
    host.write("proc/sys/kernel/osrelease", "5.10.0-28-amd64\n");
    host.write(
        "proc/self/limits",
        &limits_text("1048576", "1048576", "65536", "65536"),
    );
    let out = host.run("check", &["--json"]);
    let row = out.json_row("memlock soft (this shell)");
    assert_eq!(row["status"], "LOW", "{row}");
    assert_eq!(row["current"], "64K");
    assert!(
        row["why"].as_str().unwrap_or("").contains("before 5.12"),
        "{row}"
    );

    host.write("proc/sys/kernel/osrelease", "6.1.0\n");
    let out = host.run("check", &["--json"]);
    let row = out.json_row("memlock soft (this shell)");
    assert!(
        row["why"].as_str().unwrap_or("").contains("memory cgroup"),
        "{row}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let host = FakeHost::small();
    let cases: &[(&str, &[&str])] = &[
        ("check", &["--bogus"]),
        ("check", &["--connections"]),
        ("check", &["--connections", "abc"]),
        ("check", &["--connections", "0"]),
        ("check", &["--connections", "-5"]),
        ("check", &["--shards", "0"]),
        ("check", &["--shards", "3"]),
        ("check", &["--shards=x"]),
        ("check", &["--role", "router"]),
        ("check", &["--cpus", "5-2"]),
        ("check", &["--cpus", "all"]),
        ("check", &["--nic", "../etc"]),
        ("check", &["--pid", "self"]),
        ("check", &["--dry-run"]),
        ("apply", &["--json"]),
        ("apply", &["--dry-run", "extra"]),
        ("revert", &["--force"]),
        ("revert", &["now"]),
    ];
    for (script, args) in cases {
        let out = host.run(script, args);
        assert_eq!(
            out.code, 2,
            "{script} {args:?}: {}\n{}",
            out.stdout, out.stderr
        );
        assert!(
            out.stderr.contains("usage error"),
            "{script} {args:?}: {}",
            out.stderr
        );
    }
    for script in ["check", "apply", "revert"] {
        let out = host.run(script, &["--help"]);
        assert_eq!(out.code, 0, "{script} --help");
        assert!(out.stdout.starts_with("usage: tuning/"), "{}", out.stdout);
    }
}

#[test]
fn a_missing_interface_is_an_error() {
    let host = FakeHost::small();
    let out = host.run("check", &["--nic", "eth9"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no network interface 'eth9'"),
        "{}",
        out.stderr
    );
}

#[test]
fn connections_accept_the_equals_form() {
    let host = FakeHost::tuned();
    let out = host.run("check", &["--json", "--connections=1000", "--shards=1"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("\"connections\":1000,\"shards\":1"),
        "{}",
        out.stdout
    );
}
