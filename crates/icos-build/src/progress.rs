//! Named build stages with their elapsed time: a spinner on a terminal,
//! plain lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::error::Result;

/// How stage progress is shown (always on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A spinner per stage when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain lines: one when a stage starts, one when it ends.
    Lines,
    /// Nothing.
    Quiet,
}

/// Whether a stage did its work or reused a cached result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    /// The stage ran.
    Built,
    /// The stage's output was found in the cache under its key.
    Cached,
}

/// One finished stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageTiming {
    /// The stage name.
    pub name: String,
    /// Wall-clock time.
    pub seconds: f64,
    /// Whether it ran or was cached.
    pub status: StageStatus,
    /// A short note printed after the time (sizes, counts).
    pub note: String,
}

/// Runs stages and reports them.
#[derive(Debug)]
pub struct Stages {
    mode: ProgressMode,
    tty: bool,
    total: usize,
    done: Vec<StageTiming>,
}

impl Stages {
    /// A reporter for `total` stages.
    pub fn new(mode: ProgressMode, total: usize) -> Stages {
        Stages {
            mode,
            tty: std::io::stderr().is_terminal(),
            total,
            done: Vec::new(),
        }
    }

    /// The stages finished so far.
    pub fn timings(&self) -> &[StageTiming] {
        &self.done
    }

    /// Runs one stage: `f` returns its value, whether it was cached, and a
    /// note for the report line.
    pub fn run<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<(T, StageStatus, String)>,
    ) -> Result<T> {
        let index = self.done.len() + 1;
        let label = format!("[{index:>2}/{}] {name}", self.total);
        let spinner = match (self.mode, self.tty) {
            (ProgressMode::Auto, true) => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            (ProgressMode::Quiet, _) => None,
            _ => {
                eprintln!("{label} ...");
                None
            }
        };
        let started = Instant::now();
        let result = f();
        let seconds = started.elapsed().as_secs_f64();
        if let Some(bar) = &spinner {
            bar.finish_and_clear();
        }
        let (value, status, note) = match result {
            Ok(v) => v,
            Err(e) => {
                if self.mode != ProgressMode::Quiet {
                    eprintln!("{label}: FAILED after {seconds:.1} s");
                }
                return Err(e);
            }
        };
        if self.mode != ProgressMode::Quiet {
            eprintln!("{}", finished_line(&label, seconds, status, &note));
        }
        self.done.push(StageTiming {
            name: name.to_owned(),
            seconds,
            status,
            note,
        });
        Ok(value)
    }
}

/// The line printed when a stage ends.
pub fn finished_line(label: &str, seconds: f64, status: StageStatus, note: &str) -> String {
    let mut line = format!("{label}: {seconds:.1} s");
    if status == StageStatus::Cached {
        line.push_str(" (cached)");
    }
    if !note.is_empty() {
        line.push_str(", ");
        line.push_str(note);
    }
    line
}

/// `bytes` in MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let m = bytes as f64 / (1024.0 * 1024.0);
    format!("{m:.1} MiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_lines() {
        assert_eq!(
            finished_line("[ 1/2] fetch", 1.234, StageStatus::Built, ""),
            "[ 1/2] fetch: 1.2 s"
        );
        assert_eq!(
            finished_line("[ 2/2] rootfs", 0.01, StageStatus::Cached, "12 MiB"),
            "[ 2/2] rootfs: 0.0 s (cached), 12 MiB"
        );
        assert_eq!(mib(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
