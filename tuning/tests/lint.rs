//! Static checks of the scripts: shellcheck (when installed; CI installs it) and bash's
//! own syntax check.

mod common;

use std::process::Command;

use common::scripts_dir;

const SCRIPTS: [&str; 4] = ["check", "apply", "revert", "lib.sh"];

#[test]
fn shellcheck_finds_nothing() {
    let Ok(version) = Command::new("shellcheck").arg("--version").output() else {
        eprintln!(
            "note: shellcheck is not installed (apt-get install shellcheck); skipping the lint"
        );
        return;
    };
    assert!(version.status.success());
    let out = Command::new("shellcheck")
        .current_dir(scripts_dir())
        .arg("--external-sources")
        .args(SCRIPTS)
        .output()
        .expect("run shellcheck");
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bash_parses_every_script() {
    for script in SCRIPTS {
        let out = Command::new("bash")
            .arg("-n")
            .arg(scripts_dir().join(script))
            .output()
            .expect("run bash -n");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn scripts_are_executable() {
    use std::os::unix::fs::PermissionsExt;
    for script in ["check", "apply", "revert"] {
        let mode = std::fs::metadata(scripts_dir().join(script))
            .expect("script exists")
            .permissions()
            .mode();
        assert_ne!(mode & 0o111, 0, "{script} is not executable");
    }
}
