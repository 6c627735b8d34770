//! Startup check of the host limits that decide how many connections ovation can hold.
//!
//! Owns: reading the process limits from `/proc/self/limits` (open files, locked memory)
//! and the kernel's `fs.file-max`, `fs.nr_open` and `net.core.somaxconn`, comparing them
//! with what the configuration needs, and turning each shortfall into one warning that
//! names the current value, the need and the fix. The formulas are the ones `tuning/check`
//! uses (tuning/README.md explains the numbers). Reading files instead of calling
//! `getrlimit` keeps this module free of unsafe code; parsing is pure and tested here.
//!
//! Also owns the descriptor reserve: the default `max_connections` is the open-file limit
//! less [`fd_reserve`] ([`derived_max_connections`]), so viewers filling every seat still
//! leave descriptors for the operator API, the shards' 503 answers, the store and the logs;
//! the open-file check only warns when a configured `max_connections` does not leave that
//! reserve ([`minimum_descriptors`]).

use std::fmt;
use std::fs;
use std::path::Path;

/// Descriptors beyond one per connection: listeners, io_uring rings, eventfds, logs, API.
const FD_HEADROOM: u64 = 1024;
/// The descriptor reserve is at least this many descriptors...
pub const FD_RESERVE_MIN: u64 = 64;
/// ... or this percentage of the open-file limit, whichever is more.
pub const FD_RESERVE_PERCENT: u64 = 2;
/// The default `max_connections` when the open-file limit is unlimited or unreadable, and
/// the most the derived default ever is.
pub const DEFAULT_MAX_CONNECTIONS_CAP: u64 = 1_000_000;
/// glommio refuses to start an executor when RLIMIT_MEMLOCK is below this.
const GLOMMIO_MIN_MEMLOCK: u64 = 512 * 1024;
/// Per glommio executor: 3 rings, each registering the executor's 64 KiB I/O buffer
/// (`server::IO_MEMORY`), plus the rings, rounded up to whole MiB.
const MEMLOCK_PER_EXECUTOR: u64 = 2 * 1024 * 1024;
/// A reconnect storm brings every viewer back within this many seconds.
const STORM_SECONDS: u64 = 10;
const BACKLOG_MIN: u64 = 4096;
const BACKLOG_MAX: u64 = 65535;

/// What every warning points to for the whole picture.
fn fix_hint(max_connections: u64, shards: u64) -> String {
    format!("run `tuning/check --connections {max_connections} --shards {shards}` for every setting and `tuning/apply` to fix the kernel side")
}

/// The outcome of the startup check: one human-readable warning per limit below what the
/// configuration needs. Empty when the host fits the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitReport {
    /// Each names the setting, its current value, what the configuration needs, and the fix.
    pub warnings: Vec<String>,
    /// Limits below the recommendation that cost nothing the server needs (logged at `info`):
    /// a default start on a stock machine is not a reason to warn.
    pub notes: Vec<String>,
}

impl LimitReport {
    /// Log every warning at `warn` level and every note at `info` (or one `debug` line when
    /// there is neither).
    pub fn log(&self) {
        if self.warnings.is_empty() && self.notes.is_empty() {
            tracing::debug!("host limits fit the configured connections");
        }
        for warning in &self.warnings {
            tracing::warn!("{warning}");
        }
        for note in &self.notes {
            tracing::info!("{note}");
        }
    }
}

/// A soft/hard pair from `/proc/PID/limits`; `u64::MAX` stands for "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The limit the process is held to.
    pub soft: u64,
    /// The ceiling an unprivileged process may raise its soft limit to.
    pub hard: u64,
}

/// The limits this module checks, parsed from `/proc/PID/limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcLimits {
    /// "Max open files" (RLIMIT_NOFILE), in descriptors.
    pub nofile: Limit,
    /// "Max locked memory" (RLIMIT_MEMLOCK), in bytes.
    pub memlock: Limit,
}

/// Why a `/proc/PID/limits` text could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitsParseError {
    /// The named line is not in the text.
    Missing(&'static str),
    /// The named line is there but its soft or hard value is not a number or "unlimited".
    Malformed(&'static str),
}

impl fmt::Display for LimitsParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(name) => write!(f, "no '{name}' line"),
            Self::Malformed(name) => write!(f, "the '{name}' line has no soft/hard values"),
        }
    }
}

impl std::error::Error for LimitsParseError {}

const NOFILE_LINE: &str = "Max open files";
const MEMLOCK_LINE: &str = "Max locked memory";

/// Parse the text of `/proc/PID/limits` (a header line, then one line per limit:
/// name, soft, hard, units).
pub fn parse_proc_limits(text: &str) -> Result<ProcLimits, LimitsParseError> {
    Ok(ProcLimits {
        nofile: parse_limit_line(text, NOFILE_LINE)?,
        memlock: parse_limit_line(text, MEMLOCK_LINE)?,
    })
}

fn parse_limit_line(text: &str, name: &'static str) -> Result<Limit, LimitsParseError> {
    let rest = text
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .ok_or(LimitsParseError::Missing(name))?;
    let mut fields = rest.split_whitespace();
    let soft = fields.next().and_then(parse_limit_value);
    let hard = fields.next().and_then(parse_limit_value);
    match (soft, hard) {
        (Some(soft), Some(hard)) => Ok(Limit { soft, hard }),
        _ => Err(LimitsParseError::Malformed(name)),
    }
}

fn parse_limit_value(field: &str) -> Option<u64> {
    if field == "unlimited" {
        Some(u64::MAX)
    } else {
        field.parse().ok()
    }
}

/// Parse a one-number sysctl file such as `/proc/sys/fs/nr_open` ("1048576\n").
pub fn parse_sysctl_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Parse `/proc/sys/kernel/osrelease` ("6.1.0-18-amd64") into (major, minor).
pub fn parse_kernel_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Descriptors kept out of the viewers' reach under an open-file limit of `nofile`:
/// `max(64, 2% of nofile)`. They hold the listeners (and each shard's duplicate of its
/// neighbour's, for accept stealing), io_uring rings and eventfds (about 27 for two shards), the operator API's connections, the shards' 503 answers (8 per shard at
/// most), spare descriptors (1 per shard) and recorded segments kept open (16 per shard at
/// most, `shards::hls_file_cache`), the store and the logs.
pub fn fd_reserve(nofile: u64) -> u64 {
    FD_RESERVE_MIN.max(nofile.saturating_mul(FD_RESERVE_PERCENT).div_ceil(100))
}

/// The default `max_connections` under an open-file limit of `nofile` (soft): the limit less
/// [`fd_reserve`], at least 1 and at most [`DEFAULT_MAX_CONNECTIONS_CAP`] (also the value for
/// an unlimited `nofile`).
pub fn derived_max_connections(nofile: u64) -> u64 {
    nofile
        .saturating_sub(fd_reserve(nofile))
        .clamp(1, DEFAULT_MAX_CONNECTIONS_CAP)
}

/// The default `max_connections` of this process, from its open-file limit now
/// ([`DEFAULT_MAX_CONNECTIONS_CAP`] if `/proc/self/limits` cannot be read: the startup
/// check then says why).
pub fn default_max_connections() -> u64 {
    fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| parse_proc_limits(&text).ok())
        .map_or(DEFAULT_MAX_CONNECTIONS_CAP, |l| {
            derived_max_connections(l.nofile.soft)
        })
}

/// The smallest open-file limit that holds `max_connections` viewers and the reserve: below
/// it, viewers filling every seat exhaust the descriptors the API and the 503 answers need.
pub fn minimum_descriptors(max_connections: u64) -> u64 {
    let mut n = max_connections.saturating_add(FD_RESERVE_MIN.max(max_connections.div_ceil(49)));
    // The estimate is within a descriptor or two; step to the exact inverse of the reserve.
    while n < u64::MAX && n.saturating_sub(fd_reserve(n)) < max_connections {
        n += 1;
    }
    while n > 0 && (n - 1).saturating_sub(fd_reserve(n - 1)) >= max_connections {
        n -= 1;
    }
    n
}

/// Descriptors a process needs for `max_connections`: one per connection, +10% for
/// reconnect churn, +1024 headroom, rounded up to a multiple of 1024.
pub fn required_descriptors(max_connections: u64) -> u64 {
    let raw = max_connections
        .saturating_add(max_connections.div_ceil(10))
        .saturating_add(FD_HEADROOM);
    raw.div_ceil(1024).saturating_mul(1024)
}

/// The accept backlog each shard's listener needs: one second of a reconnect storm in
/// which every viewer returns within 10 s, between 4096 and 65535.
pub fn required_backlog(max_connections: u64, shards: u64) -> u64 {
    let per_second = max_connections.div_ceil(shards.max(1).saturating_mul(STORM_SECONDS));
    per_second.clamp(BACKLOG_MIN, BACKLOG_MAX)
}

/// RLIMIT_MEMLOCK that lets every glommio executor (shards + the application core)
/// register its I/O buffers with its three rings.
pub fn recommended_memlock(shards: u64) -> u64 {
    shards
        .saturating_add(1)
        .saturating_mul(MEMLOCK_PER_EXECUTOR)
}

/// A byte count as systemd's `LimitMEMLOCK=` takes it, in whole MiB ("6M").
fn systemd_mib(bytes: u64) -> String {
    format!("{}M", bytes.div_ceil(1 << 20))
}

fn show(value: u64) -> String {
    if value == u64::MAX {
        "unlimited".to_owned()
    } else {
        value.to_string()
    }
}

fn mib(bytes: u64) -> String {
    if bytes == u64::MAX {
        "unlimited".to_owned()
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes.div_ceil(1 << 20))
    } else {
        format!("{} KiB", bytes.div_ceil(1 << 10))
    }
}

/// Check the limits of this process and host against `max_connections` over `shards`.
pub fn check_host_limits(max_connections: u64, shards: usize) -> LimitReport {
    check_with(Path::new("/"), max_connections, shards)
}

/// [`check_host_limits`] reading `proc/...` under `root` instead of `/` (tests use a fake
/// tree). A file that cannot be read or parsed yields a warning saying which check it
/// skipped; nothing here fails or panics.
pub fn check_with(root: &Path, max_connections: u64, shards: usize) -> LimitReport {
    let shards = u64::try_from(shards.max(1)).unwrap_or(u64::MAX);
    let hint = fix_hint(max_connections, shards);
    let need_fd = required_descriptors(max_connections);
    let min_fd = minimum_descriptors(max_connections);
    let mut warnings = Vec::new();
    let mut notes = Vec::new();

    let read = |rel: &str| {
        let path = root.join(rel);
        fs::read_to_string(&path).map_err(|e| format!("could not read {}: {e}", path.display()))
    };
    let sysctl = |rel: &str, warnings: &mut Vec<String>| -> Option<u64> {
        match read(rel) {
            Ok(text) => {
                let value = parse_sysctl_u64(&text);
                if value.is_none() {
                    warnings.push(format!(
                        "{rel} holds {:?}, not a number; its check was skipped",
                        text.trim()
                    ));
                }
                value
            }
            Err(e) => {
                warnings.push(format!("{e}; its check was skipped"));
                None
            }
        }
    };

    let limits = match read("proc/self/limits") {
        Ok(text) => match parse_proc_limits(&text) {
            Ok(limits) => Some(limits),
            Err(e) => {
                warnings.push(format!(
                    "/proc/self/limits: {e}; descriptor and memlock checks skipped"
                ));
                None
            }
        },
        Err(e) => {
            warnings.push(format!("{e}; descriptor and memlock checks skipped"));
            None
        }
    };

    if let Some(limits) = limits {
        let nofile = limits.nofile;
        if nofile.soft < min_fd {
            let raise = if nofile.hard >= need_fd {
                format!(
                    " (the hard limit, {}, allows it: only the soft limit is low)",
                    show(nofile.hard)
                )
            } else {
                String::new()
            };
            warnings.push(format!(
                "open-file limit (RLIMIT_NOFILE) is {} but max_connections {max_connections} needs at least {min_fd} descriptors (connections + a reserve of max({FD_RESERVE_MIN}, {FD_RESERVE_PERCENT}%) for the API, 503 answers, the store and logs) and {need_fd} are recommended (connections + 10% + {FD_HEADROOM}){raise}: with every viewer seat taken the operator API and new viewers' 503 answers fail with EMFILE. Fix: LimitNOFILE={need_fd} in the systemd unit (see tuning/ovation.service) or `ulimit -n {need_fd}` before starting, or leave max_connections unset (it defaults to {} under this limit); {hint}",
                show(nofile.soft),
                derived_max_connections(nofile.soft)
            ));
            // nr_open caps what the fix above may set.
            if let Some(nr_open) = sysctl("proc/sys/fs/nr_open", &mut warnings) {
                if nr_open < need_fd {
                    warnings.push(format!(
                        "fs.nr_open is {nr_open}: no process may raise its open-file limit above it, and max_connections {max_connections} needs {need_fd}. Fix: sysctl fs.nr_open={need_fd} before raising LimitNOFILE; {hint}"
                    ));
                }
            }
        }

        let memlock = limits.memlock.soft;
        let want = recommended_memlock(shards);
        let old_kernel = read("proc/sys/kernel/osrelease")
            .ok()
            .and_then(|t| parse_kernel_version(&t))
            .is_some_and(|v| v < (5, 12));
        let rings = if old_kernel {
            " This kernel is older than 5.12 and also charges the io_uring rings themselves to this limit."
        } else {
            ""
        };
        if memlock < GLOMMIO_MIN_MEMLOCK {
            warnings.push(format!(
                "locked-memory limit (RLIMIT_MEMLOCK) is {}: glommio refuses to start io_uring executors below {}.{rings} Fix: LimitMEMLOCK={} in the systemd unit or `ulimit -l {}` (KiB) before starting; {hint}",
                mib(memlock),
                mib(GLOMMIO_MIN_MEMLOCK),
                systemd_mib(want),
                want.div_ceil(1024)
            ));
        } else if memlock < want {
            // glommio registers its buffers for file I/O; ovation's socket I/O never uses
            // them, so this is a note, not a warning.
            notes.push(format!(
                "locked-memory limit (RLIMIT_MEMLOCK) is {} but {} shards + the application core want {} to register glommio's 64 KiB I/O buffer with each of their 3 io_uring rings; below that glommio logs 'registering buffers ... Skipping' and runs without them (socket I/O does not need them).{rings} Fix: LimitMEMLOCK={} in the systemd unit; {hint}",
                mib(memlock),
                shards,
                mib(want),
                systemd_mib(want),
            ));
        }
    }

    let need_filemax = need_fd.saturating_add(65536);
    if let Some(file_max) = sysctl("proc/sys/fs/file-max", &mut warnings) {
        if file_max < need_filemax {
            warnings.push(format!(
                "fs.file-max is {file_max}: the whole host may open no more files, and max_connections {max_connections} needs {need_fd} plus room for the rest of the host ({need_filemax}); accepts fail with ENFILE beyond it. Fix: sysctl fs.file-max={need_filemax}; {hint}"
            ));
        }
    }

    let need_backlog = required_backlog(max_connections, shards);
    if let Some(somaxconn) = sysctl("proc/sys/net/core/somaxconn", &mut warnings) {
        if somaxconn < need_backlog {
            warnings.push(format!(
                "net.core.somaxconn is {somaxconn}: it caps each shard's accept queue, and a reconnect storm of {max_connections} viewers over {shards} shards wants {need_backlog}; connections beyond the queue are dropped and retried by clients after a second or more. Fix: sysctl net.core.somaxconn={need_backlog}; {hint}"
            ));
        }
    }

    LimitReport { warnings, notes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LIMITS_LOW: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max open files            1024                 524288               files     
Max locked memory         65536                65536                bytes     
Max address space         unlimited            unlimited            bytes     
";

    const LIMITS_OK: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max open files            1048576              1048576              files     
Max locked memory         unlimited            unlimited            bytes     
";

    /// A fake root with the files check_with reads; removed on drop.
    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(limits: &str, file_max: &str, nr_open: &str, somaxconn: &str, kernel: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "ovation-limits-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let files = [
                ("proc/self/limits", limits),
                ("proc/sys/fs/file-max", file_max),
                ("proc/sys/fs/nr_open", nr_open),
                ("proc/sys/net/core/somaxconn", somaxconn),
                ("proc/sys/kernel/osrelease", kernel),
            ];
            for (rel, text) in files {
                let path = dir.join(rel);
                fs::create_dir_all(path.parent().expect("fixture paths have a parent"))
                    .expect("create fake root");
                fs::write(&path, text).expect("write fake root file");
            }
            FakeRoot(dir)
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn parses_proc_limits() {
        let limits = parse_proc_limits(LIMITS_LOW).expect("valid limits text");
        assert_eq!(
            limits.nofile,
            Limit {
                soft: 1024,
                hard: 524288
            }
        );
        assert_eq!(
            limits.memlock,
            Limit {
                soft: 65536,
                hard: 65536
            }
        );
        let limits = parse_proc_limits(LIMITS_OK).expect("valid limits text");
        assert_eq!(
            limits.memlock,
            Limit {
                soft: u64::MAX,
                hard: u64::MAX
            }
        );
    }

    #[test]
    fn rejects_missing_and_malformed_limit_lines() {
        assert_eq!(
            parse_proc_limits("Max open files 1 2 files\n"),
            Err(LimitsParseError::Missing(MEMLOCK_LINE))
        );
        assert_eq!(
            parse_proc_limits("Max open files lots 2 files\nMax locked memory 1 1 bytes\n"),
            Err(LimitsParseError::Malformed(NOFILE_LINE))
        );
        assert_eq!(
            parse_proc_limits("Max open files 5\nMax locked memory 1 1 bytes\n"),
            Err(LimitsParseError::Malformed(NOFILE_LINE))
        );
        assert_eq!(
            parse_proc_limits(""),
            Err(LimitsParseError::Missing(NOFILE_LINE))
        );
    }

    #[test]
    fn parses_sysctls_and_kernel_versions() {
        assert_eq!(parse_sysctl_u64("1048576\n"), Some(1048576));
        assert_eq!(
            parse_sysctl_u64("9223372036854775807\n"),
            Some(9223372036854775807)
        );
        assert_eq!(parse_sysctl_u64("1 2 3\n"), None);
        assert_eq!(parse_sysctl_u64(""), None);
        assert_eq!(parse_kernel_version("6.18.44-fc-v657\n"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.4-generic"), Some((5, 4)));
        assert_eq!(parse_kernel_version("linux"), None);
    }

    #[test]
    fn formulas_match_tuning_check() {
        // tuning/README.md: roundup(C + ceil(C/10) + 1024, 1024).
        assert_eq!(required_descriptors(100_000), 111_616);
        assert_eq!(required_descriptors(1), 2048);
        // Saturates instead of overflowing.
        assert_eq!(required_descriptors(u64::MAX), u64::MAX);
        // clamp(ceil(C / (S * 10)), 4096, 65535).
        assert_eq!(required_backlog(100_000, 2), 5000);
        assert_eq!(required_backlog(1_000, 2), 4096);
        assert_eq!(required_backlog(10_000_000, 1), 65535);
        assert_eq!(required_backlog(100_000, 0), 10_000);
        assert_eq!(recommended_memlock(2), 3 * 2 * 1024 * 1024);
    }

    #[test]
    fn small_host_warns_with_value_need_and_fix() {
        let root = FakeRoot::new(
            LIMITS_LOW,
            "8192\n",
            "65536\n",
            "128\n",
            "5.10.0-28-amd64\n",
        );
        let report = check_with(&root.0, 100_000, 2);
        let all = report.warnings.join("\n");
        assert_eq!(report.warnings.len(), 5, "{all}");
        assert!(
            all.contains("RLIMIT_NOFILE) is 1024 but max_connections 100000 needs at least 102041"),
            "{all}"
        );
        assert!(all.contains("111616 are recommended"), "{all}");
        assert!(all.contains("defaults to 960 under this limit"), "{all}");
        assert!(all.contains("fs.nr_open is 65536"), "{all}");
        assert!(all.contains("fs.file-max is 8192"), "{all}");
        assert!(all.contains("net.core.somaxconn is 128"), "{all}");
        assert!(all.contains("wants 5000"), "{all}");
        assert!(
            all.contains("RLIMIT_MEMLOCK) is 64 KiB: glommio refuses"),
            "{all}"
        );
        assert!(all.contains("older than 5.12"), "{all}");
        for warning in &report.warnings {
            assert!(
                warning.contains("tuning/check --connections 100000 --shards 2"),
                "{warning}"
            );
        }
    }

    #[test]
    fn the_reserve_and_the_derived_default() {
        assert_eq!(fd_reserve(1024), 64);
        assert_eq!(fd_reserve(20_000), 400);
        assert_eq!(derived_max_connections(1024), 960);
        assert_eq!(derived_max_connections(20_000), 19_600);
        assert_eq!(derived_max_connections(10), 1, "at least one");
        assert_eq!(
            derived_max_connections(u64::MAX),
            DEFAULT_MAX_CONNECTIONS_CAP
        );
        assert_eq!(
            derived_max_connections(1 << 30),
            DEFAULT_MAX_CONNECTIONS_CAP
        );
        // minimum_descriptors is the exact inverse: the smallest limit whose default holds.
        for nofile in (65..5000).chain([19_999, 20_000, 20_001, 1_000_000, 1_020_408]) {
            let max = nofile - fd_reserve(nofile);
            let min = minimum_descriptors(max);
            assert!(min <= nofile, "{nofile}");
            assert!(min - fd_reserve(min) >= max, "{nofile}");
            assert!(min - 1 - fd_reserve(min - 1) < max, "{nofile}");
        }
        assert_eq!(minimum_descriptors(u64::MAX), u64::MAX);
    }

    /// The derived default never warns about descriptors; one seat more does.
    #[test]
    fn derived_default_is_quiet_and_more_warns() {
        for soft in [256u64, 1024, 20_000] {
            let limits = LIMITS_OK.replace(
                "1048576              1048576",
                &format!("{soft:<20} {soft:<20}"),
            );
            let root = FakeRoot::new(
                &limits,
                "9223372036854775807\n",
                "1048576\n",
                "8192\n",
                "6.1.0\n",
            );
            let max = derived_max_connections(soft);
            let report = check_with(&root.0, max, 2);
            assert_eq!(report.warnings, Vec::<String>::new(), "nofile {soft}");
            let report = check_with(&root.0, max + 1, 2);
            assert_eq!(
                report.warnings.len(),
                1,
                "nofile {soft}: {:?}",
                report.warnings
            );
            assert!(report.warnings[0].contains("RLIMIT_NOFILE"));
            let report = check_with(&root.0, 1_000_000, 2);
            assert!(
                report.warnings[0].contains("RLIMIT_NOFILE"),
                "explicit large values warn"
            );
        }
    }

    #[test]
    fn tuned_host_has_no_warnings() {
        let root = FakeRoot::new(
            LIMITS_OK,
            "9223372036854775807\n",
            "1048576\n",
            "8192\n",
            "6.1.0\n",
        );
        let report = check_with(&root.0, 100_000, 2);
        assert_eq!(report.warnings, Vec::<String>::new());
    }

    #[test]
    fn soft_limit_below_hard_says_only_the_soft_limit_is_low() {
        let limits = LIMITS_LOW.replace(
            "1024                 524288",
            "1024                 1048576",
        );
        let root = FakeRoot::new(
            &limits,
            "9223372036854775807\n",
            "1048576\n",
            "8192\n",
            "6.1.0\n",
        );
        let report = check_with(&root.0, 100_000, 2);
        let all = report.warnings.join("\n");
        assert!(all.contains("the hard limit, 1048576, allows it"), "{all}");
        assert!(!all.contains("fs.nr_open"), "{all}");
        // A 64 KiB memlock on a new kernel is still below glommio's minimum.
        assert!(
            all.contains("glommio refuses") && !all.contains("older than 5.12"),
            "{all}"
        );
    }

    #[test]
    fn memlock_between_minimum_and_recommendation_is_explained() {
        let limits = LIMITS_OK.replace(
            "Max locked memory         unlimited            unlimited",
            "Max locked memory         4194304              4194304",
        );
        let root = FakeRoot::new(
            &limits,
            "9223372036854775807\n",
            "1048576\n",
            "8192\n",
            "6.1.0\n",
        );
        let report = check_with(&root.0, 100_000, 2);
        // Socket I/O does not use the registered buffers: a note, not a warning.
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
        assert!(
            report.notes[0].contains("is 4 MiB but 2 shards"),
            "{:?}",
            report.notes
        );
        assert!(
            report.notes[0].contains("LimitMEMLOCK=6M"),
            "{:?}",
            report.notes
        );
    }

    #[test]
    fn unreadable_or_garbled_files_become_warnings_not_panics() {
        let root = FakeRoot::new("garbage", "many\n", "1048576\n", "8192\n", "6.1.0\n");
        fs::remove_file(root.0.join("proc/sys/net/core/somaxconn")).expect("remove fixture file");
        let report = check_with(&root.0, 100_000, 2);
        let all = report.warnings.join("\n");
        assert_eq!(report.warnings.len(), 3, "{all}");
        assert!(
            all.contains("no 'Max open files' line; descriptor and memlock checks skipped"),
            "{all}"
        );
        assert!(all.contains("proc/sys/fs/file-max holds \"many\""), "{all}");
        assert!(
            all.contains("somaxconn") && all.contains("could not read"),
            "{all}"
        );
    }
}
