//! Turns placer progress into a progress bar on stderr, shown only for searches longer than a second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plexserve_solver::Observer;

pub struct Bar {
    start: Instant,
    label: String,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    pub fn new(label: &str) -> Bar {
        Bar {
            start: Instant::now(),
            label: label.to_string(),
            bar: Mutex::new(None),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = self.bar.lock().expect("progress lock").take() {
            b.finish_and_clear();
        }
    }
}

impl Observer for Bar {
    fn progress(&self, done: u64, total: u64) {
        if self.start.elapsed() < Duration::from_secs(1) {
            return;
        }
        let mut slot = self.bar.lock().expect("progress lock");
        let bar = slot.get_or_insert_with(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            b.set_message(self.label.clone());
            b
        });
        bar.set_length(total);
        bar.set_position(done);
    }
}
