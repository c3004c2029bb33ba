//! Leader election over a `coordination.k8s.io/v1` Lease, so that of
//! several operator replicas exactly one reconciles.
//!
//! Writes carry the `resourceVersion` they read (a `replace` is rejected
//! with 409 when someone else wrote in between). Another holder's Lease is
//! judged expired from *local* observation: it must go unchanged for a full
//! lease duration measured on our own clock, so clock skew between replicas
//! does not matter.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Timings of the election; renewals happen well before the deadline.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// The holder gives up (and exits) when it could not renew for this long;
    /// shorter than `lease_duration`, so it stops before anyone can take over.
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// These timings, when `retry_period < renew_deadline < lease_duration`
    /// (otherwise a leader could still act after a standby took over).
    pub fn checked(self) -> Result<Self, TimingsError> {
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return Err(TimingsError(self));
        }
        Ok(self)
    }
}

/// Leader election timings that cannot work.
#[derive(Debug, thiserror::Error)]
#[error(
    "leader election needs 0 < retry period < renew deadline < lease duration, got {:?} < {:?} < {:?}",
    .0.retry_period, .0.renew_deadline, .0.lease_duration
)]
pub struct TimingsError(pub Timings);

/// One replica's view of the Lease.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    /// The other holder's last seen resourceVersion and when we saw it change.
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timings: Timings) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            timings,
            observed: None,
        }
    }

    /// Waits until this replica holds the Lease. An API server that cannot
    /// be reached is retried: a standby that exited on every blip would
    /// crash-loop instead of standing by.
    pub async fn acquire(&mut self) -> Result<()> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    return Ok(());
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(%err, "cannot read the leader Lease; retrying"),
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    /// Renews the Lease until renewal fails for longer than the renew
    /// deadline; returns [`Error::LeaseLost`] then. Never returns otherwise.
    ///
    /// Each attempt is cut off at the deadline (a request to an API server
    /// that stopped answering could otherwise wait forever while a standby
    /// takes over), and a renewal counts from when it was sent, not from
    /// when its answer came: the Lease is safe for a lease duration from
    /// the write, which happened no earlier than the send.
    pub async fn keep(&mut self) -> Error {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            let sent = Instant::now();
            let left = self
                .timings
                .renew_deadline
                .saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed = sent,
                Ok(Ok(false)) => return Error::LeaseLost,
                Ok(Err(err)) => tracing::warn!(%err, "cannot renew the leader Lease"),
                Err(_) => tracing::warn!("renewing the leader Lease got no answer in time"),
            }
            if renewed.elapsed() >= self.timings.renew_deadline {
                return Error::LeaseLost;
            }
        }
    }

    /// One attempt: `true` when we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return self.create().await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref();
        if holder == Some(self.identity.as_str()) {
            return self.write(lease, false).await;
        }
        if holder.is_some() && !self.expired(&lease) {
            return Ok(false);
        }
        self.write(lease, true).await
    }

    /// Gives the Lease up (on shutdown) so a standby takes over at once.
    pub async fn release(&mut self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    fn expired(&mut self, lease: &Lease) -> bool {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        match &self.observed {
            Some((seen, since)) if *seen == version => {
                since.elapsed() > self.timings.lease_duration
            }
            _ => {
                self.observed = Some((version, Instant::now()));
                false
            }
        }
    }

    async fn create(&mut self) -> Result<bool> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(self.spec(None, true)),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Replaces `lease` (its resourceVersion is the precondition) with us as
    /// the holder; `takeover` counts a transition.
    async fn write(&mut self, mut lease: Lease, takeover: bool) -> Result<bool> {
        lease.spec = Some(self.spec(lease.spec.take(), takeover));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    fn spec(&self, previous: Option<LeaseSpec>, takeover: bool) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let previous = previous.unwrap_or_default();
        let transitions = previous.lease_transitions.unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.timings.lease_duration.as_secs()).ok(),
            acquire_time: if takeover {
                Some(now.clone())
            } else {
                previous.acquire_time
            },
            renew_time: Some(now),
            lease_transitions: Some(if takeover {
                transitions + 1
            } else {
                transitions
            }),
            ..LeaseSpec::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API server that takes every request and never answers (a
    /// black-holed connection): the leader gives up at the renew deadline,
    /// before a standby could take over, instead of waiting forever.
    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_renewals_hang_gives_up_at_the_deadline() {
        let (service, mut handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(request) = handle.next_request().await {
                held.push(request);
            }
        });
        let client = kube::Client::new(service, "default");
        let timings = Timings::default();
        let mut elector = LeaderElector::new(Api::namespaced(client, "ns"), "lease", "me", timings);
        let started = tokio::time::Instant::now();
        let outcome = tokio::time::timeout(timings.lease_duration, elector.keep()).await;
        assert!(matches!(outcome, Ok(Error::LeaseLost)), "{outcome:?}");
        assert!(started.elapsed() <= timings.renew_deadline + timings.retry_period);
        hold.abort();
    }

    #[test]
    fn timings_must_nest() {
        assert!(Timings::default().checked().is_ok());
        let secs = Duration::from_secs;
        let bad = Timings {
            lease_duration: secs(10),
            renew_deadline: secs(10),
            retry_period: secs(2),
        };
        let err = bad.checked().unwrap_err().to_string();
        assert!(err.contains("2s < 10s < 10s"), "{err}");
    }
}
