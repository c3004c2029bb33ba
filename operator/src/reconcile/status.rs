//! Pure decisions about a Registry's status: conditions from what the
//! Deployment reports, and which transitions deserve an Event.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::crd::{RegistryStatus, condition, is_true};

/// A problem the user must fix: `reason` (PascalCase) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// How far the Deployment's rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    pub desired: i32,
    pub ready: i32,
    /// The Deployment controller has seen the latest spec, every replica
    /// runs it, and all of them are available.
    pub complete: bool,
}

impl Rollout {
    /// Reads a Deployment as returned by the API server.
    pub fn of(deployment: &Deployment) -> Self {
        let desired = deployment.spec.replicas.unwrap_or(1);
        let status = deployment.status.clone().unwrap_or_default();
        let ready = status.ready_replicas.unwrap_or(0);
        let seen = status.observed_generation >= deployment.metadata.generation;
        let updated = status.updated_replicas.unwrap_or(0);
        let available = status.available_replicas.unwrap_or(0);
        let total = status.replicas.unwrap_or(0);
        Self {
            desired,
            ready,
            complete: seen && updated == desired && available >= desired && total == desired,
        }
    }
}

/// The status for `generation`, given the previous conditions, the rollout
/// (absent when nothing could be applied) and a user problem, if any.
///
/// A problem with no rollout blocked the apply (a missing Secret, an invalid
/// spec): not Ready, for that reason. A problem beside a rollout concerns
/// something optional (the ServiceMonitor): the registry serves, so Ready
/// follows the rollout while Degraded reports the problem.
pub fn registry_status(
    previous: &RegistryStatus,
    generation: Option<i64>,
    rollout: Option<Rollout>,
    problem: Option<&Problem>,
) -> RegistryStatus {
    let old = &previous.conditions;
    let ready = rollout.is_some_and(|r| r.complete);
    let (ready_reason, ready_message) = match (rollout, problem) {
        (Some(r), _) => (
            if ready { "Available" } else { "RollingOut" },
            format!("{} of {} replicas ready", r.ready, r.desired),
        ),
        (None, Some(p)) => (p.reason, p.message.clone()),
        (None, None) => ("Pending", "nothing applied yet".to_string()),
    };
    let progressing = rollout.is_some() && !ready;
    let conditions = vec![
        condition(
            old,
            "Ready",
            ready,
            ready_reason,
            ready_message.clone(),
            generation,
        ),
        condition(
            old,
            "Progressing",
            progressing,
            if progressing { "RollingOut" } else { "Idle" },
            if progressing {
                ready_message
            } else {
                String::new()
            },
            generation,
        ),
        condition(
            old,
            "Degraded",
            problem.is_some(),
            problem.map_or("AsExpected", |p| p.reason),
            problem.map_or(String::new(), |p| p.message.clone()),
            generation,
        ),
    ];
    RegistryStatus {
        observed_generation: generation,
        ready_replicas: rollout.map_or(previous.ready_replicas, |r| r.ready),
        endpoint: previous.endpoint.clone(),
        config_checksum: previous.config_checksum.clone(),
        conditions,
    }
}

/// The Events worth publishing when going from `before` to `after`, as
/// `(warning, reason, note)`: a Warning when a problem appears (or changes),
/// `Recovered` when it goes, `Ready` and `NotReady` when readiness flips
/// (except `NotReady` for the very problem just warned about).
pub fn transition_events(before: &[Condition], after: &[Condition]) -> Vec<(bool, String, String)> {
    let degraded = |conditions: &[Condition]| {
        conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let ready = |conditions: &[Condition]| {
        conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let mut events = Vec::new();
    let (was, now) = (degraded(before), degraded(after));
    match (&was, &now) {
        (_, Some((reason, note))) if was.as_ref().map(|w| &w.0) != Some(reason) => {
            events.push((true, reason.clone(), note.clone()));
        }
        (Some((reason, _)), None) => {
            events.push((false, "Recovered".into(), format!("resolved: {reason}")));
        }
        _ => {}
    }
    let (ready_before, ready_after) = (is_true(before, "Ready"), is_true(after, "Ready"));
    if let Some((reason, note)) = ready(after).filter(|_| ready_before != ready_after) {
        let explained = now.as_ref().is_some_and(|(problem, _)| *problem == reason);
        if ready_after {
            events.push((false, "Ready".into(), note));
        } else if !explained {
            events.push((false, "NotReady".into(), note));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(ready: i32, complete: bool) -> Option<Rollout> {
        Some(Rollout {
            desired: 2,
            ready,
            complete,
        })
    }

    fn reasons(events: &[(bool, String, String)]) -> Vec<(bool, &str)> {
        events.iter().map(|e| (e.0, e.1.as_str())).collect()
    }

    fn status_of(conditions: &[Condition], type_: &str) -> (String, String) {
        let c = conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn rolling_out_then_ready() {
        let progressing =
            registry_status(&RegistryStatus::default(), Some(3), rollout(1, false), None);
        assert_eq!(
            status_of(&progressing.conditions, "Ready"),
            ("False".into(), "RollingOut".into())
        );
        assert_eq!(status_of(&progressing.conditions, "Progressing").0, "True");
        assert_eq!(progressing.observed_generation, Some(3));
        assert!(
            progressing
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        let ready = registry_status(&progressing, Some(3), rollout(2, true), None);
        assert_eq!(
            status_of(&ready.conditions, "Ready"),
            ("True".into(), "Available".into())
        );
        assert_eq!(status_of(&ready.conditions, "Progressing").0, "False");
        assert_eq!(ready.ready_replicas, 2);
        let events = transition_events(&progressing.conditions, &ready.conditions);
        assert_eq!(reasons(&events), [(false, "Ready")]);
        assert!(transition_events(&ready.conditions, &ready.conditions).is_empty());
    }

    #[test]
    fn a_problem_degrades_and_warns_once() {
        let problem = Problem {
            reason: "SecretMissing",
            message: "Secret \"s\" is missing".into(),
        };
        let before = registry_status(&RegistryStatus::default(), Some(1), rollout(2, true), None);
        let degraded = registry_status(&before, Some(2), None, Some(&problem));
        assert_eq!(
            status_of(&degraded.conditions, "Degraded"),
            ("True".into(), "SecretMissing".into())
        );
        assert_eq!(status_of(&degraded.conditions, "Ready").0, "False");
        let events = transition_events(&before.conditions, &degraded.conditions);
        assert_eq!(
            reasons(&events),
            [(true, "SecretMissing")],
            "no NotReady beside it"
        );
        let again = registry_status(&degraded, Some(2), None, Some(&problem));
        assert!(transition_events(&degraded.conditions, &again.conditions).is_empty());
        assert_eq!(again.ready_replicas, 2, "kept from before");
        let fixed = registry_status(&again, Some(2), rollout(2, true), None);
        let events = transition_events(&again.conditions, &fixed.conditions);
        assert_eq!(reasons(&events), [(false, "Recovered"), (false, "Ready")]);
        assert!(events[0].2.contains("SecretMissing"));
    }

    #[test]
    fn an_optional_problem_degrades_but_the_registry_stays_ready() {
        let problem = Problem {
            reason: "ServiceMonitorUnavailable",
            message: "no ServiceMonitor API".into(),
        };
        let status = registry_status(
            &RegistryStatus::default(),
            Some(1),
            rollout(2, true),
            Some(&problem),
        );
        assert_eq!(status_of(&status.conditions, "Ready").0, "True");
        assert_eq!(status_of(&status.conditions, "Progressing").0, "False");
        assert_eq!(
            status_of(&status.conditions, "Degraded"),
            ("True".into(), "ServiceMonitorUnavailable".into())
        );
        let events = transition_events(&[], &status.conditions);
        assert_eq!(
            reasons(&events),
            [(true, "ServiceMonitorUnavailable"), (false, "Ready")]
        );
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let first = registry_status(&RegistryStatus::default(), Some(1), rollout(0, false), None);
        let second = registry_status(&first, Some(1), rollout(1, false), None);
        let time = |s: &RegistryStatus| s.conditions[0].last_transition_time.clone();
        assert_eq!(time(&first), time(&second));
    }

    #[test]
    fn rollout_needs_the_latest_generation() {
        let mut d = Deployment::default();
        d.metadata.generation = Some(2);
        d.spec.replicas = Some(1);
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(1),
            updated_replicas: Some(1),
            ready_replicas: Some(1),
            available_replicas: Some(1),
            ..Default::default()
        });
        assert!(!Rollout::of(&d).complete);
        if let Some(s) = d.status.as_mut() {
            s.observed_generation = Some(2);
        }
        assert!(Rollout::of(&d).complete);
    }
}
