//! `herald bench …` runs the `herald-bench` binary found beside `herald` (then on `PATH`) with
//! the same arguments and exit code, and says how to build it when it is missing. The load
//! generator itself is tested in `bench/tests/`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

/// A folder holding a link to the `herald` binary under test, so that "beside this executable"
/// is a place the test controls. Removed at the end.
struct Install(PathBuf);

impl Install {
    fn new(name: &str) -> Install {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("bench-alias-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let herald = dir.join("herald");
        if std::fs::hard_link(env!("CARGO_BIN_EXE_herald"), &herald).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_herald"), &herald).unwrap();
        }
        Install(dir)
    }

    fn herald(&self) -> Command {
        let mut cmd = Command::new(self.0.join("herald"));
        // An empty PATH: only the folder's own herald-bench can be found.
        cmd.env("PATH", &self.0);
        cmd
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_alias_passes_arguments_and_exit_code_through() {
    let install = Install::new("found");
    let tool = install.0.join("herald-bench");
    std::fs::write(&tool, "#!/bin/sh\necho \"herald-bench got: $*\"\nexit 3\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = install
        .herald()
        .args(["bench", "fanout", "--size", "4", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "herald-bench got: fanout --size 4 --help\n"
    );
}

#[test]
fn a_missing_tool_is_named_with_the_command_that_builds_it() {
    let install = Install::new("missing");
    let out = install.herald().args(["bench", "fanout"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("herald-bench") && err.contains("cargo build --release -p herald-bench"),
        "{err}"
    );
}
