//! Progress on stderr, drawn with indicatif: a bar with its rate and the time left for counted
//! work (sweep points, fidelity configurations, training epochs), a spinner with the elapsed
//! time for phases (calibration).
//!
//! Nothing is drawn unless stderr is a terminal, so pipes, logs and tests see a clean stderr.
//! Counted bars and the spinner cut their message to the terminal's width; a bar whose message
//! carries the figures (a run's loss and accuracy) keeps it whole and wraps instead.
//!
//! Visible bars share one `MultiProgress`: a bar started while another is showing (a run's
//! epochs under fidelity's configurations, the calibration pipeline's epochs under its spinner)
//! draws on the line below it. A bar clears its line when it is dropped, on errors too.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{HumanDuration, MultiProgress, ProgressBar, ProgressState, ProgressStyle};

/// How often a visible bar redraws on its own, so the elapsed time and the time left move
/// between steps; seldom enough not to disturb what is being measured.
const TICK: Duration = Duration::from_secs(1);

/// The lines every visible bar draws on.
fn lines() -> &'static MultiProgress {
    static LINES: OnceLock<MultiProgress> = OnceLock::new();
    LINES.get_or_init(MultiProgress::new)
}

/// The rate: `3.2/s`, or `2m each` below one step a second; `-/s` before the first step.
fn rate(state: &ProgressState, out: &mut dyn std::fmt::Write) {
    let per_sec = state.per_sec();
    let _ = if state.pos() == 0 || !per_sec.is_finite() || per_sec <= 0.0 {
        write!(out, "-/s")
    } else if per_sec >= 1.0 {
        write!(out, "{per_sec:.1}/s")
    } else {
        let each = HumanDuration(Duration::from_secs_f64(1.0 / per_sec));
        write!(out, "{each:#} each")
    };
}

/// The time left: `eta 4m`; `eta ?` before the first step.
fn left(state: &ProgressState, out: &mut dyn std::fmt::Write) {
    let _ = if state.pos() == 0 {
        write!(out, "eta ?")
    } else {
        write!(out, "eta {:#}", HumanDuration(state.eta()))
    };
}

/// A progress display on stderr, or nothing when stderr is not a terminal.
pub(super) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(length: Option<u64>, template: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
            };
        }
        let style = ProgressStyle::with_template(template)
            .expect("the templates below are valid")
            .progress_chars("=> ")
            .with_key("rate", rate)
            .with_key("left", left);
        let bar = match length {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        let bar = lines().add(bar.with_style(style));
        bar.enable_steady_tick(TICK);
        Progress { bar }
    }

    /// `sweep [=====>    ] 12/40 points, 3.2/s, eta 4s MESSAGE`.
    pub(super) fn counted(what: &str, total: u64, unit: &str) -> Self {
        Self::new(
            Some(total),
            &format!("{what} [{{bar:20}}] {{pos}}/{{len}} {unit}, {{rate}}, {{left}} {{wide_msg}}"),
        )
    }

    /// `MESSAGE [=====>    ] 2.1/s, eta 30s`: the message carries the count.
    pub(super) fn with_message(total: u64) -> Self {
        Self::new(Some(total), "{msg} [{bar:20}] {rate}, {left}")
    }

    /// `⠙ 72s MESSAGE`: a spinner with the elapsed time, for work that is not counted.
    pub(super) fn spinner() -> Self {
        Self::new(None, "{spinner} {elapsed:>3} {wide_msg}")
    }

    /// Whether anything is drawn (stderr is a terminal).
    pub(super) fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Replaces the message.
    pub(super) fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        self.bar.set_message(message);
    }

    /// Sets the steps done, and the total.
    pub(super) fn set(&self, done: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    /// One more step done.
    pub(super) fn step(&self) {
        self.bar.inc(1);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        if self.is_visible() {
            lines().remove(&self.bar);
        }
    }
}
