//! Helpers: run the binary, locate repository files, write scratch files.

use std::path::{Path, PathBuf};
use std::process::Output;

/// The repository root (where `instances/` lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn instance(rel: &str) -> PathBuf {
    root().join("instances").join(rel)
}

/// Runs `plexserve` with `args` and returns its output.
pub fn plexserve<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    std::process::Command::new(env!("CARGO_BIN_EXE_plexserve"))
        .args(args)
        .output()
        .expect("plexserve runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `text` to `name` inside `dir` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("scratch file");
    p
}

/// A TSV without its last column (a measured wall time, the one column that may differ).
pub fn without_time(tsv: &str) -> String {
    tsv.lines()
        .map(|l| l.rsplit_once('\t').map_or(l, |(head, _)| head))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `plexserve` with `args` (strings and paths alike), asserts that it succeeds, and returns
/// its standard output.
pub fn plexserve_ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let out = plexserve(args.iter().map(|a| a.as_ref()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}
