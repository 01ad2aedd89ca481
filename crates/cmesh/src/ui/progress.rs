//! Drawing `apply`'s progress: spinners per cluster on a terminal, one line per finished step
//! otherwise. The text comes from `ui::apply`.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use cmesh_core::apply::Step;

/// Where the live layer reports progress while it works; [`Reporter`] draws it.
pub trait Progress: Send + Sync {
    /// `cluster` is now doing `what`.
    fn working(&self, cluster: &str, what: &str);
    /// A step finished.
    fn finished(&self, step: &Step);
}

/// The progress display.
pub struct Reporter {
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
}

impl Reporter {
    /// Spinners when stderr is a terminal, plain lines otherwise.
    pub fn new(clusters: &[String], terminal: bool) -> Self {
        if !terminal {
            return Self { bars: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let mut bars = HashMap::new();
        for c in clusters {
            let b = multi.add(ProgressBar::new_spinner());
            b.set_style(style.clone());
            b.set_prefix(c.clone());
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            bars.insert(c.clone(), b);
        }
        Self {
            bars: Some((multi, Mutex::new(bars))),
        }
    }

    /// Stops the spinners.
    pub fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for b in bars.lock().unwrap_or_else(|p| p.into_inner()).values() {
                b.finish_and_clear();
            }
        }
    }
}

impl Progress for Reporter {
    fn working(&self, cluster: &str, what: &str) {
        if let Some((_, bars)) = &self.bars
            && let Some(b) = bars.lock().unwrap_or_else(|p| p.into_inner()).get(cluster)
        {
            b.set_message(what.to_owned());
        }
    }

    fn finished(&self, step: &Step) {
        let line = super::apply::step_line(step);
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}
