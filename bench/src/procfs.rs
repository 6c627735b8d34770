//! Reading `/proc`: a server's resident memory and threads, the kernel's TCP socket memory,
//! the machine's rescheduling IPIs, and the machine facts printed in the table header.
//! Parsing is pure (`parse_*` take the file's text) so it is tested on captured samples; the
//! `read_*` wrappers only add the file access.

use std::fs;
use std::io;

/// `VmRSS` of `/proc/PID/status`, in bytes (the file gives kB).
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    kb_field(status, "VmRSS:")
}

/// A `Key:   123 kB` line of `/proc/PID/status` or `/proc/meminfo`, in bytes.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let mut words = line[key.len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// Resident set size of process `pid`, in bytes.
pub fn read_rss(pid: u32) -> io::Result<u64> {
    read_parsed(
        &format!("/proc/{pid}/status"),
        parse_vm_rss,
        "no VmRSS line",
    )
}

/// The `TCP:` line of `/proc/net/sockstat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSockstat {
    /// Sockets in use (any state but TIME_WAIT), both ends of loopback connections included.
    pub inuse: u64,
    pub orphan: u64,
    /// Sockets in TIME_WAIT.
    pub tw: u64,
    pub alloc: u64,
    /// Pages charged to TCP socket buffers (send and receive queues), system-wide.
    pub mem_pages: u64,
}

/// Parses the `TCP:` line of `/proc/net/sockstat`.
pub fn parse_sockstat(text: &str) -> Option<TcpSockstat> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut out = TcpSockstat::default();
    let mut seen = 0;
    let mut words = line["TCP:".len()..].split_whitespace();
    while let (Some(key), Some(value)) = (words.next(), words.next()) {
        let value: u64 = value.parse().ok()?;
        let slot = match key {
            "inuse" => &mut out.inuse,
            "orphan" => &mut out.orphan,
            "tw" => &mut out.tw,
            "alloc" => &mut out.alloc,
            "mem" => &mut out.mem_pages,
            _ => continue,
        };
        *slot = value;
        seen += 1;
    }
    (seen == 5).then_some(out)
}

pub fn read_sockstat() -> io::Result<TcpSockstat> {
    read_parsed(
        "/proc/net/sockstat",
        parse_sockstat,
        "no complete TCP: line",
    )
}

/// Bytes per page, the unit of `mem` in `/proc/net/sockstat`.
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// A `/proc/meminfo` field in bytes, e.g. `MemTotal:` or `Slab:`.
pub fn parse_meminfo(meminfo: &str, key: &str) -> Option<u64> {
    kb_field(meminfo, key)
}

/// The slab caches a connection's kernel objects come from and nothing else on a busy
/// build machine touches much: the TCP socket itself, its inode, and the per-connection
/// readiness registration (an epoll item for epoll servers and for the loadgen, an io_uring
/// request for ovation's pending receive). dentry and filp (about 0.4 KB per socket more) are
/// left out: compilers running beside the benchmark move them by megabytes.
pub const SOCKET_SLABS: [&str; 5] = [
    "TCP",
    "sock_inode_cache",
    "eventpoll_epi",
    "io_kiocb",
    "ep_head",
];

/// Bytes held by the [`SOCKET_SLABS`] caches (active objects x object size), from the text
/// of `/proc/slabinfo` (version 2.x: `name active_objs num_objs objsize ...`).
pub fn parse_socket_slab_bytes(slabinfo: &str) -> Option<u64> {
    if !slabinfo.starts_with("slabinfo - version: 2.") {
        return None;
    }
    let mut total = 0u64;
    let mut found = false;
    for line in slabinfo.lines().skip(2) {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        if !SOCKET_SLABS.contains(&name) {
            continue;
        }
        let active: u64 = f.next()?.parse().ok()?;
        let _num: u64 = f.next()?.parse().ok()?;
        let size: u64 = f.next()?.parse().ok()?;
        total += active * size;
        found = true;
    }
    found.then_some(total)
}

/// [`parse_socket_slab_bytes`] of `/proc/slabinfo` (readable by root only).
pub fn read_socket_slab_bytes() -> io::Result<u64> {
    read_parsed(
        "/proc/slabinfo",
        parse_socket_slab_bytes,
        "an unknown format or no socket caches",
    )
}

/// Total user plus system CPU time of process `pid`, in clock ticks (fields 14 and 15 of
/// `/proc/PID/stat`, counted after the parenthesised command name, which may hold spaces).
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds (user + system) that process `pid` has used so far.
pub fn read_cpu_seconds(pid: u32) -> io::Result<f64> {
    let ticks = read_parsed(
        &format!("/proc/{pid}/stat"),
        parse_stat_cpu_ticks,
        "no CPU time fields",
    )?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// Rescheduling IPIs the kernel has sent, summed over CPUs: the line of `/proc/interrupts`
/// described as "Rescheduling interrupts" (`RES:` on x86, `IPI0:` on arm64). The kernel
/// sends one to wake a thread on another CPU and to interrupt a running thread for work such
/// as an io_uring completion, so it counts cross-CPU traffic that CPU time alone hides.
pub fn parse_rescheduling_ipis(interrupts: &str) -> Option<u64> {
    let line = interrupts
        .lines()
        .find(|l| l.trim_end().ends_with("Rescheduling interrupts"))?;
    let (_, counts) = line.split_once(':')?;
    let mut total = 0u64;
    for word in counts.split_whitespace() {
        match word.parse::<u64>() {
            Ok(n) => total = total.checked_add(n)?,
            // The description follows the per-CPU counts.
            Err(_) => break,
        }
    }
    Some(total)
}

/// The machine's rescheduling IPIs so far (see [`parse_rescheduling_ipis`]).
pub fn read_rescheduling_ipis() -> io::Result<u64> {
    read_parsed(
        "/proc/interrupts",
        parse_rescheduling_ipis,
        "no rescheduling line",
    )
}

/// Reads `path` and parses it with `parse`; `InvalidData` naming the file and `what` went
/// wrong when `parse` finds nothing.
fn read_parsed<T>(path: &str, parse: impl FnOnce(&str) -> Option<T>, what: &str) -> io::Result<T> {
    let text = fs::read_to_string(path)?;
    parse(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {what}")))
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux architecture that ovation targets (the kernel
/// exports `USER_HZ` = 100 to user space on x86 and arm64).
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// One thread's scheduler counters, from `/proc/PID/task/TID/schedstat` (`run_ns wait_ns
/// slices`): time on a CPU, and how many times it was put on one (about one per wake-up for a
/// thread that sleeps between events).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreadSched {
    pub name: String,
    pub run_ns: u64,
    pub slices: u64,
}

/// `(run_ns, slices)` from the text of a `schedstat` file.
pub fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut f = text.split_whitespace();
    let run = f.next()?.parse().ok()?;
    let _wait: u64 = f.next()?.parse().ok()?;
    let slices = f.next()?.parse().ok()?;
    Some((run, slices))
}

/// [`ThreadSched`] of every thread of process `pid`, keyed by thread id. Threads that end
/// while this reads are skipped.
pub fn read_thread_sched(pid: u32) -> io::Result<Vec<(u32, ThreadSched)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let dir = entry.path();
        let (Ok(name), Ok(stat)) = (
            fs::read_to_string(dir.join("comm")),
            fs::read_to_string(dir.join("schedstat")),
        ) else {
            continue;
        };
        if let Some((run_ns, slices)) = parse_schedstat(&stat) {
            let name = name.trim().to_owned();
            out.push((
                tid,
                ThreadSched {
                    name,
                    run_ns,
                    slices,
                },
            ));
        }
    }
    Ok(out)
}

/// The 1-minute load average, the first field of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

pub fn read_loadavg() -> Option<f64> {
    parse_loadavg(&fs::read_to_string("/proc/loadavg").ok()?)
}

/// The machine facts printed above the tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub cpu_model: String,
}

/// The first `model name` of `/proc/cpuinfo`.
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// Reads what it can; fields it cannot read stay empty or zero.
pub fn read_machine() -> Machine {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_bytes: parse_meminfo(&meminfo, "MemTotal:").unwrap_or(0),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        cpu_model: parse_cpu_model(&cpuinfo).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescheduling_ipis_sum_the_cpus_of_their_line() {
        let x86 = "            CPU0       CPU1       \n   0:         35          0   IO-APIC   2-edge      timer\n\
                   NMI:          0          0   Non-maskable interrupts\n\
                   RES:   12994111    6355926   Rescheduling interrupts\n\
                   CAL:   16288942   18991760   Function call interrupts\n";
        assert_eq!(parse_rescheduling_ipis(x86), Some(12_994_111 + 6_355_926));
        let arm = "           CPU0       CPU1\nIPI0:        10         32       Rescheduling interrupts\n\
                   IPI1:         5          7       Function call interrupts\n";
        assert_eq!(parse_rescheduling_ipis(arm), Some(42));
        assert_eq!(
            parse_rescheduling_ipis("CAL: 1 2 Function call interrupts\n"),
            None
        );
    }

    const STATUS: &str = "Name:\tovation\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  812344 kB\nVmRSS:\t   23480 kB\nRssAnon:\t    9120 kB\nThreads:\t5\n";

    #[test]
    fn schedstat_fields() {
        assert_eq!(parse_schedstat("1520331 20410 17\n"), Some((1_520_331, 17)));
        assert_eq!(parse_schedstat("1520331 20410\n"), None);
        assert_eq!(parse_schedstat("x 1 2\n"), None);
        let me = read_thread_sched(std::process::id()).expect("own threads");
        assert!(me.iter().any(|(_, t)| t.run_ns > 0), "{me:?}");
    }

    #[test]
    fn rss_from_status() {
        assert_eq!(parse_vm_rss(STATUS), Some(23_480 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tmany kB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None, "unknown unit");
    }

    #[test]
    fn sockstat_tcp_line() {
        let text = "sockets: used 35\nTCP: inuse 14 orphan 0 tw 90158 alloc 16 mem 131\nUDP: inuse 0 mem 0\n";
        assert_eq!(
            parse_sockstat(text),
            Some(TcpSockstat {
                inuse: 14,
                orphan: 0,
                tw: 90_158,
                alloc: 16,
                mem_pages: 131
            })
        );
        assert_eq!(parse_sockstat("UDP: inuse 0 mem 0\n"), None);
        assert_eq!(
            parse_sockstat("TCP: inuse 14 orphan 0\n"),
            None,
            "incomplete"
        );
        assert_eq!(
            parse_sockstat("TCP: inuse x orphan 0 tw 0 alloc 0 mem 0\n"),
            None
        );
        // A UDP line's `mem` must not be taken for TCP's.
        assert_eq!(
            parse_sockstat("UDP: inuse 1 mem 7\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 2\n")
                .map(|s| s.mem_pages),
            Some(2)
        );
    }

    #[test]
    fn meminfo_fields() {
        let text = "MemTotal:       24576000 kB\nMemFree:        18000000 kB\nSlab:             204800 kB\n";
        assert_eq!(parse_meminfo(text, "MemTotal:"), Some(24_576_000 * 1024));
        assert_eq!(parse_meminfo(text, "Slab:"), Some(204_800 * 1024));
        assert_eq!(parse_meminfo(text, "SReclaimable:"), None);
    }

    #[test]
    fn socket_slabs() {
        let text = "slabinfo - version: 2.1\n# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\nTCP                 30000  30030   2368   13    8 : tunables    0    0    0 : slabdata   2310   2310      0\nsock_inode_cache    30000  30030    832   39    8 : tunables    0    0    0 : slabdata    770    770      0\ndentry             500000 500000    192   21    1 : tunables    0    0    0 : slabdata  23810  23810      0\nio_kiocb            15000  15008    256   16    1 : tunables    0    0    0 : slabdata    938    938      0\n";
        assert_eq!(
            parse_socket_slab_bytes(text),
            Some(30_000 * 2368 + 30_000 * 832 + 15_000 * 256),
            "dentry is not counted"
        );
        assert_eq!(parse_socket_slab_bytes("slabinfo - version: 1.1\n"), None);
        assert_eq!(
            parse_socket_slab_bytes("slabinfo - version: 2.1\n# h\ndentry 1 1 192\n"),
            None
        );
        assert_eq!(
            parse_socket_slab_bytes("slabinfo - version: 2.1\n# h\nTCP x 1 2368\n"),
            None
        );
    }

    #[test]
    fn cpu_ticks_from_stat_with_spaces_in_the_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        let stat = "4242 (peer (x) y) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 70 0 0 20 0 5 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(320));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn loadavg() {
        assert_eq!(parse_loadavg("1.40 2.72 2.59 3/412 25123\n"), Some(1.4));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("x 1 2"), None);
    }

    #[test]
    fn cpu_model() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(parse_cpu_model(info).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(parse_cpu_model(""), None);
    }
}
