//! Bring-up stopped at every step, by a failure, a signal or the deadline: each ends with
//! exactly the undo of the steps taken, in reverse.

use std::time::Duration;

use super::*;

/// The undo steps expected when bring-up stops at `step` (newest first).
fn expected_undo(step: &str) -> Vec<String> {
    let all = [
        ("Register", "DeletePeer"),
        ("CreateDevice", "DeleteInterface(not created)"),
        ("ConfigureNetwork", "DeleteInterface(created)"),
        ("InstallFirewall", "RemoveFirewall"),
        ("StartForwarder", "StopForwarder"),
        ("WriteResolvConf", "RestoreResolvConf"),
    ];
    let pos = HAPPY.iter().position(|s| *s == step).unwrap();
    let mut out: Vec<String> = Vec::new();
    for (s, u) in all {
        let p = HAPPY.iter().position(|x| *x == s).unwrap();
        if p <= pos {
            if u == "DeleteInterface(created)" {
                out.retain(|x| x != "undo DeleteInterface(not created)");
            }
            out.push(format!("undo {u}"));
        }
    }
    out.reverse();
    out
}

const STEPS: &[&str] = &[
    "Inspect",
    "Register",
    "WaitTunnelIp",
    "CreateDevice",
    "ConfigureNetwork",
    "InstallFirewall",
    "StartForwarder",
    "WriteResolvConf",
    "AwaitHandshake",
    "ProbeDns",
];

#[test]
fn a_failure_at_every_step_undoes_exactly_the_steps_taken() {
    for step in STEPS {
        let mut r = Run::new(defaults);
        r.pump(|a| {
            (name(a) == *step).then(|| Some(Event::Failed(failed(StepKind::Other, "injected"))))
        });
        let log = r.take_log();
        let expected = match *step {
            "Inspect" => vec![],
            s => expected_undo(s),
        };
        assert_eq!(undo_tail(&log), expected, "failure at {step}: {log:?}");
        assert!(
            !log.contains(&"Cancel".to_string()),
            "{step}: nothing in flight after a failure"
        );
        let last = &log[log.len() - 2..];
        let end: Vec<&str> = if *step == "Inspect" {
            vec!["Inspect", "Exit"]
        } else {
            vec!["RemoveState", "Exit"]
        };
        assert_eq!(last, end.as_slice(), "{step}: {log:?}");
        assert_eq!(r.s.phase(), Phase::Done);
        let err = r.s.outcome().unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
    }
}

#[test]
fn a_signal_at_every_step_cancels_it_and_undoes_the_steps_taken() {
    for step in STEPS {
        let mut r = Run::new(defaults);
        // The step never answers: it is in flight (or, for a quick step, done just before).
        r.pump(|a| (name(a) == *step).then_some(None));
        r.take_log();
        r.s.handle(Event::Signal, r.now);
        r.pump(|_| None);
        let log = r.take_log();
        let long = [
            "Inspect",
            "Register",
            "WaitTunnelIp",
            "AwaitHandshake",
            "ProbeDns",
        ]
        .contains(step);
        assert_eq!(
            log.first().map(String::as_str) == Some("Cancel"),
            long,
            "{step}: {log:?}"
        );
        let expected = match *step {
            "Inspect" => vec![],
            s => expected_undo(s),
        };
        assert_eq!(undo_tail(&log), expected, "signal at {step}: {log:?}");
        assert_eq!(log.last().map(String::as_str), Some("Exit"));
        // Stopped by a signal before serving: a clean undo is still a clean exit.
        assert!(r.s.outcome().is_ok());
    }
}

#[test]
fn the_deadline_fails_the_step_it_stops_with_its_own_sentence() {
    let cases = [
        ("WaitTunnelIp", "did not assign a tunnel IP"),
        ("AwaitHandshake", "did not answer on UDP 192.0.2.1:31820"),
        (
            "ProbeDns",
            "cluster DNS did not answer kubernetes.default.svc.cluster.local.",
        ),
        ("Register", "did not get past Registering"),
    ];
    for (step, sentence) in cases {
        let mut r = Run::new(defaults);
        r.pump(|a| (name(a) == step).then_some(None));
        r.take_log();
        // Before the deadline nothing happens (a rebind at most).
        r.advance(Duration::from_secs(29));
        r.pump(|_| None);
        assert!(undo_tail(&r.take_log()).is_empty(), "{step}");
        r.advance(Duration::from_secs(1));
        r.pump(|_| None);
        assert_eq!(undo_tail(&r.take_log()), expected_undo(step), "{step}");
        let err = r.s.outcome().unwrap_err().to_string();
        assert!(err.contains(sentence), "{step}: {err}");
    }
}
