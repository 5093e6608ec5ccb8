//! The LISTEN connection of the PostgreSQL approval store: one connection outside the pool
//! (deadpool drops notifications), made by `PgPool::connect_unpooled` with the pool's URL
//! and TLS rules.
//!
//! Owns: `listener`. Uses: `storage::PgPool`.

use std::sync::Arc;

use futures::FutureExt;

use super::postgres::{ListenConnection, Listener};
use crate::storage::PgPool;

/// A `Listener` connecting to the database `pool` uses.
pub fn listener(pool: PgPool) -> Listener {
    Arc::new(move || {
        let pool = pool.clone();
        async move {
            let (client, mut connection) = pool.connect_unpooled().await.map_err(|e| e.to_string())?;
            let messages = futures::StreamExt::boxed(futures::stream::poll_fn(move |cx| connection.poll_message(cx)));
            Ok(ListenConnection { client, messages })
        }
        .boxed()
    })
}
