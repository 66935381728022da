//! The embedded `Ingest`: validated events go to the event log (deduplicated there by
//! message id), quarantined items to the quarantine log; both are durable before `Ok`.

use std::sync::Arc;
use std::time::Duration;

use ferry_api::{BoxFuture, Ingest, IngestBatch, IngestError, IngestReceipt};
use ferry_log::{AppendError, Appended, Log, Record};

/// How long clients are told to wait when the log cannot write at all.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);

pub(crate) struct EmbeddedIngest {
    pub(crate) events: Log,
    pub(crate) quarantine: Log,
}

impl EmbeddedIngest {
    pub(crate) fn new(events: Log, quarantine: Log) -> Arc<EmbeddedIngest> {
        Arc::new(EmbeddedIngest { events, quarantine })
    }

    async fn ingest_inner(&self, batch: IngestBatch) -> Result<IngestReceipt, IngestError> {
        let sizes: Vec<usize> = batch.events.iter().map(|e| e.payload.len()).collect();
        let (events, quarantine) = (batch.events, batch.quarantine);
        // Both appends run at once; each shares its fsync with concurrent requests.
        let (events, quarantine) = tokio::join!(append(&self.events, events), append(&self.quarantine, quarantine));
        quarantine?;
        let appended = events?;
        let duplicates = appended.iter().filter(|a| matches!(a, Appended::Duplicate)).count();
        let duplicate: Vec<bool> = appended.iter().map(|a| matches!(a, Appended::Duplicate)).collect();
        let duplicate_bytes = duplicate.iter().zip(&sizes).filter(|(d, _)| **d).map(|(_, n)| n).sum();
        Ok(IngestReceipt { duplicates, duplicate_bytes, duplicate })
    }
}

async fn append(log: &Log, records: Vec<Record>) -> Result<Vec<Appended>, IngestError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    log.append(records).await.map_err(|error| match error {
        AppendError::DiskFull { retry_after } => IngestError::Overloaded { retry_after },
        other => IngestError::Unavailable { retry_after: UNAVAILABLE_RETRY_AFTER, reason: other.to_string() },
    })
}

impl Ingest for EmbeddedIngest {
    fn ingest(&self, batch: IngestBatch) -> BoxFuture<'_, Result<IngestReceipt, IngestError>> {
        Box::pin(self.ingest_inner(batch))
    }

    fn ready(&self) -> bool {
        self.events.writable() && self.quarantine.writable()
    }
}
