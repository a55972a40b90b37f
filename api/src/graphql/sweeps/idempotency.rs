//! Which run `scheduleSweep`'s idempotency key names: keys are the asking subject's, live for
//! the configured window, and reserve a random run id (`docs/sweeps.md`, "Idempotency").

use std::time::Duration;

use async_graphql::Result;
use corral_domain::sweep::{RequestFingerprint, SweepError};
use corral_projections::sweeps::idempotency::{self, Reservation};
use sqlx::PgPool;
use uuid::Uuid;

use super::sweep_error;
use crate::graphql::errors::{internal, UserError};

/// One subject's use of one key for one request.
pub(super) struct KeyUse<'a> {
    pub pool: &'a PgPool,
    pub subject: &'a str,
    /// The key, trimmed.
    pub key: &'a str,
    pub fingerprint: RequestFingerprint,
    pub window: Duration,
}

impl KeyUse<'_> {
    /// The run a live reservation of the key names, if there is one; a userError when the key
    /// was reserved for a different request.
    pub async fn reserved(&self) -> Result<std::result::Result<Option<Uuid>, UserError>> {
        let found = idempotency::find(self.pool, self.subject, self.key, self.window)
            .await
            .map_err(internal)?;
        Ok(match found {
            Some(r) if r.live => self.check(&r).map(Some),
            _ => Ok(None),
        })
    }

    fn check(&self, reservation: &Reservation) -> std::result::Result<Uuid, UserError> {
        match &reservation.request {
            Some(stored) if !self.fingerprint.matches(stored) => {
                Err(sweep_error(&SweepError::IdempotencyKeyReused))
            }
            _ => Ok(reservation.run_id),
        }
    }

    /// Reserves a fresh random run id for the key (new, or past its window). A request that
    /// raced this one and reserved first wins: its run, or the userError if it asked for
    /// something else.
    pub async fn reserve(&self) -> Result<std::result::Result<Uuid, UserError>> {
        let request = self.fingerprint.to_json();
        // Twice at most in practice: the winner's reservation can only vanish by expiring.
        for _ in 0..3 {
            let fresh = Uuid::new_v4();
            let reserved = idempotency::reserve(
                self.pool,
                self.subject,
                self.key,
                &request,
                fresh,
                self.window,
            )
            .await
            .map_err(internal)?;
            if let Some(id) = reserved {
                return Ok(Ok(id));
            }
            match self.reserved().await? {
                Ok(Some(id)) => return Ok(Ok(id)),
                Err(e) => return Ok(Err(e)),
                Ok(None) => {}
            }
        }
        Err(internal(format!(
            "could not reserve idempotency key {:?} of {}",
            self.key, self.subject
        )))
    }
}
