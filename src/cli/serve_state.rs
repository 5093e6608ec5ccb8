//! The gateway state a `serve` opens beside the log: tool fingerprints, the approvals'
//! store and where rate limits count, in `<data_dir>/state` (sled) and the gateway's
//! memory, or in the shared PostgreSQL database (`[storage]`). Only this file knows which
//! backend runs; the pipeline gets the handles.

use std::sync::Arc;

use anyhow::Context;

use crate::approval::store::ApprovalStore;
use crate::approval::store::postgres::PgApprovals;
use crate::approval::store::sled::SledApprovals;
use crate::config::Config;
use crate::gateway::fingerprints::Fingerprints;
use crate::gateway::fingerprints::postgres::PgFingerprints;
use crate::policy::{LimitBackend, PgCounters};
use crate::storage::{Backend, PgPool};

/// What the configured backend keeps for the gateway.
pub(crate) struct State {
    pub fingerprints: Fingerprints,
    pub approvals: Arc<dyn ApprovalStore>,
    pub limits: LimitBackend,
}

/// Opens the fingerprints, the approvals' store and the limit counters the configured
/// backend keeps.
pub(crate) async fn open(config: &Config, state: &sled::Db) -> anyhow::Result<State> {
    match &config.storage.backend {
        Backend::Sled => Ok(State {
            fingerprints: Fingerprints::in_db(state)?,
            approvals: Arc::new(SledApprovals::open(state)?),
            limits: LimitBackend::Memory,
        }),
        Backend::Postgres(settings) => {
            let pool = PgPool::connect(settings).await.context("could not open the shared database ([storage])")?;
            let listener = crate::approval::store::listen::listener(pool.clone());
            let approvals = PgApprovals::open(pool.clone(), listener).await.context("could not open the shared approvals")?;
            let fingerprints = PgFingerprints::open(pool.clone()).await.context("could not open the shared tool fingerprints")?;
            Ok(State {
                fingerprints: Fingerprints::in_store(Arc::new(fingerprints)),
                approvals: Arc::new(approvals),
                limits: LimitBackend::Shared(Arc::new(PgCounters::open(pool))),
            })
        }
    }
}
