//! What a check found: facts worth printing, warnings, and errors.

use std::fmt;

use serde::Serialize;

/// The installer's checks, in the order SetupOS runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckName {
    /// The age of the SetupOS image.
    Age,
    /// CPU, memory and drives.
    Hardware,
    /// Addresses, routes, gateways and the NNS.
    Network,
    /// Clock synchronisation.
    Time,
}

impl CheckName {
    /// The name as printed (`hardware`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::Age => "age",
            CheckName::Hardware => "hardware",
            CheckName::Network => "network",
            CheckName::Time => "time",
        }
    }
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one check: everything it found, not only the first problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Which check.
    pub check: CheckName,
    /// What was seen, for the log (`CPU: 2 x AMD EPYC 7313 16-Core Processor`).
    pub facts: Vec<String>,
    /// Problems that do not stop the installation.
    pub warnings: Vec<String>,
    /// Problems that stop the installation.
    pub errors: Vec<String>,
    /// True when the check was switched off (the installer does not run it).
    pub skipped: bool,
}

impl CheckResult {
    /// An empty result for `check`.
    pub fn new(check: CheckName) -> Self {
        CheckResult {
            check,
            facts: Vec::new(),
            warnings: Vec::new(),
            errors: Vec::new(),
            skipped: false,
        }
    }

    /// A check that was switched off, with the reason as its only fact.
    pub fn skipped(check: CheckName, why: impl Into<String>) -> Self {
        CheckResult {
            skipped: true,
            facts: vec![why.into()],
            ..CheckResult::new(check)
        }
    }

    /// True when the check found no error.
    pub fn passed(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn fact(&mut self, text: impl Into<String>) {
        self.facts.push(text.into());
    }

    pub(crate) fn warn(&mut self, text: impl Into<String>) {
        self.warnings.push(text.into());
    }

    pub(crate) fn error(&mut self, text: impl Into<String>) {
        self.errors.push(text.into());
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.skipped {
            "skipped"
        } else if !self.passed() {
            "FAILED"
        } else if !self.warnings.is_empty() {
            "passed with warnings"
        } else {
            "passed"
        };
        write!(f, "{} check: {verdict}", self.check)?;
        for fact in &self.facts {
            write!(f, "\n  {fact}")?;
        }
        for warning in &self.warnings {
            write!(f, "\n  warning: {warning}")?;
        }
        for error in &self.errors {
            write!(f, "\n  error: {error}")?;
        }
        Ok(())
    }
}

/// The results of several checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// One result per check, in run order.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// True when no check found an error.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(CheckResult::passed)
    }

    /// Every error, as `CHECK: MESSAGE`, in run order.
    pub fn errors(&self) -> Vec<String> {
        self.checks
            .iter()
            .flat_map(|c| c.errors.iter().map(move |e| format!("{}: {e}", c.check)))
            .collect()
    }

    /// The result of `check`, if it is in the report.
    pub fn get(&self, check: CheckName) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.check == check)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, check) in self.checks.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{check}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_facts_warnings_and_errors() {
        let mut r = CheckResult::new(CheckName::Hardware);
        r.fact("CPU: x");
        r.warn("w");
        r.error("e");
        assert_eq!(
            r.to_string(),
            "hardware check: FAILED\n  CPU: x\n  warning: w\n  error: e"
        );
        let report = Report {
            checks: vec![r, CheckResult::skipped(CheckName::Time, "off")],
        };
        assert!(!report.passed());
        assert_eq!(report.errors(), ["hardware: e"]);
        assert!(report.get(CheckName::Time).is_some_and(|t| t.skipped));
    }
}
