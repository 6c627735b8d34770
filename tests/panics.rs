//! A panic in any thread of `ovation serve` ends the process (`ovation::panics`): the test
//! runs itself again as a child process that installs the hook and panics in a named thread.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

/// Set in the child's environment: the child panics instead of checking.
const CHILD: &str = "OVATION_PANICS_TEST_CHILD";
/// `SIGABRT` on Linux.
const SIGABRT: i32 = 6;

#[test]
fn a_panic_in_any_thread_ends_the_process() {
    if std::env::var_os(CHILD).is_some() {
        ovation::panics::abort_on_panic();
        let shard = std::thread::Builder::new()
            .name("shard-7-7".into())
            .spawn(|| panic!("a defect in a shard"))
            .expect("spawn");
        let _ = shard.join();
        // Reached only when the panic left the process running, as it did before the hook.
        println!("the process outlived its shard");
        std::process::exit(0);
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_panic_in_any_thread_ends_the_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "the child ended with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(!stdout.contains("outlived"), "{stdout}");
    // The usual report still comes first: the thread, and the message.
    assert!(
        stderr.contains("'shard-7-7'") && stderr.contains("a defect in a shard"),
        "{stderr}"
    );
}
