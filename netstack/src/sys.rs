//! The socket syscalls that std and socket2 do not wrap, and the only `unsafe` in ovation.
//! Every raw call goes through [`syscall!`] (or its `EINTR`-retrying twin), which turns `-1`
//! into `io::Error::last_os_error()`; each `unsafe` block says why it is sound.
//!
//! - [`reuseport_listeners`]: one `SO_REUSEPORT` listener per shard, created in shard order.
//! - [`attach_cpu_steering`]: a classic-BPF reuseport program that picks the listener of the
//!   shard running on the CPU that processed the connection's packets (`SKF_AD_CPU`), as the
//!   kernel's `reuseport_bpf_cpu` selftest does.
//! - [`send_nonblocking`], [`send_vectored_nonblocking`]: one `send(2)` / `sendmsg(2)` with
//!   `MSG_DONTWAIT | MSG_NOSIGNAL`, for the fan-out fast path that writes shared frames to a
//!   socket whose send queue is empty (several queued casts in one call), and for a media
//!   response's head and body in one call; [`send_more_nonblocking`] (`MSG_MORE`) for a head
//!   whose body follows by another path.
//! - [`sendfile_nonblocking`], [`set_nonblocking`]: the file-backed send path of segments
//!   (`sendfile(2)` from a recorded segment's file, or a live segment's unlinked file from
//!   [`unlinked_file_in`] or sealed in-memory file from [`sealed_memfd`], into a non-blocking
//!   socket).
//! - [`file_len`]: a recorded segment's size from its open descriptor (`fstat`).
//! - [`shutdown_write`]: half-close after a close frame.
//! - [`accept`]: non-blocking `accept4(2)` with the peer's address, so a shard drains its
//!   listener's backlog in one go.
//! - [`from_owned_fd`]: hands an owned descriptor to a runtime type that only offers
//!   `FromRawFd` (glommio's listener and stream types).
//! - [`current_cpu`], [`pin_current_thread`]: for tests and tools that check steering.
//! - [`uring`]: the zero-copy sender (`IORING_OP_SEND_ZC` on a small ring of its own).
//! - [`poller`]: readiness of every open viewer socket of a shard from one ring of its own
//!   (multishot `IORING_OP_POLL_ADD`), with [`recv_nonblocking`] to read what is ready and
//!   [`dup_cloexec`] to keep a socket past the runtime type that accepted it.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

pub mod poller;
pub mod uring;

/// Evaluates a raw libc call (an `unsafe { libc::...(...) }` expression, whose `// SAFETY:`
/// note stays at the call site) and turns its `-1` into `io::Error::last_os_error()`, as mio
/// does. The other results come back as `Ok`.
macro_rules! syscall {
    ($call:expr) => {{
        let res = $call;
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// [`syscall!`], retried while the call fails with `EINTR`.
macro_rules! syscall_retry {
    ($call:expr) => {
        loop {
            match syscall!($call) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        }
    };
}

// After the macros, which it uses.
pub mod accept;

/// `SO_ATTACH_REUSEPORT_CBPF` from `asm-generic/socket.h` (libc exports it for Android only).
#[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

// Classic BPF opcodes (linux/bpf_common.h): class | size/op | mode/source.
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JEQ: u16 = 0x10;
const BPF_MOD: u16 = 0x90;
const BPF_K: u16 = 0x00;
const BPF_A: u16 = 0x10;
const BPF_LD_W_ABS: u16 = BPF_LD | BPF_W | BPF_ABS;
const BPF_JMP_JEQ_K: u16 = BPF_JMP | BPF_JEQ | BPF_K;
const BPF_ALU_MOD_K: u16 = BPF_ALU | BPF_MOD | BPF_K;
const BPF_RET_K: u16 = BPF_RET | BPF_K;
const BPF_RET_A: u16 = BPF_RET | BPF_A;

/// Creates `count` listening TCP sockets on `addr`, all in one `SO_REUSEPORT` group, in order:
/// the kernel numbers a group's sockets by the order they join it, and the steering program
/// returns those numbers. When `addr` has port 0 the first socket picks the port and the others
/// bind to it. Sockets are non-blocking and have `SO_REUSEADDR` set.
pub fn reuseport_listeners(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(count);
    let mut bind_addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bind_addr.into())?;
        socket.listen(backlog)?;
        let listener: TcpListener = socket.into();
        bind_addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Builds the classic-BPF program that maps the current CPU to a socket index in the reuseport
/// group: `cpus[i]` is the CPU that shard `i` is pinned to. A CPU without a shard (for example
/// one outside the configured set) is spread with `cpu % shards`.
pub fn cpu_steering_program(cpus: &[usize]) -> Vec<libc::sock_filter> {
    let n = cpus.len().max(1) as u32;
    let mut prog = Vec::with_capacity(cpus.len() * 2 + 3);
    prog.push(insn(
        BPF_LD_W_ABS,
        0,
        0,
        (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
    ));
    for (index, &cpu) in cpus.iter().enumerate() {
        // if A == cpu: return index (jt = 0 falls into the `ret`, jf = 1 skips it).
        prog.push(insn(BPF_JMP_JEQ_K, 0, 1, cpu as u32));
        prog.push(insn(BPF_RET_K, 0, 0, index as u32));
    }
    prog.push(insn(BPF_ALU_MOD_K, 0, 0, n));
    prog.push(insn(BPF_RET_A, 0, 0, 0));
    prog
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Attaches [`cpu_steering_program`] to the reuseport group `listener` belongs to.
#[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))]
pub fn attach_cpu_steering(listener: &impl AsRawFd, cpus: &[usize]) -> io::Result<()> {
    let mut prog = cpu_steering_program(cpus);
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, which lives until the call returns; the kernel copies
    // the program during setsockopt and keeps no pointer to our memory. The length passed is the
    // size of the `sock_fprog` we pass by pointer.
    syscall!(unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Reuseport CPU steering needs the generic socket option numbers.
#[cfg(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64"))]
pub fn attach_cpu_steering(_listener: &impl AsRawFd, _cpus: &[usize]) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// One non-blocking `send(2)`: never blocks, never raises SIGPIPE. `Ok(n)` may be short;
/// `WouldBlock` means the socket's send buffer is full.
pub fn send_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, initialised slice for the duration of the call and the kernel
    // only reads `buf.len()` bytes from it. A stale or closed `fd` makes send fail with
    // EBADF/ENOTSOCK, which is returned as an error, not undefined behaviour.
    syscall_retry!(unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
    .map(|n| n as usize)
}

/// [`send_nonblocking`] with `MSG_MORE`: the kernel holds these bytes back for the send that
/// follows (without the flag), so a response head and its body leave in the same packets
/// and wake the reader once, whatever path sends the body.
pub fn send_more_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: as in `send_nonblocking`: `buf` is valid for the call and only read.
    syscall_retry!(unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_MORE,
        )
    })
    .map(|n| n as usize)
}

/// Most buffers one [`send_vectored_nonblocking`] passes (Linux's `UIO_MAXIOV`).
pub const MAX_IOV: usize = 1024;

/// One non-blocking `sendmsg(2)` of several buffers, in order: never blocks, never raises
/// SIGPIPE. `Ok(n)` counts bytes from the start of `bufs` and may stop inside any buffer;
/// `WouldBlock` means the send buffer is full. Only the first [`MAX_IOV`] buffers are sent.
pub fn send_vectored_nonblocking(fd: RawFd, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
    let count = bufs.len().min(MAX_IOV);
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid value (no name, no
    // control data); we then set only the iovec fields.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with `struct iovec` on Unix; the kernel only reads
    // through these pointers.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = count as _;
    // SAFETY: `msg` points at `count` valid iovecs borrowed from `bufs`, which outlive the
    // call; the kernel reads at most their stated lengths. A stale `fd` is an error return.
    syscall_retry!(unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) })
        .map(|n| n as usize)
}

/// One non-blocking `recv(2)` into `buf`: `Ok(0)` is end of stream, `WouldBlock` means
/// nothing is waiting.
pub fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable slice for the duration of the call and the kernel
    // writes at most `buf.len()` bytes into it. A stale `fd` is an error return.
    syscall_retry!(unsafe {
        libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
    })
    .map(|n| n as usize)
}

/// A second descriptor for the open file `fd` refers to (close-on-exec), owned by the caller.
pub fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC reads no memory; an invalid `fd` is an error return.
    let new = syscall!(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `new` is a descriptor the kernel just opened for us and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Sets `O_NONBLOCK` on `fd` (a socket), so calls that take no per-call flag, such as
/// [`sendfile_nonblocking`], return `WouldBlock` instead of blocking the thread. glommio's
/// stream type is unaffected: it sends and receives with `MSG_DONTWAIT` and waits for
/// readiness with io_uring polls, which do not depend on the flag.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer; a stale `fd` yields EBADF as an error.
    let flags = syscall!(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: F_SETFL takes an integer argument, no pointer; errors are returned.
    syscall!(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// One `sendfile(2)` of up to `count` bytes of `file`, from `*offset`, into the socket
/// `sock`, with no copy through user space; `*offset` advances by the bytes sent. Never
/// blocks when `sock` is non-blocking ([`set_nonblocking`]): `WouldBlock` means its send
/// buffer is full. `Ok(0)` means `file` ends before `*offset`. sendfile takes no
/// `MSG_NOSIGNAL`: a reset peer raises SIGPIPE, which Rust programs ignore (the runtime sets
/// it to `SIG_IGN` before `main`), so the call fails with `EPIPE` instead.
pub fn sendfile_nonblocking(
    sock: RawFd,
    file: RawFd,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(*offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `off` is a valid, exclusively borrowed off_t for the duration of the call; the
    // kernel reads and updates only it. No user memory is read or written otherwise (the bytes
    // go from the page cache to the socket). Stale descriptors yield EBADF as an error.
    let sent = syscall_retry!(unsafe { libc::sendfile(sock, file, &mut off, count) })?;
    *offset = u64::try_from(off).unwrap_or(*offset);
    Ok(sent as usize)
}

/// A sealed in-memory file holding `data`: `memfd_create(2)` (close-on-exec, sealing
/// allowed), `data` written, then sealed against writes, growing and shrinking
/// (`F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL`), so its length and bytes can
/// never change while it is shared: a response may promise `data.len()` bytes from it. Its
/// pages are shared memory the kernel can hand to `sendfile(2)` without a copy. `name` shows
/// only in `/proc/<pid>/fd` (at most 249 bytes; a NUL inside is refused).
pub fn sealed_memfd(name: &str, data: &[u8]) -> io::Result<std::fs::File> {
    use std::io::Write as _;
    let name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a memfd name"))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call; the kernel
    // copies it and keeps no pointer. The flags are plain integers.
    let fd = syscall_retry!(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: memfd_create returned a new descriptor that nothing else owns; the `File`
    // becomes its only owner and closes it on drop (also on the error paths below).
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(data)?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl(F_ADD_SEALS) takes an integer argument, no pointer; `file` is open.
    syscall!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(file)
}

/// An unnamed, read-only file in the directory `dir` holding `data`: `O_TMPFILE` (never
/// linked into `dir`, gone when its last descriptor closes), `data` written, then reopened
/// read-only through `/proc/self/fd` and the writable descriptor closed, so nothing in this
/// process can change it. On a disk file system (ext4, xfs) its pages are ordinary page
/// cache, in large folios where the file system has them, which `sendfile(2)` reads in
/// batches: on Linux 6.x about a sixth of the per-page cost of a memfd, whose shared-memory
/// pages it looks up one 4 KiB page at a time (see `docs/media.md`). Dirty pages of a file
/// closed before writeback (30 s by default) are dropped unwritten. Unlike
/// [`sealed_memfd`] it carries no seals: another process of the same user could still
/// truncate it through `/proc/<pid>/fd`, which makes `sendfile` return 0 early (the caller
/// then drops the connection; it never blocks or reads stale memory). Fails where the file
/// system lacks `O_TMPFILE` (`EOPNOTSUPP`), for the caller to fall back to [`sealed_memfd`].
pub fn unlinked_file_in(dir: &std::path::Path, data: &[u8]) -> io::Result<std::fs::File> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)?;
    file.write_all(data)?;
    // The same inode opened again for reading only; the writable descriptor closes here.
    std::fs::File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// The size of the open file `fd` (`fstat(2)`). Never waits for a disk: the size is in the
/// open inode. (io_uring's `IORING_OP_STATX` is always handed to a kernel worker thread, a
/// context switch per call; this is one plain syscall.)
pub fn file_len(fd: RawFd) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid writable memory for one `struct stat`, which fstat fills on
    // success; a stale `fd` yields EBADF as an error and leaves it untouched (not read then).
    syscall_retry!(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    u64::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Opens `path` read-only only if the kernel can resolve it from its caches without waiting
/// for a disk (`openat2(2)` with `RESOLVE_CACHED`, Linux 5.12): `Ok(None)` when it cannot
/// (`EAGAIN`), or where the kernel lacks `openat2` (`ENOSYS`), for the caller to open
/// asynchronously instead. One plain syscall, so a just-written file opens without the
/// io_uring round trip and the `statx` on a kernel worker thread that glommio's
/// `BufferedFile::open` adds to every open.
pub fn open_cached(path: &std::path::Path) -> io::Result<Option<OwnedFd>> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    /// The kernel's `struct open_how` (libc's is non-exhaustive, so it cannot be built).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) as u64,
        mode: 0,
        resolve: libc::RESOLVE_CACHED,
    };
    // SAFETY: `path` is a NUL-terminated string and `how` a valid `struct open_how`, both
    // alive for the call; their size is passed as the kernel's ABI requires. The kernel
    // only reads them.
    let res = syscall_retry!(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    });
    match res {
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOSYS)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads into `buf` from `offset` of the open file `fd` only from the page cache
/// (`preadv2(2)` with `RWF_NOWAIT`): `Ok(None)` when that would wait for a disk (`EAGAIN`)
/// or the file system cannot promise not to (`EOPNOTSUPP`), for the caller to read
/// asynchronously instead; `Ok(Some(0))` at the end of the file.
pub fn pread_nowait(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<Option<usize>> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `iov` names `buf`, valid writable memory of `buf.len()` bytes for the call;
    // the kernel writes at most that many. A stale `fd` yields EBADF as an error.
    let res = syscall_retry!(unsafe { libc::preadv2(fd, &iov, 1, offset, libc::RWF_NOWAIT) });
    match res {
        Ok(n) => Ok(Some(n as usize)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EOPNOTSUPP)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `shutdown(fd, SHUT_WR)`: sends FIN after the queued bytes, so a close frame is not cut off
/// by a reset when unread input is pending at `close(2)`.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers; a stale `fd` yields EBADF/ENOTSOCK as an error.
    syscall!(unsafe { libc::shutdown(fd, libc::SHUT_WR) }).map(drop)
}

/// Moves an owned descriptor into a type that only implements `FromRawFd`.
///
/// `T` must be the kind of object the descriptor is (a TCP listener for a listener type, a
/// connected stream socket for a stream type); ownership passes to the returned value.
pub fn from_owned_fd<T: FromRawFd>(fd: impl Into<OwnedFd>) -> T {
    let raw = fd.into().into_raw_fd();
    // SAFETY: `raw` comes from an `OwnedFd` we just gave up, so it is open and owned by no one
    // else; the returned `T` becomes its only owner and closes it on drop.
    unsafe { T::from_raw_fd(raw) }
}

/// Pins the calling thread to `cpu` (`sched_setaffinity(0, ...)`).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: cpu_set_t is a plain bitmask for which all-zero is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so CPU_SET stays inside `set`; the
    // kernel reads exactly size_of::<cpu_set_t>() bytes from the pointer we pass.
    syscall!(unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    })
    .map(drop)
}

/// Puts the calling thread under `SCHED_BATCH` (`batch`) or under the normal policy
/// (`SCHED_OTHER`) with `sched_setscheduler(0, ...)`; its nice value is kept, and neither
/// needs a privilege. Under `SCHED_BATCH` a thread keeps its fair share of its CPU, but its
/// wake-ups no longer preempt the task running there, so work that arrives while another
/// task has the CPU is taken in one batch when that task's slice ends. On a CPU the thread
/// has to itself nothing changes.
pub fn set_current_thread_batch(batch: bool) -> io::Result<()> {
    let policy = if batch {
        libc::SCHED_BATCH
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread; the kernel reads one `sched_param` through the
    // pointer, which points at a live local for the whole call.
    syscall!(unsafe { libc::sched_setscheduler(0, policy, &param) }).map(drop)
}

/// Whether the calling thread runs under `SCHED_BATCH`.
pub fn current_thread_is_batch() -> bool {
    // SAFETY: pid 0 names the calling thread; sched_getscheduler only reads its policy.
    syscall!(unsafe { libc::sched_getscheduler(0) }).is_ok_and(|p| p == libc::SCHED_BATCH)
}

/// The CPU the calling thread runs on, or `None` where `sched_getcpu` fails.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu takes no arguments and only reads the calling thread's state.
    let cpu = syscall!(unsafe { libc::sched_getcpu() }).ok()?;
    usize::try_from(cpu).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_scheduling_applies_to_the_calling_thread_only() {
        let before = current_thread_is_batch();
        std::thread::spawn(|| {
            set_current_thread_batch(true).expect("SCHED_BATCH needs no privilege");
            assert!(current_thread_is_batch());
            // A thread started afterwards inherits the policy; the test's own thread is untouched.
            assert!(std::thread::spawn(current_thread_is_batch).join().unwrap());
            set_current_thread_batch(false).expect("SCHED_OTHER needs no privilege");
            assert!(!current_thread_is_batch());
        })
        .join()
        .unwrap();
        assert_eq!(current_thread_is_batch(), before);
    }

    #[test]
    fn steering_program_maps_cpus_to_indexes() {
        let prog = cpu_steering_program(&[2, 3]);
        assert_eq!(prog.len(), 1 + 2 * 2 + 2);
        assert_eq!(prog[0].k, (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32);
        assert_eq!((prog[1].code, prog[1].k), (BPF_JMP_JEQ_K, 2));
        assert_eq!((prog[2].code, prog[2].k), (BPF_RET_K, 0));
        assert_eq!((prog[3].code, prog[3].k), (BPF_JMP_JEQ_K, 3));
        assert_eq!((prog[4].code, prog[4].k), (BPF_RET_K, 1));
        assert_eq!((prog[5].code, prog[5].k), (BPF_ALU_MOD_K, 2));
        assert_eq!(prog[6].code, BPF_RET_A);
    }

    #[test]
    fn listeners_share_one_port_and_accept_steering() {
        let listeners = reuseport_listeners("127.0.0.1:0".parse().unwrap(), 2, 16).unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert_eq!(listeners[1].local_addr().unwrap().port(), port);
        attach_cpu_steering(&listeners[0], &[0, 1]).expect("attach reuseport cbpf");
    }

    #[test]
    fn send_nonblocking_reports_would_block_when_full() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let chunk = vec![0u8; 1 << 16];
        let mut total = 0usize;
        let err = loop {
            match send_nonblocking(client.as_raw_fd(), &chunk) {
                Ok(n) => total += n,
                Err(e) => break e,
            }
            assert!(total < 1 << 30, "send buffer never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(total > 0);
    }

    #[test]
    fn vectored_send_keeps_order() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let parts: [&[u8]; 3] = [b"one ", b"two ", b"three"];
        let iov: Vec<std::io::IoSlice<'_>> =
            parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
        assert_eq!(
            send_vectored_nonblocking(client.as_raw_fd(), &iov).unwrap(),
            13
        );
        let mut got = [0u8; 13];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"one two three");
    }

    #[test]
    fn sendfile_sends_file_bytes_and_would_blocks_when_full() {
        use std::io::{Read, Write};
        let path = std::env::temp_dir().join(format!(
            "ovation-sys-sendfile-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        set_nonblocking(client.as_raw_fd()).unwrap();
        set_nonblocking(client.as_raw_fd()).unwrap(); // idempotent

        // Nobody reads: the socket fills and sendfile says WouldBlock instead of blocking.
        let mut off = 0u64;
        let err = loop {
            match sendfile_nonblocking(client.as_raw_fd(), file.as_raw_fd(), &mut off, 1 << 20) {
                Ok(0) => off = 0, // wrapped around the file: keep filling
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop((client, server));

        // A reader: exactly the file's bytes, from the offset given, then Ok(0) at its end.
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        server = accepted;
        set_nonblocking(client.as_raw_fd()).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            server.read_to_end(&mut got).unwrap();
            got
        });
        let mut off = 1000u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match sendfile_nonblocking(client.as_raw_fd(), file.as_raw_fd(), &mut off, 1 << 20) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "stuck sending");
                    std::thread::yield_now();
                }
                Err(e) => panic!("sendfile: {e}"),
            }
        }
        assert_eq!(off, data.len() as u64);
        drop(client);
        assert!(reader.join().unwrap() == data[1000..], "bytes differ");
    }

    #[test]
    fn an_unlinked_file_holds_its_bytes_read_only_and_leaves_no_name() {
        use std::io::{Read as _, Seek as _, Write as _};
        let dir = std::env::temp_dir().join(format!("ovation-unlinked-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut file = match unlinked_file_in(&dir, &data) {
            Ok(f) => f,
            // A temp dir on a file system without O_TMPFILE: nothing to check here.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(file_len(file.as_raw_fd()).unwrap(), data.len() as u64);
        let mut back = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert!(file.write_all(b"x").is_err(), "read-only");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "no name in the directory"
        );
        assert!(unlinked_file_in(&dir.join("missing"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sealed_memfd_holds_its_bytes_refuses_change_and_feeds_sendfile() {
        use std::io::{Read, Seek, Write};
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = sealed_memfd("ovation-test-segment", &data).unwrap();
        assert_eq!(file.metadata().unwrap().len(), data.len() as u64);
        // Sealed: no write, no growth, no truncation.
        assert!(file.write_all(b"x").is_err());
        assert!(file.set_len(10).is_err());
        assert!(file.set_len(data.len() as u64 + 1).is_err());
        let mut back = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut back).unwrap();
        assert!(back == data, "bytes differ");
        assert!(
            sealed_memfd("a\0b", b"x").is_err(),
            "a NUL in the name is refused"
        );

        // sendfile from it into a socket: exactly its bytes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        set_nonblocking(client.as_raw_fd()).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            server.read_to_end(&mut got).unwrap();
            got
        });
        let mut off = 0u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while off < data.len() as u64 {
            match sendfile_nonblocking(client.as_raw_fd(), file.as_raw_fd(), &mut off, 1 << 20) {
                Ok(n) => assert!(n > 0, "the memfd ended early"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "stuck sending");
                    std::thread::yield_now();
                }
                Err(e) => panic!("sendfile: {e}"),
            }
        }
        drop(client);
        assert!(reader.join().unwrap() == data, "bytes differ");
    }

    #[test]
    fn open_cached_opens_a_cached_file_and_reports_a_missing_one() {
        let path = std::env::temp_dir().join(format!(
            "ovation-sys-open-cached-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, [5u8; 4321]).unwrap();
        // Just written, so its name is in the dentry cache: opened at once.
        let fd = open_cached(&path).unwrap().expect("a cached lookup");
        assert_eq!(file_len(fd.as_raw_fd()).unwrap(), 4321);
        std::fs::remove_file(&path).unwrap();
        // A missing name: not found, or (no negative entry cached) left to the async path.
        match open_cached(&path) {
            Ok(None) => {}
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}"),
            Ok(Some(_)) => panic!("a removed file opened"),
        }
        let nul = open_cached(std::path::Path::new("a\0b")).unwrap_err();
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput, "{nul}");
    }

    #[test]
    fn pread_nowait_reads_cached_pages_from_an_offset() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        // A file on the checkout's disk file system (as recordings are on the data
        // directory's), just written, so its pages are cached: read at once. (The system's
        // temporary directory may be tmpfs, and tmpfs and memfds refuse RWF_NOWAIT.) Removed
        // at once; the open descriptor keeps it readable.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            ".ovation-sys-pread-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut buf = [0u8; 100];
        assert_eq!(
            pread_nowait(file.as_raw_fd(), &mut buf, 5_000).unwrap(),
            Some(100)
        );
        assert_eq!(&buf[..], &data[5_000..5_100]);
        assert_eq!(
            pread_nowait(file.as_raw_fd(), &mut buf, 9_950).unwrap(),
            Some(50)
        );
        assert_eq!(
            pread_nowait(file.as_raw_fd(), &mut buf, 10_000).unwrap(),
            Some(0)
        );
        assert!(
            pread_nowait(-1, &mut buf, 0).is_err(),
            "a bad descriptor is an error"
        );
    }

    #[test]
    fn file_len_reads_an_open_files_size() {
        let file = sealed_memfd("len", &[7u8; 12_345]).unwrap();
        assert_eq!(file_len(file.as_raw_fd()).unwrap(), 12_345);
        assert!(file_len(-1).is_err(), "a bad descriptor is an error");
    }

    #[test]
    fn sendfile_to_a_closed_peer_is_an_error_not_a_signal() {
        let path = std::env::temp_dir().join(format!(
            "ovation-sys-sendfile-peer-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, vec![1u8; 1 << 20]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        set_nonblocking(client.as_raw_fd()).unwrap();
        // The peer closes with unread data pending: a reset.
        let mut off = 0u64;
        let _ = sendfile_nonblocking(client.as_raw_fd(), file.as_raw_fd(), &mut off, 4096);
        drop(server);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let err = loop {
            match sendfile_nonblocking(client.as_raw_fd(), file.as_raw_fd(), &mut off, 4096) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => break e,
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no error after the reset"
            );
            if off >= 1 << 20 {
                off = 0;
            }
        };
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{err}"
        );
    }

    #[test]
    fn current_cpu_is_known() {
        assert!(current_cpu().is_some());
    }
}
