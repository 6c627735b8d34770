//! Packet steering on fake NICs: with fewer rx queues than shards apply uses RPS + RFS over
//! the shard CPUs; with enough queues it pins each queue's IRQ to one shard CPU (RSS) and
//! leaves RPS off; XPS gives each shard CPU its own transmit queue.

mod common;

use common::FakeHost;

#[test]
fn one_queue_uses_rps_and_rfs_over_the_shard_cpus() {
    let host = FakeHost::tuned();
    host.cpus("0-3");
    host.add_nic("eth0", 1, Some(30));
    let target = ["--connections", "100000", "--shards", "4", "--nic", "eth0"];

    let mut check_args = vec!["--json"];
    check_args.extend_from_slice(&target);
    let out = host.run("check", &check_args);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let mode = out.json_row("eth0 steering mode");
    assert_eq!(mode["recommended"], "RPS + RFS");
    assert!(
        mode["why"]
            .as_str()
            .unwrap_or("")
            .contains("1 rx queue(s) < 4 shards"),
        "{mode}"
    );
    assert_eq!(out.status("eth0 rx-0 rps_cpus"), "DIFF");
    assert_eq!(out.json_row("eth0 rx-0 rps_cpus")["recommended"], "f");
    assert_eq!(out.status("net.core.rps_sock_flow_entries"), "LOW");
    assert_eq!(out.json_row("eth0 xps")["status"], "info");

    let applied = host.run("apply", &target);
    assert_eq!(applied.code, 0, "{}\n{}", applied.stdout, applied.stderr);
    assert_eq!(host.read("sys/class/net/eth0/queues/rx-0/rps_cpus"), "f\n");
    assert_eq!(
        host.read("sys/class/net/eth0/queues/rx-0/rps_flow_cnt"),
        "131072\n"
    );
    assert_eq!(
        host.read("proc/sys/net/core/rps_sock_flow_entries"),
        "131072\n"
    );
    // One tx queue: XPS is left alone.
    assert_eq!(host.read("sys/class/net/eth0/queues/tx-0/xps_cpus"), "00\n");
    // The single queue's interrupt goes to the first shard CPU; the link IRQ is untouched.
    assert_eq!(host.read("proc/irq/30/smp_affinity_list"), "0\n");
    assert_eq!(host.read("proc/irq/29/smp_affinity_list"), "0-3\n");
    assert!(host
        .read("etc/sysctl.d/90-ovation.conf")
        .contains("net.core.rps_sock_flow_entries = 131072\n"));
    assert!(
        applied.stdout.contains("run apply at boot"),
        "{}",
        applied.stdout
    );

    let out = host.run("check", &check_args);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.status("eth0 rx-0 rps_cpus"), "ok");

    assert_eq!(host.run("revert", &[]).code, 0);
    assert_eq!(host.read("sys/class/net/eth0/queues/rx-0/rps_cpus"), "00\n");
}

#[test]
fn eight_queues_use_rss_with_one_irq_per_shard_cpu() {
    let host = FakeHost::tuned();
    host.cpus("0-3");
    host.add_nic("eth0", 8, Some(40));
    let target = ["--connections", "100000", "--shards", "4", "--nic", "eth0"];

    let mut check_args = vec!["--json"];
    check_args.extend_from_slice(&target);
    let out = host.run("check", &check_args);
    assert_eq!(out.code, 1);
    let mode = out.json_row("eth0 steering mode");
    assert_eq!(mode["recommended"], "RSS + IRQ affinity");
    let why = mode["why"].as_str().unwrap_or("");
    assert!(
        why.contains("8 rx queues >= 4 shards") && why.contains("RPS stays off"),
        "{why}"
    );
    assert!(why.contains("ethtool -L eth0 combined 4"), "{why}");
    assert_eq!(out.status("irq 40 smp_affinity_list"), "DIFF");
    // RFS is only for the RPS path.
    assert!(
        !out.stdout.contains("rps_sock_flow_entries"),
        "{}",
        out.stdout
    );

    let applied = host.run("apply", &target);
    assert_eq!(applied.code, 0, "{}\n{}", applied.stdout, applied.stderr);
    for q in 0..8u32 {
        assert_eq!(
            host.read(&format!("proc/irq/{}/smp_affinity_list", 40 + q)),
            format!("{}\n", q % 4),
            "queue {q}"
        );
        // Written as "00" at boot and already off: RPS stays untouched.
        assert_eq!(
            host.read(&format!("sys/class/net/eth0/queues/rx-{q}/rps_cpus")),
            "00\n"
        );
        assert_eq!(
            host.read(&format!("sys/class/net/eth0/queues/tx-{q}/xps_cpus")),
            format!("{:x}\n", 1u32 << (q % 4)),
            "tx queue {q}"
        );
    }
    assert_eq!(
        host.read("proc/irq/39/smp_affinity_list"),
        "0-3\n",
        "link IRQ untouched"
    );
    assert_eq!(host.read("proc/sys/net/core/rps_sock_flow_entries"), "0\n");
    let out = host.run("check", &check_args);
    assert_eq!(out.code, 0, "{}", out.stdout);
}

#[test]
fn rss_turns_off_rps_left_on_from_before() {
    let host = FakeHost::tuned();
    host.cpus("0-1");
    host.add_nic("eth0", 2, Some(50));
    host.write("sys/class/net/eth0/queues/rx-1/rps_cpus", "3\n");
    let out = host.run("apply", &["--nic", "eth0"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(host.read("sys/class/net/eth0/queues/rx-1/rps_cpus"), "0\n");
    assert_eq!(host.read("proc/irq/50/smp_affinity_list"), "0\n");
    assert_eq!(host.read("proc/irq/51/smp_affinity_list"), "1\n");
}

#[test]
fn shard_cpus_follow_the_allowed_cpu_set() {
    let host = FakeHost::tuned();
    host.cpus("0-7");
    host.add_nic("eth0", 4, Some(60));
    let out = host.run("apply", &["--cpus", "4-7", "--nic", "eth0"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("4 shards on CPUs 4-7"),
        "{}",
        out.stdout
    );
    for q in 0..4u32 {
        assert_eq!(
            host.read(&format!("proc/irq/{}/smp_affinity_list", 60 + q)),
            format!("{}\n", 4 + q)
        );
        assert_eq!(
            host.read(&format!("sys/class/net/eth0/queues/tx-{q}/xps_cpus")),
            format!("{:x}\n", 0x10u32 << q)
        );
    }
}

#[test]
fn fewer_tx_queues_than_shards_share_queues_in_xps() {
    let host = FakeHost::tuned();
    host.cpus("0-3");
    host.add_nic("eth0", 2, None);
    let out = host.run("apply", &["--nic", "eth0", "--shards", "4"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // CPU k transmits on queue k % 2.
    assert_eq!(host.read("sys/class/net/eth0/queues/tx-0/xps_cpus"), "5\n");
    assert_eq!(host.read("sys/class/net/eth0/queues/tx-1/xps_cpus"), "a\n");
    // RPS path on both rx queues, flow table split between them.
    assert_eq!(host.read("sys/class/net/eth0/queues/rx-0/rps_cpus"), "f\n");
    assert_eq!(
        host.read("sys/class/net/eth0/queues/rx-1/rps_flow_cnt"),
        "65536\n"
    );
}

#[test]
fn many_cpus_use_comma_separated_mask_groups() {
    let host = FakeHost::tuned();
    host.cpus("0-63");
    host.add_nic("eth0", 1, None);
    let out = host.run("apply", &["--nic", "eth0", "--shards", "40"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        host.read("sys/class/net/eth0/queues/rx-0/rps_cpus"),
        "ff,ffffffff\n"
    );
    // The kernel reads masks back zero-padded; check compares them as numbers.
    host.write(
        "sys/class/net/eth0/queues/rx-0/rps_cpus",
        "00000000,000000ff,ffffffff\n",
    );
    let out = host.run("check", &["--json", "--nic", "eth0", "--shards", "40"]);
    assert_eq!(out.status("eth0 rx-0 rps_cpus"), "ok", "{}", out.stdout);
    // Lower groups are zero-padded to 8 digits.
    let out = host.run("check", &["--json", "--nic", "eth0", "--cpus", "0,32-33"]);
    assert_eq!(
        out.json_row("eth0 rx-0 rps_cpus")["recommended"],
        "3,00000001"
    );
}

#[test]
fn queues_without_named_irqs_fall_back_to_rps() {
    let host = FakeHost::tuned();
    host.cpus("0-3");
    host.add_nic("ens5", 8, None);
    let out = host.run("check", &["--json", "--nic", "ens5"]);
    let mode = out.json_row("ens5 steering mode");
    assert_eq!(mode["recommended"], "RPS + RFS");
    assert!(
        mode["why"]
            .as_str()
            .unwrap_or("")
            .contains("no IRQ of 'ens5'"),
        "{mode}"
    );
    assert!(
        out.stdout.contains("pin them to the shard CPUs by hand"),
        "{}",
        out.stdout
    );
}

#[test]
fn irq_names_must_match_the_interface_exactly() {
    let host = FakeHost::tuned();
    host.cpus("0-1");
    host.add_nic("eth1", 2, Some(70));
    // eth1's IRQs must not be taken for eth10's.
    host.write("sys/class/net/eth10/queues/rx-0/rps_cpus", "0\n");
    host.write("sys/class/net/eth10/queues/rx-1/rps_cpus", "0\n");
    let out = host.run("check", &["--json", "--nic", "eth10"]);
    assert_eq!(
        out.json_row("eth10 steering mode")["recommended"],
        "RPS + RFS"
    );
    assert!(!out.stdout.contains("irq 70"), "{}", out.stdout);
}

#[test]
fn a_running_irqbalance_is_flagged() {
    let host = FakeHost::tuned();
    host.cpus("0-1");
    host.add_nic("eth0", 2, Some(80));
    host.add_process(812, "irqbalance", None);
    let out = host.run("check", &["--json", "--nic", "eth0"]);
    let row = out.json_row("irqbalance");
    assert_eq!(row["status"], "ADVISE");
    assert!(
        row["why"].as_str().unwrap_or("").contains("--banirq"),
        "{row}"
    );
}
