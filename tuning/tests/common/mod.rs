//! Fake hosts for the script tests: a temporary directory laid out like / with the /proc,
//! /sys and /etc files the tuning scripts read, and a runner that points the scripts at it
//! through OVATION_TUNING_ROOT with an otherwise clean environment.

#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The directory holding the scripts under test.
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fake root (`root/`) and, beside it, where apply keeps its save file (`state/`), so a
/// snapshot of the root shows exactly what the scripts changed on the "host".
pub struct FakeHost {
    base: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
}

/// What a script run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The rows of `check --json` output.
    pub fn json_rows(&self) -> Vec<serde_json::Value> {
        let doc: serde_json::Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("check --json printed invalid JSON ({e}):\n{}", self.stdout)
        });
        doc["rows"].as_array().expect("rows is an array").clone()
    }

    /// The row named `setting` of `check --json` output.
    pub fn json_row(&self, setting: &str) -> serde_json::Value {
        self.json_rows()
            .into_iter()
            .find(|r| r["setting"] == setting)
            .unwrap_or_else(|| panic!("no row '{setting}' in:\n{}", self.stdout))
    }

    /// The status (ok, LOW, DIFF, ADVISE, info) of a row of `check --json` output.
    pub fn status(&self, setting: &str) -> String {
        self.json_row(setting)["status"]
            .as_str()
            .expect("status is a string")
            .to_owned()
    }
}

impl FakeHost {
    fn empty() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir().join(format!(
            "ovation-tuning-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&base);
        let root = base.join("root");
        let state = base.join("state");
        fs::create_dir_all(root.join("etc/sysctl.d")).expect("create fake root");
        FakeHost { base, root, state }
    }

    /// A stock host far below a 100,000-connection target: 2 CPUs, 2 GB, default limits,
    /// conntrack loaded with a small table, no ovation unit.
    pub fn small() -> Self {
        let host = Self::empty();
        host.write("sys/devices/system/cpu/online", "0-1\n");
        host.write("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n");
        host.write(
            "proc/meminfo",
            "MemTotal:        2000000 kB\nMemFree:          1000000 kB\n",
        );
        host.write("proc/sys/fs/file-max", "65536\n");
        host.write("proc/sys/fs/nr_open", "1048576\n");
        host.write("proc/sys/net/core/somaxconn", "4096\n");
        host.write("proc/sys/net/core/netdev_max_backlog", "1000\n");
        host.write("proc/sys/net/core/rps_sock_flow_entries", "0\n");
        host.write("proc/sys/net/ipv4/tcp_max_syn_backlog", "512\n");
        host.write("proc/sys/net/ipv4/tcp_syncookies", "1\n");
        host.write("proc/sys/net/ipv4/tcp_mem", "21462\t28616\t42924\n");
        host.write("proc/sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456\n");
        host.write("proc/sys/net/ipv4/tcp_wmem", "4096\t16384\t4194304\n");
        host.write("proc/sys/net/ipv4/ip_local_port_range", "32768\t60999\n");
        host.write("proc/sys/net/netfilter/nf_conntrack_max", "65536\n");
        host.write("proc/sys/net/netfilter/nf_conntrack_buckets", "16384\n");
        host.write(
            "proc/self/limits",
            // 4 MiB: above glommio's minimum, below the recommendation (advice).
            &limits_text("1024", "524288", "4194304", "4194304"),
        );
        host
    }

    /// A host tuned for 100,000 connections over 2 shards.
    pub fn tuned() -> Self {
        let host = Self::small();
        host.write("proc/meminfo", "MemTotal:       65000000 kB\n");
        host.write("proc/sys/fs/file-max", "9223372036854775807\n");
        host.write("proc/sys/net/core/somaxconn", "65535\n");
        host.write("proc/sys/net/core/netdev_max_backlog", "65536\n");
        host.write("proc/sys/net/ipv4/tcp_max_syn_backlog", "65535\n");
        host.write("proc/sys/net/ipv4/tcp_mem", "786432\t1048576\t1572864\n");
        host.write("proc/sys/net/ipv4/tcp_rmem", "4096\t16384\t6291456\n");
        host.write("proc/sys/net/netfilter/nf_conntrack_max", "1048576\n");
        host.write("proc/sys/net/netfilter/nf_conntrack_buckets", "262144\n");
        host.write(
            "proc/self/limits",
            &limits_text("1048576", "1048576", "unlimited", "unlimited"),
        );
        host
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().expect("fake paths have a parent")).expect("mkdir");
        fs::write(&path, text).expect("write fake file");
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    pub fn state_file(&self) -> PathBuf {
        self.state.join("saved.env")
    }

    /// Set the online CPUs ("0-7").
    pub fn cpus(&self, list: &str) {
        self.write("sys/devices/system/cpu/online", &format!("{list}\n"));
    }

    /// Add interface `nic` with `queues` rx and tx queues (steering off, as after boot) and,
    /// when `first_irq` is given, one combined IRQ per queue named `{nic}-TxRx-{q}` plus the
    /// link IRQ named `{nic}`, all with affinity to every CPU.
    pub fn add_nic(&self, nic: &str, queues: u32, first_irq: Option<u32>) {
        for q in 0..queues {
            self.write(
                &format!("sys/class/net/{nic}/queues/rx-{q}/rps_cpus"),
                "00\n",
            );
            self.write(
                &format!("sys/class/net/{nic}/queues/rx-{q}/rps_flow_cnt"),
                "0\n",
            );
            self.write(
                &format!("sys/class/net/{nic}/queues/tx-{q}/xps_cpus"),
                "00\n",
            );
        }
        let mut interrupts = String::from("           CPU0       CPU1\n");
        interrupts.push_str("  0:         40          0   IO-APIC    2-edge      timer\n");
        if let Some(first) = first_irq {
            let online = self.read("sys/devices/system/cpu/online");
            let all = online.trim();
            interrupts.push_str(&format!(
                " {}:          1          0  IR-PCI-MSI 1048576-edge      {nic}\n",
                first - 1
            ));
            self.write(
                &format!("proc/irq/{}/smp_affinity_list", first - 1),
                &format!("{all}\n"),
            );
            for q in 0..queues {
                let irq = first + q;
                interrupts.push_str(&format!(
                    " {irq}:       1000          0  IR-PCI-MSI 104857{q}-edge      {nic}-TxRx-{q}\n"
                ));
                self.write(
                    &format!("proc/irq/{irq}/smp_affinity_list"),
                    &format!("{all}\n"),
                );
            }
        }
        interrupts.push_str("NMI:          0          0   Non-maskable interrupts\n");
        self.write("proc/interrupts", &interrupts);
    }

    /// Pretend a process named `comm` runs as `pid`, with the given limits text.
    pub fn add_process(&self, pid: u32, comm: &str, limits: Option<&str>) {
        self.write(&format!("proc/{pid}/comm"), &format!("{comm}\n"));
        if let Some(limits) = limits {
            self.write(&format!("proc/{pid}/limits"), limits);
        }
    }

    /// Every file and directory under the root with its bytes (None for directories).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
            let mut entries: Vec<_> = fs::read_dir(dir)
                .expect("read fake dir")
                .map(|e| e.expect("dir entry").path())
                .collect();
            entries.sort();
            for path in entries {
                let rel = path.strip_prefix(base).expect("under base").to_path_buf();
                if path.is_dir() {
                    out.insert(rel, None);
                    walk(&path, base, out);
                } else {
                    out.insert(rel, Some(fs::read(&path).expect("read fake file")));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &mut out);
        out
    }

    /// A command running `tuning/{script}` against this host: a clean environment with
    /// OVATION_TUNING_ROOT, the save file beside the root, and the test-only root bypass.
    pub fn command(&self, script: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(scripts_dir().join(script));
        cmd.args(args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("LC_ALL", "C")
            .env("OVATION_TUNING_ROOT", &self.root)
            .env("OVATION_TUNING_STATE", self.state_file())
            .env("OVATION_TUNING_ALLOW_NONROOT", "1");
        cmd
    }

    pub fn run(&self, script: &str, args: &[&str]) -> Run {
        run(self.command(script, args))
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// Run a command to completion and capture its output.
pub fn run(mut cmd: Command) -> Run {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A /proc/PID/limits text with the given open-file and locked-memory limits.
pub fn limits_text(
    nofile_soft: &str,
    nofile_hard: &str,
    memlock_soft: &str,
    memlock_hard: &str,
) -> String {
    format!(
        "Limit                     Soft Limit           Hard Limit           Units     \n\
         Max cpu time              unlimited            unlimited            seconds   \n\
         Max open files            {nofile_soft:<20} {nofile_hard:<20} files     \n\
         Max locked memory         {memlock_soft:<20} {memlock_hard:<20} bytes     \n\
         Max address space         unlimited            unlimited            bytes     \n"
    )
}
