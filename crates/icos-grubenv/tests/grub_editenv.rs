//! Interoperability with GRUB's own `grub-editenv` (package grub-common):
//! blocks written by either tool are read by the other, and the same edits
//! give the same bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use icos_grubenv::{BLOCK_SIZE, GrubEnv, HEADER};

const GRUB_EDITENV: &str = "grub-editenv";

/// Values that exercise the escaping and the characters that look special.
const TRICKY: &[(&str, &str)] = &[
    ("spaces", "a value with  spaces "),
    ("equals", "k=v=w"),
    ("backslash", "C:\\path\\to\\"),
    ("newline", "line one\nline two\n"),
    ("hashes", "#not a comment#"),
    ("mixed", "a\\\nb\\\\n = # \t end"),
    ("empty", ""),
    ("unicode", "grüße ✓"),
];

/// Runs `grub-editenv FILE args...`, failing the test with a clear message
/// if the tool is missing or fails.
fn editenv(file: &Path, args: &[&str]) -> String {
    let output = Command::new(GRUB_EDITENV)
        .arg(file)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {GRUB_EDITENV} ({e}): these tests need it; install the grub-common \
                 package (Debian/Ubuntu: apt-get install grub-common)"
            )
        });
    assert!(
        output.status.success(),
        "{GRUB_EDITENV} {} {args:?} failed: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap_or_else(|e| panic!("{GRUB_EDITENV} printed non-UTF-8 output: {e}"))
}

/// Like [`editenv`], but returns whether the tool succeeded.
fn editenv_ok(file: &Path, args: &[&str]) -> bool {
    Command::new(GRUB_EDITENV)
        .arg(file)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {GRUB_EDITENV} ({e}): install grub-common"))
        .status
        .success()
}

fn set_args(vars: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec!["set".to_owned()];
    args.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        Dir {
            dir: tempfile::tempdir()
                .unwrap_or_else(|e| panic!("creating a temporary directory: {e}")),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn grub_editenv_is_installed() {
    let found = Command::new(GRUB_EDITENV).arg("--version").output();
    assert!(
        matches!(&found, Ok(out) if out.status.success()),
        "{GRUB_EDITENV} is missing: install the grub-common package (Debian/Ubuntu: \
         apt-get install grub-common); the grubenv interoperability tests need it"
    );
}

#[test]
fn create_gives_identical_bytes() {
    let dir = Dir::new();
    let theirs = dir.path("theirs");
    editenv(&theirs, &["create"]);
    let ours = GrubEnv::new().to_bytes().unwrap();
    assert_eq!(fs::read(&theirs).unwrap(), ours.as_slice());
    assert_eq!(GrubEnv::load(&theirs).unwrap(), GrubEnv::new());
}

#[test]
fn grub_editenv_writes_we_read() {
    let dir = Dir::new();
    let file = dir.path("grubenv");
    editenv(&file, &strs(&set_args(TRICKY)));
    let env = GrubEnv::load(&file).unwrap();
    assert_eq!(env.vars().collect::<Vec<_>>(), TRICKY);
    for (name, value) in TRICKY {
        assert_eq!(env.get(name), Some(*value), "{name}");
    }
}

#[test]
fn we_write_grub_editenv_reads() {
    let dir = Dir::new();
    let file = dir.path("grubenv");
    let mut env = GrubEnv::new();
    for (name, value) in TRICKY {
        env.set(name, value).unwrap();
    }
    env.store(&file).unwrap();
    let listed = editenv(&file, &["list"]);
    let expected: String = TRICKY.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    assert_eq!(listed, expected);
    assert_eq!(listed, env.to_string());
}

#[test]
fn same_sets_give_same_bytes() {
    let dir = Dir::new();
    let file = dir.path("grubenv");
    editenv(&file, &strs(&set_args(TRICKY)));
    let mut ours = GrubEnv::new();
    for (name, value) in TRICKY {
        ours.set(name, value).unwrap();
    }
    assert_eq!(
        fs::read(&file).unwrap(),
        ours.to_bytes().unwrap().as_slice()
    );
}

/// Replays an edit script with both tools, comparing the bytes after each
/// step; each tool also edits the other's output.
#[test]
fn edit_sequences_give_same_bytes_both_ways() {
    enum Step<'a> {
        Set(&'a str, &'a str),
        Unset(&'a str),
    }
    use Step::*;
    let script = [
        Set("boot_alternative", "A"),
        Set("boot_cycle", "stable"),
        Set("note", "short"),
        Set("boot_cycle", "first_boot"),
        Set("note", "much longer value with \\ and \n inside"),
        Set("boot_alternative", "B"),
        Unset("boot_alternative"),
        Set("note", "s"),
        Unset("missing"),
        Set("boot_alternative", "A"),
        Unset("note"),
        Set("later", "x=y"),
    ];
    let dir = Dir::new();
    let theirs = dir.path("theirs");
    let crossed = dir.path("crossed");
    editenv(&theirs, &["create"]);
    let mut ours = GrubEnv::new();
    for (i, step) in script.iter().enumerate() {
        // grub-editenv edits a copy of our current block.
        ours.store(&crossed).unwrap();
        match step {
            Set(k, v) => {
                let arg = format!("{k}={v}");
                editenv(&theirs, &["set", &arg]);
                editenv(&crossed, &["set", &arg]);
                ours.set(k, v).unwrap();
            }
            Unset(k) => {
                editenv(&theirs, &["unset", k]);
                editenv(&crossed, &["unset", k]);
                ours.unset(k);
            }
        }
        let ours_bytes = ours.to_bytes().unwrap();
        assert_eq!(
            fs::read(&theirs).unwrap(),
            ours_bytes.as_slice(),
            "step {i}"
        );
        assert_eq!(
            fs::read(&crossed).unwrap(),
            ours_bytes.as_slice(),
            "step {i}"
        );
        // And we read back what grub-editenv wrote.
        assert_eq!(GrubEnv::load(&theirs).unwrap(), ours, "step {i}");
    }
}

/// A block written without the warning comment (as IC's scripts write it)
/// and one with a comment in the middle are edited in place by both tools
/// identically.
#[test]
fn foreign_layouts_are_edited_identically() {
    let dir = Dir::new();
    for body in [
        "boot_alternative=A\nboot_cycle=stable\n",
        "# my comment\nboot_cycle=install\n# another \\\n one\nx=1\n",
        "",
    ] {
        let file = dir.path("grubenv");
        let mut bytes = format!("{HEADER}{body}").into_bytes();
        bytes.resize(BLOCK_SIZE, b'#');
        fs::write(&file, &bytes).unwrap();

        let mut ours = GrubEnv::load(&file).unwrap();
        assert_eq!(ours.to_bytes().unwrap().as_slice(), bytes.as_slice());
        editenv(&file, &["set", "boot_cycle=first_boot", "new=v a\\l"]);
        editenv(&file, &["unset", "x"]);
        ours.set("boot_cycle", "first_boot").unwrap();
        ours.set("new", "v a\\l").unwrap();
        ours.unset("x");
        assert_eq!(
            fs::read(&file).unwrap(),
            ours.to_bytes().unwrap().as_slice(),
            "{body:?}"
        );
        assert_eq!(editenv(&file, &["list"]), ours.to_string());
    }
}

/// Both tools agree on exactly how much fits, escaping included.
#[test]
fn both_tools_agree_on_the_size_limit() {
    let dir = Dir::new();
    let file = dir.path("grubenv");
    let base = GrubEnv::new();
    let room = BLOCK_SIZE - base.encoded_len() - "v=\n".len();
    for (value, fits) in [
        ("x".repeat(room), true),
        ("x".repeat(room + 1), false),
        (format!("{}\\", "x".repeat(room - 2)), true),
        (format!("{}\\", "x".repeat(room - 1)), false),
        (format!("{}\n", "x".repeat(room - 2)), true),
        (format!("{}\n", "x".repeat(room - 1)), false),
    ] {
        editenv(&file, &["create"]);
        let arg = format!("v={value}");
        assert_eq!(editenv_ok(&file, &["set", &arg]), fits, "{value:?}");
        let mut ours = base.clone();
        ours.set("v", &value).unwrap();
        assert_eq!(ours.to_bytes().is_ok(), fits, "{value:?}");
        if fits {
            assert_eq!(
                fs::read(&file).unwrap(),
                ours.to_bytes().unwrap().as_slice()
            );
            assert_eq!(GrubEnv::load(&file).unwrap().get("v"), Some(value.as_str()));
        }
    }
}

/// Both tools treat a missing file as a new block.
#[test]
fn set_on_missing_file_creates_it_like_grub_editenv() {
    let dir = Dir::new();
    let theirs = dir.path("theirs");
    let ours_path = dir.path("ours");
    editenv(&theirs, &["set", "a=1"]);
    let mut ours = GrubEnv::load_or_new(&ours_path).unwrap();
    ours.set("a", "1").unwrap();
    ours.store(&ours_path).unwrap();
    assert_eq!(fs::read(&theirs).unwrap(), fs::read(&ours_path).unwrap());
}
