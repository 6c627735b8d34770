//! tuning/apply and tuning/revert against fake hosts: dry runs write nothing, apply writes
//! the recommended values and saves the old ones first, revert restores them byte for byte,
//! and both refuse to run without root.

mod common;

use std::fs;

use common::{run, scripts_dir, FakeHost};

const TARGET: &[&str] = &["--connections", "100000", "--shards", "2"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all: Vec<&str> = TARGET.to_vec();
    all.extend_from_slice(extra);
    all
}

#[test]
fn dry_run_prints_every_write_and_changes_nothing() {
    let host = FakeHost::small();
    let before = host.snapshot();
    // A dry run needs no root.
    let mut cmd = host.command("apply", &args(&["--dry-run"]));
    cmd.env_remove("OVATION_TUNING_ALLOW_NONROOT")
        .env("OVATION_TUNING_EUID", "1000");
    let out = run(cmd);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(host.snapshot(), before, "a dry run must not write");
    assert!(!host.state_file().exists(), "a dry run must not save");

    let root = host.root.display();
    for line in [
        format!("write {root}/proc/sys/fs/file-max = 177152   (was: 65536)"),
        format!("write {root}/proc/sys/net/ipv4/tcp_max_syn_backlog = 5000   (was: 512)"),
        format!("write {root}/proc/sys/net/core/somaxconn = 5000   (was: 4096)"),
        format!("write {root}/proc/sys/net/core/netdev_max_backlog = 12500   (was: 1000)"),
        format!("write {root}/proc/sys/net/ipv4/tcp_mem = 100000 200000 400000   (was: 21462 28616 42924)"),
        format!("write {root}/proc/sys/net/ipv4/tcp_rmem = 4096 16384 6291456   (was: 4096 131072 6291456)"),
        format!("write {root}/proc/sys/net/netfilter/nf_conntrack_max = 200000   (was: 65536)"),
        format!("write {root}/proc/sys/net/netfilter/nf_conntrack_buckets = 50000   (was: 16384)"),
        format!("write {root}/etc/sysctl.d/90-ovation.conf (new file)"),
        "    | net.ipv4.tcp_mem = 100000 200000 400000".to_owned(),
        format!("save the current content of these 9 files to {}", host.state_file().display()),
    ] {
        assert!(out.stdout.contains(&line), "missing {line:?} in:\n{}", out.stdout);
    }
    // Already fine, or not a server's business: never written.
    for untouched in [
        "fs/nr_open",
        "net/ipv4/tcp_syncookies",
        "net/ipv4/tcp_wmem",
        "net/ipv4/ip_local_port_range",
    ] {
        let prefix = format!("write {root}/proc/sys/{untouched} ");
        assert!(
            !out.stdout.lines().any(|l| l.starts_with(&prefix)),
            "{untouched}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn apply_writes_the_recommendations_and_saves_the_old_values() {
    let host = FakeHost::small();
    let out = host.run("apply", &args(&[]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    assert_eq!(host.read("proc/sys/fs/file-max"), "177152\n");
    assert_eq!(
        host.read("proc/sys/fs/nr_open"),
        "1048576\n",
        "never lowered, not touched"
    );
    assert_eq!(host.read("proc/sys/net/core/somaxconn"), "5000\n");
    assert_eq!(host.read("proc/sys/net/ipv4/tcp_max_syn_backlog"), "5000\n");
    assert_eq!(host.read("proc/sys/net/core/netdev_max_backlog"), "12500\n");
    assert_eq!(
        host.read("proc/sys/net/ipv4/tcp_mem"),
        "100000 200000 400000\n"
    );
    assert_eq!(
        host.read("proc/sys/net/ipv4/tcp_rmem"),
        "4096 16384 6291456\n"
    );
    assert_eq!(
        host.read("proc/sys/net/ipv4/tcp_wmem"),
        "4096\t16384\t4194304\n"
    );
    assert_eq!(
        host.read("proc/sys/net/netfilter/nf_conntrack_max"),
        "200000\n"
    );
    assert_eq!(
        host.read("proc/sys/net/netfilter/nf_conntrack_buckets"),
        "50000\n"
    );
    assert_eq!(
        host.read("proc/sys/net/ipv4/ip_local_port_range"),
        "32768\t60999\n"
    );

    let conf = host.read("etc/sysctl.d/90-ovation.conf");
    for line in [
        "fs.file-max = 177152",
        "net.core.somaxconn = 5000",
        "net.ipv4.tcp_max_syn_backlog = 5000",
        "net.core.netdev_max_backlog = 12500",
        "net.ipv4.tcp_mem = 100000 200000 400000",
        "net.ipv4.tcp_rmem = 4096 16384 6291456",
        "net.netfilter.nf_conntrack_max = 200000",
        "net.netfilter.nf_conntrack_buckets = 50000",
    ] {
        assert!(conf.lines().any(|l| l == line), "{line:?} not in:\n{conf}");
    }
    assert!(
        !conf.contains("nr_open") && !conf.contains("tcp_wmem"),
        "{conf}"
    );
    assert!(
        !host.exists("etc/systemd/system/ovation.service.d"),
        "no unit, no drop-in"
    );

    let saved = fs::read_to_string(host.state_file()).expect("save file written");
    for line in [
        // "65536\n" and "21462\t28616\t42924\n" in hex: the exact bytes, tabs included.
        "proc/sys/fs/file-max hex:36353533360a",
        "proc/sys/net/ipv4/tcp_mem hex:3231343632093238363136093432393234",
        "# proc/sys/net/ipv4/tcp_mem was: 21462 28616 42924",
        "etc/sysctl.d/90-ovation.conf ABSENT",
    ] {
        assert!(
            saved.lines().any(|l| l.starts_with(line)),
            "{line:?} not in:\n{saved}"
        );
    }

    let check = host.run("check", &args(&["--json"]));
    // What apply cannot change: this shell's descriptor limit.
    let failing: Vec<_> = check
        .json_rows()
        .into_iter()
        .filter(|r| r["status"] == "LOW" || r["status"] == "DIFF")
        .map(|r| r["setting"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(failing, ["nofile soft (this shell)"], "{}", check.stdout);
}

#[test]
fn apply_writes_a_unit_drop_in_when_the_unit_is_short() {
    let host = FakeHost::small();
    host.write(
        "etc/systemd/system/ovation.service",
        "[Service]\nLimitNOFILE=4096\n",
    );
    let out = host.run("apply", &args(&[]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let dropin = host.read("etc/systemd/system/ovation.service.d/90-ovation-tuning.conf");
    assert!(
        dropin.contains("[Service]\nLimitNOFILE=111616\nLimitMEMLOCK=6M\n"),
        "{dropin}"
    );
    assert!(
        out.stdout.contains("systemctl daemon-reload"),
        "{}",
        out.stdout
    );
    let check = host.run("check", &args(&["--json"]));
    assert_eq!(check.status("systemd LimitNOFILE"), "ok");
    assert_eq!(check.status("systemd LimitMEMLOCK"), "ok");
    assert_eq!(check.code, 0, "{}", check.stdout);

    let revert = host.run("revert", &[]);
    assert_eq!(revert.code, 0, "{}", revert.stderr);
    assert!(!host.exists("etc/systemd/system/ovation.service.d"));
}

#[test]
fn keep_buffers_leaves_the_socket_buffer_defaults() {
    let host = FakeHost::small();
    let out = host.run("apply", &args(&["--keep-buffers"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        host.read("proc/sys/net/ipv4/tcp_rmem"),
        "4096\t131072\t6291456\n"
    );
    assert!(!host
        .read("etc/sysctl.d/90-ovation.conf")
        .contains("tcp_rmem"));
}

#[test]
fn revert_restores_every_byte_and_removes_the_conf() {
    let host = FakeHost::small();
    host.cpus("0-3");
    host.add_nic("eth0", 8, Some(40));
    host.write(
        "etc/systemd/system/ovation.service",
        "[Service]\nLimitNOFILE=4096\n",
    );
    let before = host.snapshot();

    let out = host.run(
        "apply",
        &["--connections", "100000", "--shards", "4", "--nic", "eth0"],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_ne!(host.snapshot(), before);

    let dry = host.run("revert", &["--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains(&format!(
            "would remove {}",
            host.path("etc/sysctl.d/90-ovation.conf").display()
        )),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("would restore"), "{}", dry.stdout);
    assert!(
        host.exists("etc/sysctl.d/90-ovation.conf"),
        "a dry run must not remove"
    );

    let out = host.run("revert", &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        host.snapshot(),
        before,
        "revert must restore the host byte for byte"
    );
    assert!(!host.state_file().exists());
    assert!(host.state.join("saved.env.reverted").exists());

    // Nothing left to revert.
    let again = host.run("revert", &[]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("nothing to revert"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_second_apply_needs_force_and_force_keeps_the_originals() {
    let host = FakeHost::small();
    let before = host.snapshot();
    assert_eq!(host.run("apply", &args(&[])).code, 0);
    let after_first = host.snapshot();

    let refused = host.run("apply", &["--connections", "300000", "--shards", "2"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("exists"), "{}", refused.stderr);
    assert_eq!(
        host.snapshot(),
        after_first,
        "a refused apply must not write"
    );

    let forced = host.run(
        "apply",
        &["--force", "--connections", "300000", "--shards", "2"],
    );
    assert_eq!(forced.code, 0, "{}\n{}", forced.stdout, forced.stderr);
    assert_eq!(host.read("proc/sys/net/core/somaxconn"), "15000\n");
    let conf = host.read("etc/sysctl.d/90-ovation.conf");
    assert!(conf.contains("net.core.somaxconn = 15000\n"), "{conf}");
    // Keys only the first run wrote stay in the conf.
    assert!(
        conf.contains("net.ipv4.tcp_rmem = 4096 16384 6291456\n"),
        "{conf}"
    );
    let saved = fs::read_to_string(host.state_file()).expect("save file");
    assert_eq!(
        saved.matches("proc/sys/net/core/somaxconn hex:").count(),
        1,
        "{saved}"
    );
    assert!(
        saved.contains("proc/sys/net/core/somaxconn hex:343039360a"),
        "the original 4096 is kept:\n{saved}"
    );

    assert_eq!(host.run("revert", &[]).code, 0);
    assert_eq!(host.snapshot(), before);
}

#[test]
fn nothing_to_change_writes_nothing() {
    let host = FakeHost::tuned();
    let before = host.snapshot();
    let out = host.run("apply", &args(&[]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("nothing to change"), "{}", out.stdout);
    assert_eq!(host.snapshot(), before);
    assert!(!host.state_file().exists());
}

#[test]
fn apply_and_revert_refuse_without_root() {
    let host = FakeHost::small();
    let before = host.snapshot();
    for (script, extra) in [("apply", TARGET), ("revert", &[] as &[&str])] {
        let mut cmd = host.command(script, extra);
        cmd.env_remove("OVATION_TUNING_ALLOW_NONROOT")
            .env("OVATION_TUNING_EUID", "1000");
        let out = run(cmd);
        assert_eq!(out.code, 1, "{script}: {}", out.stdout);
        assert!(
            out.stderr.contains("must run as root"),
            "{script}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("--dry-run"), "{script}: {}", out.stderr);
    }
    assert_eq!(host.snapshot(), before);
    assert!(!host.state_file().exists());
}

/// The test bypass of the root check is ignored unless the scripts work on a fake root: a
/// real non-root user cannot use it against the real host.
#[test]
fn root_bypass_is_ignored_without_a_fake_root() {
    let script = scripts_dir().join("apply");
    let output_of = |program: &str, arg: &str| -> Option<String> {
        let out = std::process::Command::new(program).arg(arg).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let mut cmd;
    if output_of("id", "-u").as_deref() == Some("0") {
        if output_of("setpriv", "--version").is_none() {
            eprintln!("note: running as root without setpriv; skipping the real non-root check");
            return;
        }
        cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&script);
    } else {
        cmd = std::process::Command::new(&script);
    }
    cmd.args(["--connections", "10"])
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("OVATION_TUNING_ALLOW_NONROOT", "1")
        .env("OVATION_TUNING_EUID", "0")
        .env(
            "OVATION_TUNING_STATE",
            "/nonexistent/ovation-tuning/saved.env",
        );
    let out = run(cmd);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("must run as root"), "{}", out.stderr);
}

#[test]
fn a_tampered_save_file_is_refused_before_anything_is_written() {
    let host = FakeHost::small();
    fs::create_dir_all(&host.state).expect("mkdir state");
    let before = host.snapshot();
    for bad in [
        "proc/sys/fs/file-max hex:3130\netc/passwd hex:726f6f74\n",
        "proc/sys/fs/../../../etc/passwd hex:00\n",
        "proc/sys/fs/file-max hex:xyz\n",
        "proc/sys/fs/file-max 65536\n",
    ] {
        fs::write(host.state_file(), bad).expect("write save file");
        let out = host.run("revert", &[]);
        assert_eq!(out.code, 1, "{bad:?}: {}", out.stdout);
        assert!(
            out.stderr.contains("refusing to use this save file"),
            "{bad:?}: {}",
            out.stderr
        );
        assert_eq!(host.snapshot(), before, "{bad:?}");
    }
}
