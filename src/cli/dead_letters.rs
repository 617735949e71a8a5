//! `baton job dead-letters NAME`: how far a job's subject triggers'
//! consumer is behind, and the messages kept on its dead-letter subject
//! with why each started no order (admin credentials: the `triggers_dead`
//! stream and the consumer's info).

use std::fmt::Write as _;

use crate::bus::{Backlog, Bus, DeadLetter, LogsError};
use crate::config::Config;
use crate::triggers::subject::{self, REASON_HEADER, SEQUENCE_HEADER, SUBJECT_HEADER};

/// Longest payload shown, in characters.
const PAYLOAD_SHOWN: usize = 200;

/// Prints `job`'s consumer backlog and its first `max` dead letters.
pub async fn show(config: &Config, bus: &Bus, job: &str, max: usize) -> anyhow::Result<()> {
    let consumer = subject::consumer_name(job);
    let backlog = match bus
        .trigger_backlog(&config.trigger_stream(), &consumer)
        .await
    {
        Ok(backlog) => Some(backlog),
        Err(LogsError::NoStream { .. }) => None,
        // no such consumer: the job has no subject trigger (said below)
        Err(LogsError::Bus(e)) if e.to_string().contains("consumer not found") => None,
        Err(e) => return Err(e.into()),
    };
    let letters = match (bus.dead_letters(
        &config.dead_letter_stream(),
        bus.subjects().trigger_dead(job),
        max,
    ))
    .await
    {
        Ok(letters) => letters,
        Err(LogsError::NoStream { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    print!("{}", dead_letters_text(job, backlog, &letters, max));
    Ok(())
}

/// The text of `baton job dead-letters` (pure).
pub fn dead_letters_text(
    job: &str,
    backlog: Option<Backlog>,
    letters: &[DeadLetter],
    max: usize,
) -> String {
    let mut out = String::new();
    let consumer = subject::consumer_name(job);
    let _ = match backlog {
        Some(b) => writeln!(
            out,
            "job {job}: consumer {consumer}: {} message(s) waiting, {} read and not acknowledged",
            b.pending, b.unacknowledged
        ),
        None => writeln!(
            out,
            "job {job}: no consumer {consumer} (the job has no subject trigger, or the broker has not made it yet)"
        ),
    };
    if letters.is_empty() {
        let _ = writeln!(out, "no dead letters");
        return out;
    }
    let more = if letters.len() == max {
        format!(" (the first {max}; --max shows more)")
    } else {
        String::new()
    };
    let _ = writeln!(out, "dead letters, oldest first{more}:");
    for letter in letters {
        let header = |name: &str| {
            (letter.headers.iter())
                .find(|(k, _)| k == name)
                .map_or("?", |(_, v)| v.as_str())
        };
        let _ = writeln!(
            out,
            "  #{} {}: {}",
            header(SEQUENCE_HEADER),
            header(SUBJECT_HEADER),
            header(REASON_HEADER)
        );
        let text = String::from_utf8_lossy(&letter.payload);
        let mut shown: String = text.chars().take(PAYLOAD_SHOWN).collect();
        if text.chars().count() > PAYLOAD_SHOWN {
            shown.push_str("...");
        }
        let _ = writeln!(out, "      payload: {shown}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_and_each_dead_letter_with_its_reason_are_shown() {
        let letter = DeadLetter {
            subject: "baton.triggers.dead.ingest".into(),
            headers: vec![
                (
                    REASON_HEADER.into(),
                    "parameter 'id': $.order.id: no such field in the payload".into(),
                ),
                (SUBJECT_HEADER.into(), "orders.created.app".into()),
                (SEQUENCE_HEADER.into(), "7".into()),
            ],
            payload: bytes::Bytes::from_static(br#"{"order":{}}"#),
        };
        let backlog = Backlog {
            pending: 3,
            unacknowledged: 1,
        };
        let text = dead_letters_text("ingest", Some(backlog), &[letter], 20);
        assert_eq!(
            text,
            "job ingest: consumer job_ingest: 3 message(s) waiting, 1 read and not acknowledged\n\
             dead letters, oldest first:\n  \
             #7 orders.created.app: parameter 'id': $.order.id: no such field in the payload\n      \
             payload: {\"order\":{}}\n"
        );
        let none = dead_letters_text("x", None, &[], 20);
        assert!(
            none.contains("no consumer job_x") && none.ends_with("no dead letters\n"),
            "{none}"
        );
    }
}
