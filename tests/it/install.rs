//! The install that `docs/operations.md` documents, followed on this
//! machine into a temporary root: the binary and the script in the release
//! layout, the `current` link, the user from `contrib/drainport.sysusers`,
//! the template unit enabled for boot, and `systemd-analyze verify` on the
//! unit as installed. Nothing outside the temporary root is touched, and
//! no service is started (that needs systemd as PID 1).

use std::path::Path;
use std::process::Command;

use crate::util::{BIN, ScratchDir, Server, have_tool, skip, systemd_verify};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const GUIDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");

/// The shell block between `<!-- NAME:start -->` and `<!-- NAME:end -->`
/// in the guide, without its fence.
fn documented(name: &str) -> String {
    let guide = std::fs::read_to_string(GUIDE).expect("read docs/operations.md");
    let start = guide
        .find(&format!("<!-- {name}:start -->"))
        .unwrap_or_else(|| panic!("a {name}:start marker in docs/operations.md"));
    let end = guide[start..]
        .find(&format!("<!-- {name}:end -->"))
        .unwrap_or_else(|| panic!("a {name}:end marker after {name}:start"))
        + start;
    let block = guide[start..end]
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.rsplit_once("```"))
        .map(|(body, _)| body)
        .unwrap_or_else(|| panic!("a ```sh block between the {name} markers"));
    block.to_owned()
}

fn documented_install() -> String {
    documented("install")
}

/// The documented steps, moved under `root`: `bin` stands for
/// `target/release/drainport`, absolute paths move under the root,
/// `systemd-sysusers` and `systemctl enable` get `--root`, and the steps
/// that need cargo's release build or a running systemd are left out. Each
/// rule must apply, so that a changed page cannot slip a step past them
/// onto the real system.
fn moved_under(block: &str, root: &Path, bin: &str) -> String {
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
            line = line.replace("target/release/drainport", bin);
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
                !path.starts_with('/') || path.starts_with(root) || path == bin,
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
    systemd_verify(&[&dir.join("drainport@g1-1.service")])
}

#[test]
fn the_documented_install_enables_units_that_verify() {
    for tool in ["systemd-sysusers", "systemctl", "systemd-analyze"] {
        if !have_tool(tool, "systemd") {
            return;
        }
    }
    let root = ScratchDir::new("install");
    let script = moved_under(&documented_install(), &root, BIN);
    let out = Command::new("sh")
        .args(["-eu", "-c", &script])
        .current_dir(REPO)
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{script}\n{out:?}");

    // The release layout, and `current` naming it relatively: a folder
    // named after the version, with a suffix of its own if it is dirty.
    let version = env!("DRAINPORT_VERSION");
    let current = root.join("opt/drainport/current");
    let release = std::fs::read_link(&current).unwrap();
    let release = release.to_str().unwrap();
    if version.ends_with(".dirty") {
        assert!(
            release.starts_with(&format!("releases/{version}.")),
            "{release}"
        );
    } else {
        assert_eq!(release, format!("releases/{version}"));
    }
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

/// The cargo that built this test, if this user can run it: a test run by
/// another user than the one who built it (CI's second run) cannot.
fn usable_cargo() -> Option<std::path::PathBuf> {
    let cargo = std::env::var_os("CARGO")
        .map(std::path::PathBuf::from)
        .or_else(|| option_env!("CARGO").map(std::path::PathBuf::from))?;
    let works = Command::new(&cargo)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    works.then_some(cargo)
}

/// Runs git in `dir` with a fixed identity; returns its stdout.
#[track_caller]
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=drainport test",
            "-c",
            "user.email=test@localhost",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Copies this repository's files, without `.git`, `target` and the fuzz
/// crate, into `to`.
#[track_caller]
fn copy_sources(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let out = Command::new("sh")
        .args([
            "-c",
            "tar -C \"$0\" --exclude=./target --exclude=./.git --exclude=./fuzz -cf - . | tar -C \"$1\" -xf -",
            REPO,
        ])
        .arg(to)
        .output()
        .expect("run tar");
    assert!(out.status.success(), "{out:?}");
}

/// Builds the drainport binary from the sources in `src` into `target`,
/// and returns it.
#[track_caller]
fn build(cargo: &Path, src: &Path, target: &Path) -> std::path::PathBuf {
    let out = Command::new(cargo)
        .args(["build", "--offline", "--locked", "--bin", "drainport"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(src)
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build in {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug/drainport")
}

/// What `BIN --version` prints, without its newline.
#[track_caller]
fn version_of(bin: &Path) -> String {
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `/proc/PID/exe` of a process.
fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

/// Appends a comment to `src/main.rs`: a change to what the binary is
/// built from.
fn touch_main(src: &Path, text: &str) {
    use std::io::Write as _;
    let mut main = std::fs::OpenOptions::new()
        .append(true)
        .open(src.join("src/main.rs"))
        .unwrap();
    writeln!(main, "// {text}").unwrap();
}

/// The documented install, followed twice from two commits of a git
/// repository that holds this one's sources, with a process running from
/// the first release, then once more from the second commit, twice from a
/// dirty tree, and then the documented rollback. Every release keeps its
/// own folder, no folder is written twice, and the running process's
/// binary is never `(deleted)`. `--version` names each commit, says
/// `dirty`, and is the plain version outside git.
#[test]
fn two_commits_install_side_by_side_and_roll_back() {
    for (tool, package) in [
        ("systemd-sysusers", "systemd"),
        ("systemctl", "systemd"),
        ("git", "git"),
        ("tar", "tar"),
    ] {
        if !have_tool(tool, package) {
            return;
        }
    }
    let Some(cargo) = usable_cargo() else {
        skip("needs the cargo that built the tests, runnable by this user");
        return;
    };
    let work = ScratchDir::new("releases");
    let src = work.join("repo");
    let target = work.join("target");
    let root = work.join("root");
    std::fs::create_dir(&root).unwrap();
    copy_sources(&src);
    git(&src, &["init", "-q"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "first"]);
    let package = env!("CARGO_PKG_VERSION");

    let install = |bin: &Path| {
        let script = moved_under(&documented_install(), &root, bin.to_str().unwrap());
        Command::new("sh")
            .args(["-eu", "-c", &script])
            .current_dir(&src)
            .output()
            .expect("run sh")
    };
    let releases = root.join("opt/drainport/releases");
    let current = root.join("opt/drainport/current");
    let current_release = || {
        std::fs::read_link(&current)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };

    // The first commit, and a process running from its release.
    let bin = build(&cargo, &src, &target);
    let a = format!(
        "{package}+git.{}",
        git(&src, &["rev-parse", "--short=12", "HEAD"])
    );
    assert_eq!(version_of(&bin), format!("drainport {a}"));
    let out = install(&bin);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(current_release(), format!("releases/{a}"));
    let a_bin = releases.join(&a).join("bin/drainport");
    let a_inode = inode(&a_bin);
    let mut cmd = Command::new(current.join("bin/drainport"));
    cmd.args(["-q", "127.0.0.1:0"]);
    let mut running = Server::spawn(cmd);
    assert_eq!(exe_of(running.pid), a_bin.to_str().unwrap());

    // The second commit.
    touch_main(&src, "the second commit");
    git(&src, &["commit", "-q", "-a", "-m", "second"]);
    let bin = build(&cargo, &src, &target);
    let b = format!(
        "{package}+git.{}",
        git(&src, &["rev-parse", "--short=12", "HEAD"])
    );
    assert_ne!(a, b);
    assert_eq!(version_of(&bin), format!("drainport {b}"));
    let out = install(&bin);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(current_release(), format!("releases/{b}"));
    let b_bin = releases.join(&b).join("bin/drainport");
    let b_inode = inode(&b_bin);
    assert_eq!(inode(&a_bin), a_inode, "release {a} was written again");
    assert_eq!(version_of(&a_bin), format!("drainport {a}"));
    assert_eq!(exe_of(running.pid), a_bin.to_str().unwrap());

    // The second commit again: its release is not written twice.
    let out = install(&bin);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Directory not empty"),
        "{out:?}"
    );
    assert_eq!(inode(&b_bin), b_inode, "release {b} was written again");
    assert_eq!(current_release(), format!("releases/{b}"));

    // A dirty tree, installed twice: a new folder each time.
    touch_main(&src, "not committed");
    let bin = build(&cargo, &src, &target);
    let dirty = format!("{b}.dirty");
    assert_eq!(version_of(&bin), format!("drainport {dirty}"));
    let mut dirty_releases = Vec::new();
    for _ in 0..2 {
        let out = install(&bin);
        assert!(out.status.success(), "{out:?}");
        let release = current_release();
        assert!(
            release.starts_with(&format!("releases/{dirty}.")),
            "{release}"
        );
        assert!(!dirty_releases.contains(&release), "{release} twice");
        dirty_releases.push(release);
    }
    for release in &dirty_releases {
        let installed = root
            .join("opt/drainport")
            .join(release)
            .join("bin/drainport");
        assert_eq!(version_of(&installed), format!("drainport {dirty}"));
    }

    // Roll back to the first release, as the guide says.
    let rollback = documented("rollback");
    let mut script = String::new();
    let mut set_previous = false;
    for line in rollback.lines() {
        let line = if line.starts_with("previous=") {
            set_previous = true;
            format!("previous={a}")
        } else {
            line.replace(" /opt/", &format!(" {}/opt/", root.display()))
        };
        for word in line.split_whitespace() {
            assert!(
                !word.starts_with('/') || word.starts_with(root.to_str().unwrap()),
                "a step outside the temporary root: {line:?}"
            );
        }
        script.push_str(&line);
        script.push('\n');
    }
    assert!(
        set_previous,
        "no previous= line in the rollback:\n{rollback}"
    );
    let out = Command::new("sh")
        .args(["-eu", "-c", &script])
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{script}\n{out:?}");
    assert_eq!(current_release(), format!("releases/{a}"));
    assert_eq!(
        version_of(&current.join("bin/drainport")),
        format!("drainport {a}")
    );
    assert_eq!(inode(&a_bin), a_inode);
    let exe = exe_of(running.pid);
    assert_eq!(exe, a_bin.to_str().unwrap());
    assert!(!exe.ends_with(" (deleted)"), "{exe}");
    let mut client = crate::util::Client::connect(running.addr);
    assert_eq!(client.echo("still the first release"), running.pid);
    drop(client);
    running.signal(libc::SIGHUP);
    running.expect_clean_exit();

    // Outside git, the version is the package's.
    let plain = work.join("plain");
    copy_sources(&plain);
    let bin = build(&cargo, &plain, &target);
    assert_eq!(version_of(&bin), format!("drainport {package}"));
}

/// A release, in the systemd section, installs its files exactly as the
/// first install does.
#[test]
fn a_release_installs_as_the_first_install_does() {
    let install = documented_install();
    let release = documented("release");
    let files: Vec<&str> = install
        .lines()
        .take_while(|l| !l.contains("contrib/"))
        .collect();
    assert!(files.len() > 5, "{install}");
    let release_files: Vec<&str> = release.lines().take(files.len()).collect();
    assert_eq!(release_files, files);
}
