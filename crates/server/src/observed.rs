//! What a served registry model's engine runs feed, on its instance thread: its version's drift window and its kept
//! predictions (a lock and a copy each per run, not per request; see `watch` and `quality`). The async threads that
//! answer requests do no monitoring work of their own.

use std::sync::Arc;

use ferry_serving::{ObservedRun, RunObserver};

use crate::{DriftWatch, QualityWatch};

/// The monitoring of one loaded version.
pub(crate) struct ModelObserver {
    pub(crate) name: String,
    pub(crate) version: u64,
    pub(crate) drift: Option<Arc<DriftWatch>>,
    pub(crate) quality: Option<Arc<QualityWatch>>,
}

impl RunObserver for ModelObserver {
    fn observe(&self, run: &ObservedRun<'_>) {
        // One clock read for the drift window and the kept predictions.
        let at = crate::quality::now_ms();
        if let Some(drift) = &self.drift {
            drift.observe_run(&self.name, self.version, run, at);
        }
        if let Some(quality) = &self.quality {
            quality.observe_run(&self.name, self.version, run, at);
        }
    }

    fn wants_ids(&self) -> bool {
        self.quality.as_ref().is_some_and(|q| q.wants_model(&self.name))
    }

    fn fresh_id(&self) -> String {
        crate::quality::fresh_request_id()
    }
}
