//! What `baton deploy` says about calendars. A calendar travels inside the
//! triggers that name it, so a deploy of calendars alone would change
//! nothing (refused, saying what to do), and a job left deployed that names
//! a calendar this deploy changes keeps the old days (a warning names it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::bus::Bus;
use crate::jobs::Deployment;
use crate::protocol::{CalendarSpec, DeployRequest, JobList, ListJobs, TriggerSpec};

/// The refusal of a deploy whose files define calendars and nothing else.
pub fn only_calendars(loaded: &[(PathBuf, Deployment)], request: &DeployRequest) -> Option<String> {
    let nothing_else = request.jobs.is_empty()
        && request.clusters.is_empty()
        && request.workflows.is_empty()
        && request.remove.is_empty()
        && !request.prune;
    let files: Vec<String> = (loaded.iter())
        .filter(|(_, d)| !d.calendars.is_empty())
        .map(|(f, _)| f.display().to_string())
        .collect();
    (nothing_else && !files.is_empty()).then(|| {
        format!(
            "{} define only calendars: a calendar is copied into the triggers that name it, so deploy it \
             with the files of the jobs and workflows that use it (`baton job list` shows their triggers)",
            files.join(", ")
        )
    })
}

/// The calendars `loaded` defines, by name.
fn defined(loaded: &[(PathBuf, Deployment)]) -> BTreeMap<&str, &CalendarSpec> {
    (loaded.iter())
        .flat_map(|(_, d)| d.calendars.iter())
        .map(|(name, days)| (name.as_str(), days))
        .collect()
}

/// Warnings for definitions deployed now, not in `request`, that name a
/// calendar `loaded` defines with other days. Best effort: none when the
/// broker cannot be asked.
pub async fn stale(
    bus: &Bus,
    timeout: Duration,
    loaded: &[(PathBuf, Deployment)],
    request: &DeployRequest,
) -> Vec<String> {
    let calendars = defined(loaded);
    if calendars.is_empty() {
        return Vec::new();
    }
    let Ok(list) = bus
        .request::<_, JobList>(bus.subjects().job_list(), &ListJobs {}, timeout)
        .await
    else {
        return Vec::new();
    };
    let held: BTreeSet<&str> = (request.jobs.iter().map(|j| j.name.as_str()))
        .chain(request.workflows.iter().map(|w| w.name.as_str()))
        .collect();
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for job in list.jobs.iter().filter(|j| !held.contains(j.name.as_str())) {
        for trigger in &job.triggers {
            let TriggerSpec::Cron {
                calendar: Some(c), ..
            } = trigger
            else {
                continue;
            };
            if let Some((name, days)) = calendars.get_key_value(c.name.as_str()) {
                if **days != c.days {
                    users.entry(name).or_default().push(&job.name);
                }
            }
        }
    }
    (users.into_iter())
        .map(|(calendar, jobs)| {
            format!(
                "calendar '{calendar}' changes, but {} not in this deploy: {} the old days until {} deployed with it",
                jobs.join(", "),
                if jobs.len() == 1 { "it keeps" } else { "they keep" },
                if jobs.len() == 1 { "its file is" } else { "their files are" },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_of_calendars_alone_is_refused_with_what_to_do() {
        let text = "[[calendar]]\nname = \"work\"\n";
        let d = crate::jobs::parse_deploy_file("cal.toml", text).unwrap();
        let loaded = vec![(PathBuf::from("cal.toml"), d)];
        let e = only_calendars(&loaded, &DeployRequest::default()).unwrap();
        assert!(
            e.starts_with("cal.toml define only calendars: a calendar is copied"),
            "{e}"
        );
        let prune = DeployRequest {
            prune: true,
            ..Default::default()
        };
        assert_eq!(only_calendars(&loaded, &prune), None);
    }
}
