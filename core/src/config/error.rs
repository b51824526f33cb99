//! Config errors: every problem found, each with where it is and what to do.
//!
//! A start-up or a reload fails with a [`ConfigError`] holding one [`Problem`] per
//! fault, so that an operator fixes a file in one pass instead of one error per run
//! (syntax errors are the exception: ron stops at the first one). Each problem prints
//! as `ORIGIN:LINE:COL: FIELD_PATH: message`, the shape editors and CI annotate.

use std::fmt;

/// Problems kept in one error. A generated file with a systematic mistake can have
/// thousands; the first hundred show the pattern, and the count shows the scale.
pub const PROBLEMS_MAX: usize = 100;

/// One fault in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What the value came from: a file path, or `<command line>` for flags.
    pub origin: String,
    /// 1-based line, when the value is in a file.
    pub line: Option<usize>,
    /// 1-based column in characters, when the value is in a file.
    pub col: Option<usize>,
    /// The field path (`pools[0].backends[1].address`) or flag (`--backend[1]`); empty
    /// when the problem is not about one value (a syntax error before the first field).
    pub path: String,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let (Some(line), Some(col)) = (self.line, self.col) {
            write!(f, ":{line}:{col}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A configuration that cannot be used, with every problem found in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Never empty.
    problems: Vec<Problem>,
}

impl ConfigError {
    /// Problems are shown in source order; those without a position (command-line
    /// flags) come last. Past [`PROBLEMS_MAX`], the rest are counted in a last one.
    pub(crate) fn new(mut problems: Vec<Problem>) -> ConfigError {
        debug_assert!(!problems.is_empty(), "a ConfigError without problems");
        problems.sort_by_key(|p| (p.line.is_none(), p.line, p.col));
        if problems.len() > PROBLEMS_MAX {
            let left_out = problems.len() - (PROBLEMS_MAX - 1);
            problems.truncate(PROBLEMS_MAX - 1);
            let origin = problems.last().map(|p| p.origin.clone()).unwrap_or_default();
            problems.push(Problem {
                origin,
                line: None,
                col: None,
                path: String::new(),
                message: format!("{left_out} more problems not shown"),
            });
        }
        ConfigError { problems }
    }

    /// A problem that is not about one value: unreadable file, oversized input.
    pub(crate) fn whole(origin: &str, message: String) -> ConfigError {
        ConfigError::new(vec![Problem {
            origin: origin.to_string(),
            line: None,
            col: None,
            path: String::new(),
            message,
        }])
    }

    /// Every problem, in source order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(line: Option<usize>, path: &str) -> Problem {
        Problem {
            origin: "lb.ron".to_string(),
            line,
            col: line.map(|_| 7),
            path: path.to_string(),
            message: "bad".to_string(),
        }
    }

    #[test]
    fn prints_one_problem_per_line_in_source_order() {
        let error = ConfigError::new(vec![
            problem(None, "--workers"),
            problem(Some(9), "pools"),
            problem(Some(2), ""),
        ]);
        assert_eq!(
            error.to_string(),
            "lb.ron:2:7: bad\nlb.ron:9:7: pools: bad\nlb.ron: --workers: bad"
        );
        assert_eq!(error.problems().len(), 3);
    }

    #[test]
    fn counts_the_problems_past_the_limit() {
        let error = ConfigError::new((1..=250).map(|line| problem(Some(line), "x")).collect());
        assert_eq!(error.problems().len(), PROBLEMS_MAX);
        assert_eq!(error.problems()[PROBLEMS_MAX - 2].line, Some(PROBLEMS_MAX - 1));
        assert_eq!(
            error.problems()[PROBLEMS_MAX - 1].to_string(),
            "lb.ron: 151 more problems not shown"
        );
    }
}
