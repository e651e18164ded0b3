//! What `kwg join` and `kwg leave` say while they work, on stderr, as it happens: on a terminal
//! a spinner naming the step under way and a line per thing done (as cargo and `kubectl
//! rollout status` do); otherwise a timestamped line per thing done; with `-o json` one JSON
//! object per event. Stdout keeps only the result (a sentence, or one JSON object).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::args::Format;
use crate::driver::Progress;
use crate::exit::Cancel;
use crate::output::sanitize;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A spinner on the last line, redrawn in place (plain ANSI: `\r` and erase-line).
    Terminal,
    /// `2026-01-01T00:00:00.000Z <sentence>` lines.
    Plain,
    /// One JSON event per line.
    Json,
}

impl Style {
    /// JSON with `-o json`; the spinner only when stderr is a terminal that can draw it.
    pub fn choose(format: Format, stderr_terminal: bool, term: Option<&str>) -> Style {
        match format {
            Format::Json => Style::Json,
            _ if stderr_terminal && term != Some("dumb") => Style::Terminal,
            _ => Style::Plain,
        }
    }
}

/// Spinner frames (the braille dots cargo-like tools use).
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// How often the spinner turns.
const TICK: Duration = Duration::from_millis(100);
/// Moves to the line's start and erases it.
const ERASE: &str = "\r\x1b[2K";

/// A step under way is shown with its duration once it took this long.
const SHOW_ELAPSED_AFTER: Duration = Duration::from_secs(1);

/// One event of the JSON stream.
pub fn json_event(time: DateTime<Utc>, event: &str, fields: serde_json::Value) -> String {
    let mut object = serde_json::json!({
        "time": time.to_rfc3339_opts(SecondsFormat::Millis, true),
        "event": event,
    });
    if let (Some(o), serde_json::Value::Object(f)) = (object.as_object_mut(), fields) {
        o.extend(f);
    }
    object.to_string()
}

/// A line of the plain style.
pub fn plain_line(time: DateTime<Utc>, text: &str) -> String {
    format!(
        "{} {}",
        time.to_rfc3339_opts(SecondsFormat::Millis, true),
        sanitize(text)
    )
}

/// The spinner line for `message`, under way for `elapsed`, at frame `tick`.
pub fn spinner_line(message: &str, elapsed: Duration, tick: usize) -> String {
    let frame = FRAMES[tick % FRAMES.len()];
    if elapsed >= SHOW_ELAPSED_AFTER {
        format!("{frame} {} ({}s)", sanitize(message), elapsed.as_secs())
    } else {
        format!("{frame} {}", sanitize(message))
    }
}

/// In the plain style, a step still under way is said again after this long, then every
/// [`STILL_EVERY`], so a CI log shows where a slow join waits.
const STILL_FIRST: Duration = Duration::from_secs(5);
const STILL_EVERY: Duration = Duration::from_secs(10);

/// Whether a step under way for `elapsed`, last said again at `said` (`None`: not yet), is
/// due to be said again.
pub fn still_due(elapsed: Duration, said: Option<Duration>) -> bool {
    match said {
        None => elapsed >= STILL_FIRST,
        Some(at) => elapsed >= at + STILL_EVERY,
    }
}

struct Spinner {
    message: Option<String>,
    since: Instant,
    tick: usize,
    /// The spinner line is on the screen.
    drawn: bool,
    /// Plain style: when the step under way was last said again.
    said: Option<Duration>,
}

impl Spinner {
    fn draw(&mut self, err: &mut impl Write) {
        if let Some(m) = &self.message {
            let line = spinner_line(m, self.since.elapsed(), self.tick);
            let _ = write!(err, "{ERASE}{line}");
            let _ = err.flush();
            self.drawn = true;
        }
    }

    fn erase(&mut self, err: &mut impl Write) {
        if std::mem::take(&mut self.drawn) {
            let _ = write!(err, "{ERASE}");
        }
    }
}

/// Shows [`Progress`] on stderr in its [`Style`]. Every write ignores errors: a closed
/// terminal (SIGHUP) or pipe must not stop the cleanup that follows.
pub struct Reporter {
    style: Style,
    spinner: Arc<Mutex<Spinner>>,
    stop: Arc<AtomicBool>,
}

impl Reporter {
    /// For `format`, on this process's stderr.
    pub fn new(format: Format) -> Reporter {
        let term = std::env::var("TERM").ok();
        Reporter::with_style(Style::choose(
            format,
            std::io::stderr().is_terminal(),
            term.as_deref(),
        ))
    }

    pub fn with_style(style: Style) -> Reporter {
        let spinner = Arc::new(Mutex::new(Spinner {
            message: None,
            since: Instant::now(),
            tick: 0,
            drawn: false,
            said: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        if style != Style::Json {
            let (spinner, stop) = (spinner.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    let mut s = spinner.lock().unwrap_or_else(|e| e.into_inner());
                    if style == Style::Terminal && s.drawn {
                        s.tick += 1;
                        s.draw(&mut std::io::stderr().lock());
                    }
                    let elapsed = s.since.elapsed();
                    if style == Style::Plain
                        && let Some(m) = s.message.as_ref().filter(|_| still_due(elapsed, s.said))
                    {
                        let line = format!("{m} ({}s so far)", elapsed.as_secs());
                        let _ = writeln!(
                            std::io::stderr().lock(),
                            "{}",
                            plain_line(Utc::now(), &line)
                        );
                        s.said = Some(elapsed);
                    }
                }
            });
        }
        Reporter {
            style,
            spinner,
            stop,
        }
    }

    pub fn style(&self) -> Style {
        self.style
    }

    /// Writes `line` (with its newline) above the spinner, then redraws the spinner.
    fn above(&self, line: &str) {
        let mut s = self.spinner.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        s.erase(&mut err);
        let _ = writeln!(err, "{line}");
        if self.style == Style::Terminal {
            s.draw(&mut err);
        }
    }

    /// A step begins.
    pub fn doing(&self, step: &str, message: &str) {
        match self.style {
            Style::Terminal => {
                let mut s = self.spinner.lock().unwrap_or_else(|e| e.into_inner());
                s.message = Some(message.to_string());
                s.since = Instant::now();
                s.draw(&mut std::io::stderr().lock());
            }
            // The plain log has the sentences of what was done, and a step only when it is slow.
            Style::Plain => {
                let mut s = self.spinner.lock().unwrap_or_else(|e| e.into_inner());
                s.message = Some(message.to_string());
                s.since = Instant::now();
                s.said = None;
            }
            Style::Json => self.above(&json_event(
                Utc::now(),
                "doing",
                serde_json::json!({ "step": step, "message": message }),
            )),
        }
    }

    /// Something was done (or is worth saying): a sentence.
    pub fn step(&self, sentence: &str) {
        match self.style {
            Style::Terminal => self.above(&format!("• {}", sanitize(sentence))),
            Style::Plain => self.above(&plain_line(Utc::now(), sentence)),
            Style::Json => self.above(&json_event(
                Utc::now(),
                "step",
                serde_json::json!({ "message": sentence }),
            )),
        }
    }

    /// The first signal: the join is being cancelled.
    pub fn cancelling(&self, by: Cancel) {
        let sentence = format!("{by}: cancelling the join, undoing the steps taken");
        match self.style {
            Style::Json => self.above(&json_event(
                Utc::now(),
                "cancelling",
                serde_json::json!({ "signal": by.name(), "message": sentence }),
            )),
            _ => {
                self.step(&sentence);
                self.doing("TearingDown", "Undoing the steps taken");
            }
        }
    }

    /// A further signal while undoing.
    pub fn still_cleaning(&self) {
        self.step("Still undoing the steps taken; kwg exits when they are undone");
    }

    /// Everything was undone, but for `left_behind` (which the caller's result names).
    pub fn left(&self, removed: &[String], left_behind: Option<&crate::state::LeftBehind>) {
        match self.style {
            Style::Json => self.above(&json_event(
                Utc::now(),
                "left",
                serde_json::json!({ "removed": removed, "leftBehind": left_behind }),
            )),
            _ if removed.is_empty() => {}
            _ => self.step(&format!("Removed {}", removed.join(", "))),
        }
    }

    /// Shows one of the daemon's progress messages (not `Ready` or `Failed`, which the caller
    /// turns into its result).
    pub fn show(&self, p: &Progress) {
        match p {
            Progress::Doing { step, message } => self.doing(step, message),
            Progress::Step(s) => self.step(s),
            Progress::Left {
                removed,
                left_behind,
            } => self.left(removed, left_behind.as_ref()),
            Progress::Cancelling(name) => {
                if let Some(by) = Cancel::from_name(name) {
                    self.cancelling(by);
                }
            }
            Progress::Ready(_) | Progress::Failed(_) => {}
        }
    }

    /// Takes the spinner off the screen (before the result is printed).
    pub fn clear(&self) {
        let mut s = self.spinner.lock().unwrap_or_else(|e| e.into_inner());
        s.message = None;
        s.erase(&mut std::io::stderr().lock());
        let _ = std::io::stderr().flush();
    }
}

impl Drop for Reporter {
    /// Stops the ticker without waiting for it (it sleeps up to a tick, which `kwg join`'s
    /// exit must not): once cleared there is nothing left for it to draw.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-01-01T00:01:02.345Z".parse().unwrap()
    }

    #[test]
    fn the_style_follows_the_output_and_the_terminal() {
        assert_eq!(Style::choose(Format::Json, true, None), Style::Json);
        assert_eq!(
            Style::choose(Format::Text, true, Some("xterm")),
            Style::Terminal
        );
        assert_eq!(
            Style::choose(Format::Text, false, Some("xterm")),
            Style::Plain
        );
        assert_eq!(
            Style::choose(Format::Text, true, Some("dumb")),
            Style::Plain
        );
    }

    #[test]
    fn plain_lines_carry_the_time_and_no_escape() {
        assert_eq!(
            plain_line(at(), "Registered peer x\u{1b}[31m"),
            "2026-01-01T00:01:02.345Z Registered peer x[31m"
        );
    }

    #[test]
    fn json_events_are_one_object_per_line() {
        let e = json_event(
            at(),
            "doing",
            serde_json::json!({ "step": "Registering", "message": "a\nb" }),
        );
        assert!(!e.contains('\n'), "{e}");
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["time"], "2026-01-01T00:01:02.345Z");
        assert_eq!(v["event"], "doing");
        assert_eq!(v["step"], "Registering");
        assert_eq!(v["message"], "a\nb");
    }

    #[test]
    fn a_slow_step_is_said_again_after_5s_then_every_10s() {
        let s = Duration::from_secs;
        assert!(!still_due(s(4), None));
        assert!(still_due(s(5), None));
        assert!(!still_due(s(14), Some(s(5))));
        assert!(still_due(s(15), Some(s(5))));
    }

    #[test]
    fn the_spinner_names_the_step_and_its_time_once_it_is_slow() {
        assert_eq!(
            spinner_line("Registering", Duration::from_millis(300), 0),
            "⠋ Registering"
        );
        assert_eq!(
            spinner_line("Waiting", Duration::from_millis(2500), 11),
            "⠙ Waiting (2s)"
        );
    }
}
