//! Reading the files of one deploy: each parsed, the calendars of all of
//! them resolved, then each file's definitions built and validated.

use std::collections::HashMap;
use std::path::Path;

use super::{deployment, when, DeployFile, DeployFileError, Deployment};

/// Reads and validates a deploy file.
pub fn load_deploy_file(path: &Path) -> Result<Deployment, DeployFileError> {
    let mut all = load_deploy_files(&[path])?;
    Ok(all.pop().expect("one file").1)
}

/// Reads and validates the files of one deploy; a trigger may name a
/// calendar of any of them.
pub fn load_deploy_files(paths: &[&Path]) -> Result<Vec<(String, Deployment)>, DeployFileError> {
    let mut texts = Vec::with_capacity(paths.len());
    for path in paths {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| DeployFileError::Read {
            file: file.clone(),
            error,
        })?;
        texts.push((file, text));
    }
    parse_deploy_files(&texts, chrono::Utc::now().date_naive())
}

/// Parses and validates deploy-file text; `file` is used in messages.
pub fn parse_deploy_file(file: &str, text: &str) -> Result<Deployment, DeployFileError> {
    let texts = [(file.to_string(), text.to_string())];
    let mut all = parse_deploy_files(&texts, chrono::Utc::now().date_naive())?;
    Ok(all.pop().expect("one file").1)
}

/// Parses and validates the `(file, text)` of one deploy; calendars are
/// checked to leave a working day in the year from `today`.
pub fn parse_deploy_files(
    texts: &[(String, String)],
    today: chrono::NaiveDate,
) -> Result<Vec<(String, Deployment)>, DeployFileError> {
    let mut parsed = Vec::with_capacity(texts.len());
    let mut calendar_defs = Vec::new();
    for (file, text) in texts {
        let mut one: DeployFile = toml::from_str(text).map_err(|e| DeployFileError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let empty = one.job.is_empty() && one.cluster.is_empty() && one.workflow.is_empty();
        if empty && one.calendar.is_empty() {
            return Err(DeployFileError::Empty {
                file: file.to_string(),
            });
        }
        let names: Vec<String> = one.calendar.iter().map(|c| c.name.clone()).collect();
        calendar_defs.extend(one.calendar.drain(..).map(|c| (file.clone(), c)));
        parsed.push((file, one, names));
    }
    let calendars = when::calendars(&calendar_defs, today)?;
    let all = (parsed.into_iter())
        .map(|(file, one, names)| {
            let mut d = deployment(file, one, &calendars)?;
            d.calendars = (names.into_iter())
                .filter_map(|n| Some((n.clone(), calendars.get(&n)?.clone())))
                .collect();
            Ok((file.clone(), d))
        })
        .collect::<Result<Vec<_>, DeployFileError>>()?;
    match in_two_files(&all) {
        Some(error) => Err(error),
        None => Ok(all),
    }
}

/// The first job, cluster or workflow that two of one deploy's files define
/// (pure): one would silently replace the other.
fn in_two_files(all: &[(String, Deployment)]) -> Option<DeployFileError> {
    let mut seen: HashMap<(&'static str, &str), &str> = HashMap::new();
    for (file, d) in all {
        let jobs = d.jobs.iter().map(|j| ("job", j.name.as_str()));
        let clusters = d.clusters.iter().map(|c| ("cluster", c.name.as_str()));
        let workflows = d.workflows.iter().map(|w| ("workflow", w.name.as_str()));
        for key in jobs.chain(clusters).chain(workflows) {
            match seen.insert(key, file) {
                Some(first) if first != file => {
                    return Some(DeployFileError::InTwoFiles {
                        kind: key.0,
                        name: key.1.to_string(),
                        first: first.to_string(),
                        second: file.clone(),
                    })
                }
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_defined_in_two_files_of_one_deploy_is_refused_naming_both() {
        let job = |name: &str| format!("[[job]]\nname = \"{name}\"\nprogram = \"/bin/true\"\n");
        let cluster = "[[cluster]]\nname = \"c\"\nmode = \"round-robin\"\n\
                       [[cluster.members]]\nsubagent = \"s1\"\n";
        let texts = |a: String, b: String| [("a.toml".to_string(), a), ("b.toml".to_string(), b)];
        let today = chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
        let err = parse_deploy_files(&texts(job("x") + &job("dupe"), job("dupe")), today)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "job 'dupe' is defined in both a.toml and b.toml: keep one"
        );
        let err = parse_deploy_files(&texts(cluster.into(), cluster.into()), today)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cluster 'c' is defined in both"), "{err}");
        let two = parse_deploy_files(&texts(job("x"), job("y") + cluster), today).unwrap();
        assert_eq!(two.len(), 2, "distinct names pass");
    }
}
