//! The install that `docs/operations.md` documents, followed on this
//! machine into a temporary root: the binary and the script in the release
//! layout, the `current` link, the user from `contrib/drainport.sysusers`,
//! the template unit enabled for boot, and `systemd-analyze verify` on the
//! unit as installed. Nothing outside the temporary root is touched, and
//! no service is started (that needs systemd as PID 1).

use std::path::Path;
use std::process::Command;

use crate::util::{BIN, ScratchDir, have_tool, skip};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const GUIDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");

/// The shell block between `<!-- install:start -->` and
/// `<!-- install:end -->` in the guide, without its fence.
fn documented_install() -> String {
    let guide = std::fs::read_to_string(GUIDE).expect("read docs/operations.md");
    let start = guide
        .find("<!-- install:start -->")
        .expect("an install:start marker in docs/operations.md");
    let end = guide[start..]
        .find("<!-- install:end -->")
        .expect("an install:end marker after install:start")
        + start;
    let block = guide[start..end]
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.rsplit_once("```"))
        .map(|(body, _)| body)
        .expect("a ```sh block between the install markers");
    block.to_owned()
}

/// The documented steps, moved under `root`: the binary `cargo test` built
/// stands for `target/release/drainport`, absolute paths move under the
/// root, `systemd-sysusers` and `systemctl enable` get `--root`, and the
/// steps that need cargo's release build or a running systemd are left
/// out. Each rule must apply, so that a changed page cannot slip a step
/// past them onto the real system.
fn moved_under(block: &str, root: &Path) -> String {
    let root = root.to_str().expect("a UTF-8 temporary directory");
    let mut applied = [false; 6];
    let mut script = String::new();
    for line in block.lines() {
        let mut line = line.to_owned();
        if line == "cargo build --release --locked" {
            applied[0] = true;
            continue;
        }
        if line == "systemctl daemon-reload" {
            applied[1] = true;
            continue;
        }
        if line.contains("target/release/drainport") {
            applied[2] = true;
            line = line.replace("target/release/drainport", BIN);
        }
        if line == "systemd-sysusers" {
            applied[3] = true;
            line = format!("systemd-sysusers --root={root}");
        }
        if let Some(units) = line.strip_prefix("systemctl enable --now ") {
            applied[4] = true;
            line = format!("systemctl --root={root} enable {units}");
        }
        for dir in ["/opt/", "/etc/"] {
            if line.contains(&format!(" {dir}")) {
                applied[5] = true;
                line = line.replace(&format!(" {dir}"), &format!(" {root}{dir}"));
            }
        }
        // Whatever names an absolute path now names one under the root, or
        // the binary under test.
        for word in line.split_whitespace() {
            let path = word.split_once('=').map_or(word, |(_, v)| v);
            assert!(
                !path.starts_with('/') || path.starts_with(root) || path == BIN,
                "a step outside the temporary root: {line:?}"
            );
        }
        script.push_str(&line);
        script.push('\n');
    }
    assert_eq!(
        applied, [true; 6],
        "the install steps changed; update the rules in tests/it/install.rs:\n{block}"
    );
    script
}

/// Verifies the unit at `installed`, which names its programs under `root`,
/// as instance `drainport@g1-1`: `systemd-analyze verify` checks that the
/// program exists. Returns its complaints, empty when clean.
fn verify_instance(installed: &Path, root: &Path) -> String {
    let unit = std::fs::read_to_string(installed).expect("read the installed unit");
    const PROGRAM: &str = "ExecStart=/opt/drainport/";
    assert!(unit.contains(PROGRAM), "{unit}");
    let dir = ScratchDir::new("install-verify");
    let copy = dir.join("drainport@.service");
    let moved = format!("ExecStart={}/opt/drainport/", root.display());
    std::fs::write(&copy, unit.replace(PROGRAM, &moved)).unwrap();
    std::os::unix::fs::symlink("drainport@.service", dir.join("drainport@g1-1.service")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("drainport@g1-1.service"))
        .output()
        .expect("run systemd-analyze");
    // It exits 0 after some complaints, which it prints on stderr.
    let mut complaints = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        complaints.push_str(&format!("\n{:?}", out.status));
    }
    complaints
}

#[test]
fn the_documented_install_enables_units_that_verify() {
    for tool in ["systemd-sysusers", "systemctl", "systemd-analyze"] {
        if !have_tool(tool, "systemd") {
            return;
        }
    }
    let root = ScratchDir::new("install");
    let script = moved_under(&documented_install(), &root);
    let out = Command::new("sh")
        .args(["-eu", "-c", &script])
        .current_dir(REPO)
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{script}\n{out:?}");

    // The release layout, and `current` naming it relatively.
    let version = env!("CARGO_PKG_VERSION");
    let current = root.join("opt/drainport/current");
    assert_eq!(
        std::fs::read_link(&current).unwrap(),
        Path::new("releases").join(version)
    );
    let run = Command::new(current.join("bin/drainport"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        format!("drainport {version}")
    );
    let help = Command::new(current.join("bin/rolling-restart"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success(), "{help:?}");

    // The user the unit names, a system account that cannot log in.
    let unit_path = root.join("etc/systemd/system/drainport@.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let (user, _) = system_user_of(&unit, &root);
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with(&format!("{user}:"))),
        "{group}"
    );

    // Enabled: each instance starts at boot.
    for instance in ["drainport@g1-1.service", "drainport@g1-2.service"] {
        let link = root
            .join("etc/systemd/system/multi-user.target.wants")
            .join(instance);
        assert!(
            std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()),
            "{} is not a link",
            link.display()
        );
    }

    let complaints = verify_instance(&unit_path, &root);
    assert!(complaints.is_empty(), "{complaints}");
}

/// The guide's other way to make the user, for hosts without
/// `systemd-sysusers`, makes the user the unit names, as a system account.
#[test]
fn useradd_makes_the_user_the_unit_names() {
    if !have_tool("useradd", "passwd") {
        return;
    }
    let guide = std::fs::read_to_string(GUIDE).expect("read docs/operations.md");
    let line = guide
        .split('`')
        .find(|s| s.starts_with("useradd "))
        .expect("a `useradd ...` command in docs/operations.md");
    let root = ScratchDir::new("useradd");
    std::fs::create_dir(root.join("etc")).unwrap();
    for file in ["passwd", "group", "shadow", "gshadow"] {
        std::fs::write(root.join("etc").join(file), "").unwrap();
    }
    let mut args = line.split_whitespace().skip(1);
    let out = Command::new("useradd")
        .arg("--prefix")
        .arg(&*root)
        .args(&mut args)
        .output()
        .expect("run useradd");
    if !out.status.success() {
        // Some builds of useradd refuse --prefix without privilege.
        skip(&format!("useradd --prefix failed: {out:?}"));
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/drainport@.service"
    ))
    .unwrap();
    let (_, entry) = system_user_of(&unit, &root);
    assert_eq!(entry[5], "/", "{entry:?}");
    assert!(entry[6].ends_with("/nologin"), "{entry:?}");
}

/// The user a unit's `User=` names, and its `passwd` entry under `root`,
/// checked to be a system account (uid below 1000) that cannot log in.
#[track_caller]
fn system_user_of(unit: &str, root: &std::path::Path) -> (String, Vec<String>) {
    let user = unit
        .lines()
        .find_map(|l| l.strip_prefix("User="))
        .expect("a User= line")
        .to_owned();
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let entry: Vec<String> = passwd
        .lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f[0] == user)
        .unwrap_or_else(|| panic!("no {user} in passwd under {}:\n{passwd}", root.display()));
    let uid: u32 = entry[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "{entry:?}");
    assert!(entry[6].ends_with("/nologin"), "{entry:?}");
    (user, entry)
}
