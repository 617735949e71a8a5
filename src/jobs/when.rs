//! When a job or workflow fires, as a deploy file writes it: its
//! `triggers` tables ([`TriggerDef`]), its `misfire` table ([`MisfireDef`])
//! and the `[[calendar]]` tables they name ([`CalendarDef`]).
//!
//! A trigger names its calendar; the deploy copies the calendar's days
//! into the trigger ([`resolve`]), so every agent and broker computes a
//! trigger's slots from the trigger alone. Changing a calendar is a deploy
//! of its file with the files of the jobs that use it; the plan shows each
//! job whose triggers change.
//!
//! ```toml
//! [[calendar]]
//! name = "work-de"
//! weekdays = ["MON", "TUE", "WED", "THU", "FRI"]   # the default
//! holidays = ["12-25", "12-26", "2026-12-24", "2026-08-03..2026-08-14"]
//! include = ["public-de"]                          # their days off too
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::protocol::{
    CalendarSpec, CalendarUse, DstRule, GapRule, MisfirePolicy, OnHoliday, OverlapRule, TriggerSpec,
};
use crate::triggers::calendar::Calendar;

/// A `[[job.triggers]]` (or `[[workflow.triggers]]`) table: [`TriggerSpec`]
/// with unknown keys refused (the wire type accepts them, so peers can add
/// fields), and its calendar by name.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum TriggerDef {
    Cron {
        expr: String,
        #[serde(default)]
        time_zone: Option<String>,
        #[serde(default)]
        dst: Option<DstDef>,
        #[serde(default)]
        calendar: Option<String>,
        #[serde(default)]
        on_holiday: Option<OnHoliday>,
        #[serde(default, with = "super::human::option")]
        jitter: Option<Duration>,
    },
    Interval {
        #[serde(with = "super::human")]
        every: Duration,
        #[serde(default, deserialize_with = "super::human::time::option")]
        start: Option<chrono::DateTime<chrono::Utc>>,
        #[serde(default, with = "super::human::option")]
        jitter: Option<Duration>,
    },
    At {
        #[serde(with = "super::human::time")]
        at: chrono::DateTime<chrono::Utc>,
    },
    /// One order per message on a NATS subject (`triggers::subject`).
    Subject {
        name: String,
        #[serde(default)]
        params: BTreeMap<String, String>,
    },
    /// `file = { dir, pattern, settle, rescan }` in the issue's words: a
    /// table of its own, `kind = "file"` (see `triggers::files`).
    File {
        dir: String,
        pattern: String,
        #[serde(default, with = "super::human::option")]
        settle: Option<Duration>,
        #[serde(default, with = "super::human::option")]
        rescan: Option<Duration>,
    },
}

impl TriggerDef {
    /// What serde cannot refuse: `on_holiday` with no `calendar`. The
    /// error is the field (`triggers[0].on_holiday`) and why.
    pub(crate) fn check(defs: &[TriggerDef]) -> Result<(), (String, String)> {
        for (i, def) in defs.iter().enumerate() {
            if let TriggerDef::Cron {
                calendar: None,
                on_holiday: Some(_),
                ..
            } = def
            {
                return Err((
                    format!("triggers[{i}].on_holiday"),
                    "says what a slot on a day off does, but the trigger names no `calendar`; add one or remove on_holiday".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A cron trigger's `dst` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DstDef {
    #[serde(default)]
    gap: GapRule,
    #[serde(default)]
    overlap: OverlapRule,
}

impl From<TriggerDef> for TriggerSpec {
    /// A named calendar comes without its days: [`resolve`] adds them.
    fn from(def: TriggerDef) -> TriggerSpec {
        match def {
            TriggerDef::Cron {
                expr,
                time_zone,
                dst,
                calendar,
                on_holiday,
                jitter,
            } => TriggerSpec::Cron {
                expr,
                time_zone,
                dst: dst.map_or_else(DstRule::default, |d| DstRule {
                    gap: d.gap,
                    overlap: d.overlap,
                }),
                calendar: calendar.map(|name| CalendarUse {
                    name,
                    on_holiday: on_holiday.unwrap_or_default(),
                    days: CalendarSpec::default(),
                }),
                jitter,
            },
            TriggerDef::Interval {
                every,
                start,
                jitter,
            } => TriggerSpec::Interval {
                every,
                start,
                jitter,
            },
            TriggerDef::At { at } => TriggerSpec::At { at },
            TriggerDef::Subject { name, params } => TriggerSpec::Subject { name, params },
            TriggerDef::File {
                dir,
                pattern,
                settle,
                rescan,
            } => TriggerSpec::File {
                dir,
                pattern,
                settle: settle.unwrap_or(crate::protocol::schedule::DEFAULT_SETTLE),
                rescan: rescan.unwrap_or(crate::protocol::schedule::DEFAULT_RESCAN),
            },
        }
    }
}

/// A `[[calendar]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CalendarDef {
    pub name: String,
    /// For the file's readers; nothing shows it yet.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    /// Working weekdays; MON-FRI when absent.
    #[serde(default)]
    pub weekdays: Option<Vec<String>>,
    #[serde(default)]
    pub holidays: Vec<String>,
    /// Calendars whose days off are days off here too.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub only: Option<String>,
}

/// A calendar that cannot be used: the file, the calendar, the field, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: calendar '{name}': field '{field}': {message}")]
pub struct CalendarDefError {
    pub file: String,
    pub name: String,
    pub field: String,
    pub message: String,
}

/// The deployed calendars, by name, with their days resolved.
pub type Calendars = BTreeMap<String, CalendarSpec>;

/// Resolves `[[calendar]]` tables from every file of a deploy: includes
/// flattened, each checked to compile and to leave a working day in the
/// year from `today`.
pub(crate) fn calendars(
    defs: &[(String, CalendarDef)],
    today: NaiveDate,
) -> Result<Calendars, CalendarDefError> {
    let by_name: BTreeMap<&str, &(String, CalendarDef)> =
        defs.iter().map(|d| (d.1.name.as_str(), d)).collect();
    let mut out = Calendars::new();
    for (file, def) in defs {
        let error = |field: &str, message: String| CalendarDefError {
            file: file.clone(),
            name: def.name.clone(),
            field: field.to_string(),
            message,
        };
        if defs.iter().filter(|d| d.1.name == def.name).count() > 1 {
            return Err(error("name", "defined twice in this deploy".into()));
        }
        let weekdays = def.weekdays.clone().unwrap_or_else(|| {
            ["MON", "TUE", "WED", "THU", "FRI"]
                .map(String::from)
                .to_vec()
        });
        let mut holidays = def.holidays.clone();
        // included calendars, and theirs, each once
        let mut seen = vec![def.name.as_str()];
        let mut queue: Vec<&str> = def.include.iter().map(String::as_str).collect();
        while let Some(name) = queue.pop() {
            if seen.contains(&name) {
                if name == def.name {
                    return Err(error("include", "includes itself (directly or not)".into()));
                }
                continue;
            }
            seen.push(name);
            let Some((_, included)) = by_name.get(name) else {
                return Err(error("include", unknown(name, by_name.keys().copied())));
            };
            if included.only.is_some() {
                return Err(error(
                    "include",
                    format!("'{name}' has `only`, so it cannot be included; include the calendar it narrows"),
                ));
            }
            holidays.extend(included.holidays.iter().cloned());
            queue.extend(included.include.iter().map(String::as_str));
        }
        let spec = CalendarSpec {
            weekdays,
            holidays,
            only: def.only.clone(),
        };
        let compiled = Calendar::compile(&spec).map_err(|e| {
            let field = match e {
                crate::triggers::calendar::CalendarError::Weekday(_) => "weekdays",
                crate::triggers::calendar::CalendarError::Only(_) => "only",
                _ => "holidays",
            };
            error(field, e.to_string())
        })?;
        let field = if spec.weekdays.is_empty() {
            "weekdays"
        } else {
            "holidays"
        };
        compiled
            .check_has_working_day(today)
            .map_err(|e| error(field, e.to_string()))?;
        out.insert(def.name.clone(), spec);
    }
    Ok(out)
}

fn unknown<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = known.collect();
    if names.is_empty() {
        format!("unknown calendar '{name}': this deploy defines no [[calendar]]")
    } else {
        format!(
            "unknown calendar '{name}'; this deploy defines: {}",
            names.join(", ")
        )
    }
}

/// Copies each named calendar's days into `triggers`; the error is the
/// field (`triggers[0].calendar`) and why.
pub(crate) fn resolve(
    triggers: &mut [TriggerSpec],
    calendars: &Calendars,
) -> Result<(), (String, String)> {
    for (i, trigger) in triggers.iter_mut().enumerate() {
        if let TriggerSpec::Cron {
            calendar: Some(calendar),
            ..
        } = trigger
        {
            let days = calendars.get(&calendar.name).ok_or_else(|| {
                (
                    format!("triggers[{i}].calendar"),
                    unknown(&calendar.name, calendars.keys().map(String::as_str)),
                )
            })?;
            calendar.days = days.clone();
        }
    }
    Ok(())
}

/// A job's `misfire` table: [`MisfirePolicy`] with unknown keys refused.
#[derive(Debug, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum MisfireDef {
    FireOnce {
        #[serde(default, with = "super::human::option")]
        window: Option<Duration>,
    },
    FireAll {
        #[serde(default)]
        max: Option<u32>,
        #[serde(default, with = "super::human::option")]
        max_lateness: Option<Duration>,
    },
    /// A table, not a unit: so a `window` or `max` given with it is
    /// refused, not ignored.
    Skip {},
}

impl From<MisfireDef> for MisfirePolicy {
    fn from(def: MisfireDef) -> MisfirePolicy {
        use crate::protocol::schedule::{DEFAULT_FIRE_ALL_MAX, DEFAULT_MISFIRE_WINDOW};
        match def {
            MisfireDef::FireOnce { window } => MisfirePolicy::FireOnce {
                window: window.unwrap_or(DEFAULT_MISFIRE_WINDOW),
            },
            MisfireDef::FireAll { max, max_lateness } => MisfirePolicy::FireAll {
                max: max.unwrap_or(DEFAULT_FIRE_ALL_MAX),
                max_lateness,
            },
            MisfireDef::Skip {} => MisfirePolicy::Skip,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::jobs::parse_deploy_files;
    use crate::protocol::{OnHoliday, TriggerSpec};

    fn today() -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, 12, 6).unwrap()
    }

    fn files(texts: &[(&str, &str)]) -> Result<Vec<(String, crate::jobs::Deployment)>, String> {
        let texts: Vec<(String, String)> = texts
            .iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect();
        parse_deploy_files(&texts, today()).map_err(|e| e.to_string())
    }

    const CALENDARS: &str = r#"
[[calendar]]
name = "public"
weekdays = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
holidays = ["12-25", "12-26"]

[[calendar]]
name = "work"
holidays = ["2026-12-24"]
include = ["public"]
"#;

    const JOB: &str = r#"
[[job]]
name = "report"
program = "true"
[[job.triggers]]
kind = "cron"
expr = "0 0 9 * * *"
time_zone = "Europe/Berlin"
calendar = "work"
on_holiday = "next"
jitter = "30s"
dst = { gap = "skip", overlap = "both" }
"#;

    #[test]
    fn a_trigger_gets_the_days_of_a_calendar_from_another_file_with_its_includes() {
        let all = files(&[("cal.toml", CALENDARS), ("jobs.toml", JOB)]).unwrap();
        let job = &all[1].1.jobs[0];
        let TriggerSpec::Cron {
            calendar: Some(c),
            jitter,
            dst,
            ..
        } = &job.triggers[0]
        else {
            panic!("{:?}", job.triggers)
        };
        assert_eq!(c.name, "work");
        assert_eq!(c.on_holiday, OnHoliday::Next);
        assert_eq!(c.days.weekdays, ["MON", "TUE", "WED", "THU", "FRI"]);
        assert_eq!(c.days.holidays, ["2026-12-24", "12-25", "12-26"]);
        assert_eq!(*jitter, Some(std::time::Duration::from_secs(30)));
        assert!(!dst.is_default());
    }

    #[test]
    fn unknown_calendars_and_calendars_without_working_days_are_refused_by_file_and_field() {
        let e = files(&[("jobs.toml", JOB)]).unwrap_err();
        assert_eq!(
            e,
            "jobs.toml: job 'report': field 'triggers[0].calendar': unknown calendar 'work': this deploy defines no [[calendar]]"
        );
        let e = files(&[
            ("cal.toml", CALENDARS),
            ("jobs.toml", &JOB.replace("\"work\"", "\"wrok\"")),
        ])
        .unwrap_err();
        assert!(
            e.ends_with("unknown calendar 'wrok'; this deploy defines: public, work"),
            "{e}"
        );
        let closed = "[[calendar]]\nname = \"closed\"\nholidays = [\"2026-01-01..2028-01-01\"]\n";
        let e = files(&[("closed.toml", closed)]).unwrap_err();
        assert_eq!(
            e,
            "closed.toml: calendar 'closed': field 'holidays': no working day in the 366 days from 2026-12-06"
        );
        let bad = "[[calendar]]\nname = \"x\"\nholidays = [\"13-01\"]\n";
        let e = files(&[("bad.toml", bad)]).unwrap_err();
        assert!(
            e.starts_with("bad.toml: calendar 'x': field 'holidays': holiday '13-01'"),
            "{e}"
        );
        let cycle = "[[calendar]]\nname = \"a\"\ninclude = [\"b\"]\n[[calendar]]\nname = \"b\"\ninclude = [\"a\"]\n";
        let e = files(&[("c.toml", cycle)]).unwrap_err();
        assert!(e.contains("includes itself"), "{e}");
        let e = files(&[("j.toml", &JOB.replace("calendar = \"work\"\n", ""))]).unwrap_err();
        assert_eq!(
            e,
            "j.toml: job 'report': field 'triggers[0].on_holiday': says what a slot on a day off does, but the trigger names no `calendar`; add one or remove on_holiday"
        );
        let e = files(&[(
            "j.toml",
            &JOB.replace("kind = \"cron\"", "kind = \"cron\"\nfoo = 1"),
        )])
        .unwrap_err();
        assert!(e.contains("unknown field `foo`"), "{e}");
    }

    /// The README's calendar example deploys as written.
    #[test]
    fn the_readme_calendar_example_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n[[calendar]]").expect("the example") + 8;
        let text = &readme[start..start + readme[start..].find("```").unwrap()];
        let all = files(&[("README.md", text)]).unwrap();
        let payroll = &all[0].1.jobs[0];
        let TriggerSpec::Cron {
            calendar: Some(c), ..
        } = &payroll.triggers[0]
        else {
            panic!("{payroll:?}")
        };
        assert_eq!(c.days.only.as_deref(), Some("last working day of month"));
        assert!(
            c.days.holidays.contains(&"12-25".to_string()),
            "{:?}",
            c.days
        );
    }
}
