//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection
//! does: the holder renews the Lease every few seconds; another replica takes it over only
//! once `leaseDurationSeconds` have passed since the last renewal. Writes carry the
//! resourceVersion read, so of two replicas racing for an expired Lease exactly one wins.
//! A holder shutting down releases the Lease (client-go's `ReleaseOnCancel`): a rolling
//! update hands over within one retry instead of a whole Lease duration.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};

/// How long a Lease holds without renewal (client-go's default: 15 s).
pub const DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and others look (client-go retries every 2 s).
pub const RETRY: Duration = Duration::from_secs(2);

/// One replica's view of the Lease.
#[derive(Debug, Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    /// Competes for the Lease `name` (in `api`'s namespace) as `identity` (the pod's name).
    pub fn new(api: Api<Lease>, name: &str, identity: &str) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
        }
    }

    /// Takes or renews the Lease as of `now`; whether this replica holds it afterwards.
    pub async fn try_acquire(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map_or(DURATION.as_secs() as i64, i64::from);
        let renewed = spec.renew_time.as_ref().map_or(0, |t| t.0.as_second());
        let expired = now.as_second() >= renewed + duration;
        let released = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !ours && !expired && !released {
            return Ok(false);
        }
        let (acquired, transitions) = if ours {
            (
                spec.acquire_time.map_or(now, |t| t.0),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        let mut updated = lease.clone();
        updated.spec = Some(self.spec(acquired, now, transitions));
        conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &updated)
                .await,
        )
    }

    /// Gives the Lease up if this replica holds it, so another takes it at its next try.
    pub async fn release(&self, now: Timestamp) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(now));
        // A write that lost a race means it was not ours any more: nothing to give up.
        conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
        .map(drop)
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(DURATION.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

/// A write that lost a race (409) means another replica holds the Lease.
fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::mock::api;

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/mca-system/leases/mca-operator";

    fn elector(client: &kube::Client, identity: &str) -> Elector {
        Elector::new(
            Api::namespaced(client.clone(), "mca-system"),
            "mca-operator",
            identity,
        )
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    #[tokio::test]
    async fn the_first_replica_takes_the_lease_and_the_second_waits_until_it_expires() {
        let (client, state) = api([]);
        let (a, b) = (
            elector(&client, "operator-a"),
            elector(&client, "operator-b"),
        );
        assert!(a.try_acquire(at(0)).await.unwrap(), "no Lease yet: created");
        assert!(a.try_acquire(at(5)).await.unwrap(), "the holder renews");
        assert!(
            !b.try_acquire(at(10)).await.unwrap(),
            "held, renewed 5 s ago"
        );
        assert!(
            !b.try_acquire(at(19)).await.unwrap(),
            "14 s since the renewal"
        );
        assert!(b.try_acquire(at(20)).await.unwrap(), "expired: taken over");
        {
            let lease = &state.lock().unwrap().objects[LEASE];
            assert_eq!(lease["spec"]["holderIdentity"], "operator-b");
            assert_eq!(lease["spec"]["leaseTransitions"], 1);
        }
        assert!(!a.try_acquire(at(21)).await.unwrap(), "a lost it");
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_at_once_and_only_its_holder_releases_it() {
        let (client, state) = api([]);
        let (a, b) = (
            elector(&client, "operator-a"),
            elector(&client, "operator-b"),
        );
        assert!(a.try_acquire(at(0)).await.unwrap());
        b.release(at(1)).await.unwrap();
        assert!(
            !b.try_acquire(at(2)).await.unwrap(),
            "b held nothing to release"
        );
        a.release(at(3)).await.unwrap();
        assert!(
            state.lock().unwrap().objects[LEASE]["spec"]
                .get("holderIdentity")
                .is_none(),
            "released"
        );
        assert!(b.try_acquire(at(4)).await.unwrap(), "taken at once");
        let lease = &state.lock().unwrap().objects[LEASE];
        assert_eq!(lease["spec"]["holderIdentity"], "operator-b");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
    }

    #[tokio::test]
    async fn of_two_replicas_racing_for_an_expired_lease_one_wins() {
        let (client, state) = api([]);
        let (a, b) = (
            elector(&client, "operator-a"),
            elector(&client, "operator-b"),
        );
        assert!(a.try_acquire(at(0)).await.unwrap());
        // b read the Lease (version 1)... then someone renewed it: b's write is stale.
        let stale: Lease =
            serde_json::from_value(state.lock().unwrap().objects[LEASE].clone()).unwrap();
        assert!(a.try_acquire(at(30)).await.unwrap());
        let mut taken = stale.clone();
        taken.spec.as_mut().unwrap().holder_identity = Some("operator-b".to_owned());
        let written = b
            .api
            .replace("mca-operator", &PostParams::default(), &taken)
            .await;
        assert!(
            !conflict_is_false(written).unwrap(),
            "409: b does not hold it"
        );
    }
}
