//! The checks' verdicts, decided without I/O from what the caller gathered.

use std::fmt::Write as _;
use std::time::Duration;

use crate::exit::ExitCode;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// Works, but something deserves attention (no non-zero exit).
    Warn,
    Fail,
    /// Not tested, and why is in the detail (e.g. not joined).
    Skip,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "ok",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        }
    }
}

/// One line of `kwg doctor`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub check: String,
    pub outcome: Outcome,
    pub detail: String,
    /// What to do about a failure or warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The exit code this failure maps to.
    #[serde(skip)]
    pub code: Option<ExitCode>,
}

impl Check {
    pub fn pass(check: &str, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            outcome: Outcome::Pass,
            detail: detail.into(),
            fix: None,
            code: None,
        }
    }
    pub fn skip(check: &str, detail: impl Into<String>) -> Check {
        Check {
            outcome: Outcome::Skip,
            ..Check::pass(check, detail)
        }
    }
    pub fn warn(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            outcome: Outcome::Warn,
            fix: Some(fix.into()),
            ..Check::pass(check, detail)
        }
    }
    pub fn fail(
        check: &str,
        code: ExitCode,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            outcome: Outcome::Fail,
            fix: Some(fix.into()),
            code: Some(code),
            ..Check::pass(check, detail)
        }
    }
}

/// The exit code of a run: the first failure's, 0 when nothing failed.
pub fn exit_code(checks: &[Check]) -> i32 {
    checks
        .iter()
        .find(|c| c.outcome == Outcome::Fail)
        .map_or(0, |c| c.code.unwrap_or(ExitCode::Failure).code())
}

/// One line per check: `ok   api        https://… answers`, a failure with `fix: …`.
pub fn text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
    let mut o = String::new();
    for c in checks {
        let _ = write!(
            o,
            "{:<4}  {:<width$}  {}",
            c.outcome.label(),
            c.check,
            crate::output::sanitize(&c.detail)
        );
        if let Some(fix) = &c.fix {
            let _ = write!(o, " — fix: {}", crate::output::sanitize(fix));
        }
        o.push('\n');
    }
    let failed = checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    let _ = match failed {
        0 => writeln!(o, "All checks passed."),
        n => writeln!(o, "{n} check(s) failed."),
    };
    o
}

/// The `-o json` document.
pub fn json(checks: &[Check]) -> serde_json::Value {
    serde_json::json!({
        "ok": exit_code(checks) == 0,
        "exitCode": exit_code(checks),
        "checks": checks,
    })
}

/// Clock skew against the API server's `Date` header: the lease's expiry is written with this
/// machine's clock and judged by the gateway's.
pub fn clock(local_minus_server: Option<chrono::Duration>, ttl: Duration) -> Check {
    const NAME: &str = "clock";
    let Some(skew) = local_minus_server else {
        return Check::skip(NAME, "the API server sent no Date header");
    };
    let secs = skew.num_seconds();
    let abs = secs.unsigned_abs();
    let dir = if secs >= 0 { "ahead of" } else { "behind" };
    let fix = "synchronize the clock (e.g. timedatectl set-ntp true)";
    // The Date header has a resolution of one second, and the request takes time.
    if abs <= 2 {
        Check::pass(NAME, "within 2 s of the API server")
    } else if abs >= ttl.as_secs() / 3 {
        Check::fail(
            NAME,
            ExitCode::Failure,
            format!(
                "{abs} s {dir} the API server: the gateway may expire this machine's lease early"
            ),
            fix,
        )
    } else {
        Check::warn(NAME, format!("{abs} s {dir} the API server"), fix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_sets_the_exit_code_and_warnings_do_not() {
        let mut checks = vec![
            Check::pass("api", "answers"),
            Check::warn("clock", "5 s ahead", "sync"),
            Check::skip("udp", "not joined"),
        ];
        assert_eq!(exit_code(&checks), 0);
        assert!(text(&checks).ends_with("All checks passed.\n"));
        checks.push(Check::fail(
            "rbac",
            ExitCode::Credentials,
            "may not create secrets",
            "bind kwg-user",
        ));
        checks.push(Check::fail(
            "gateway",
            ExitCode::GatewayMissing,
            "0/0 ready",
            "scale",
        ));
        assert_eq!(exit_code(&checks), 4);
        let t = text(&checks);
        assert!(
            t.contains("FAIL  rbac     may not create secrets — fix: bind kwg-user\n"),
            "{t}"
        );
        assert!(t.contains("2 check(s) failed."), "{t}");
        let j = json(&checks);
        assert_eq!(j["ok"], false);
        assert_eq!(j["exitCode"], 4);
        assert_eq!(j["checks"][3]["outcome"], "fail");
        assert_eq!(j["checks"][3]["fix"], "bind kwg-user");
        assert!(j["checks"][0].get("fix").is_none());
    }

    #[test]
    fn cluster_text_in_a_line_is_sanitized() {
        let c = Check::fail("gateway", ExitCode::Failure, "bad\x1b[31m\nline", "x");
        assert!(!text(&[c]).contains('\x1b'));
    }

    #[test]
    fn clock_skew_warns_then_fails_at_a_third_of_the_lease() {
        let ttl = Duration::from_secs(900);
        let s = |secs| clock(Some(chrono::Duration::seconds(secs)), ttl);
        assert_eq!(s(1).outcome, Outcome::Pass);
        assert_eq!(s(-2).outcome, Outcome::Pass);
        let w = s(-40);
        assert_eq!(w.outcome, Outcome::Warn);
        assert_eq!(w.detail, "40 s behind the API server");
        let f = s(400);
        assert_eq!(f.outcome, Outcome::Fail);
        assert!(f.detail.contains("400 s ahead of"), "{}", f.detail);
        assert!(f.fix.unwrap().contains("timedatectl"));
        assert_eq!(clock(None, ttl).outcome, Outcome::Skip);
    }
}
