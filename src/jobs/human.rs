//! Durations and times in deploy files, read with errors that show the form
//! wanted: humantime's own say only "expected a duration", and an
//! internally tagged table (`[[job.triggers]]`) loses the line, so the
//! message is all an operator has. Use as `#[serde(with = "human")]`,
//! `"human::option"` or `"human::time"`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// What a duration looks like.
pub const DURATION_FORM: &str = "a number and a unit, like 500ms, 30s, 5m or 1h30m";
/// What a time looks like.
pub const TIME_FORM: &str =
    "an RFC 3339 time with its offset, like 2026-12-24T18:00:00+01:00 or 2026-12-24T17:00:00Z";

/// Reads `text` as a duration, or says what it should look like (pure).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}): use {DURATION_FORM}"))
}

/// Reads `text` as a time with its offset, or says what it should look like (pure).
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    match chrono::DateTime::parse_from_rfc3339(text.trim()) {
        Ok(t) => Ok(t.with_timezone(&chrono::Utc)),
        Err(_) if text.trim().parse::<chrono::NaiveDateTime>().is_ok() => Err(format!(
            "{text:?} has no offset: add one (+01:00, or Z for UTC), as in {TIME_FORM}"
        )),
        Err(e) => Err(format!("{text:?} is not a time ({e}): use {TIME_FORM}")),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    humantime_serde::serialize(value, s)
}

pub mod option {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => parse_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(value, s)
    }
}

pub mod time {
    use super::*;

    /// A time quoted (`"2026-12-24T18:00:00Z"`) or a TOML date-time
    /// (`2026-12-24T18:00:00Z`).
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Quoted(String),
        Toml(toml::value::Datetime),
    }

    impl Text {
        fn parse(self) -> Result<chrono::DateTime<chrono::Utc>, String> {
            match self {
                Text::Quoted(text) => parse_time(&text),
                Text::Toml(t) => parse_time(&t.to_string()),
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<chrono::DateTime<chrono::Utc>, D::Error> {
        Text::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }

    pub fn option<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => parse_time(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_duration_or_time_says_what_it_should_look_like() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        let e = parse_duration("banana").unwrap_err();
        assert!(
            e.starts_with("\"banana\" is not a duration") && e.ends_with(DURATION_FORM),
            "{e}"
        );
        let t = parse_time("2026-12-24T18:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-24T17:00:00+00:00");
        let e = parse_time("2027-01-01T10:00:00").unwrap_err();
        assert!(e.contains("has no offset") && e.ends_with(TIME_FORM), "{e}");
        let e = parse_time("tomorrow").unwrap_err();
        assert!(
            e.starts_with("\"tomorrow\" is not a time") && e.ends_with(TIME_FORM),
            "{e}"
        );
    }
}
