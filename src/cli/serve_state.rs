//! The gateway state a `serve` opens beside the log: tool fingerprints and the approvals'
//! store, in `<data_dir>/state` (sled) or in the shared PostgreSQL database (`[storage]`).
//! Only this file knows which backend runs; the pipeline gets the two handles.

use std::sync::Arc;

use anyhow::Context;

use crate::approval::store::ApprovalStore;
use crate::approval::store::postgres::PgApprovals;
use crate::approval::store::sled::SledApprovals;
use crate::config::Config;
use crate::gateway::fingerprints::Fingerprints;
use crate::gateway::fingerprints::postgres::PgFingerprints;
use crate::storage::{Backend, PgPool};

/// Opens the fingerprints and the approvals' store the configured backend keeps.
pub(crate) async fn open(config: &Config, state: &sled::Db) -> anyhow::Result<(Fingerprints, Arc<dyn ApprovalStore>)> {
    match &config.storage.backend {
        Backend::Sled => Ok((Fingerprints::in_db(state)?, Arc::new(SledApprovals::open(state)?))),
        Backend::Postgres(settings) => {
            let pool = PgPool::connect(settings).await.context("could not open the shared database ([storage])")?;
            let listener = crate::approval::store::listen::listener(pool.clone());
            let approvals = PgApprovals::open(pool.clone(), listener).await.context("could not open the shared approvals")?;
            let fingerprints = PgFingerprints::open(pool).await.context("could not open the shared tool fingerprints")?;
            Ok((Fingerprints::in_store(Arc::new(fingerprints)), Arc::new(approvals)))
        }
    }
}
