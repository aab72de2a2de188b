//! The queues' backlog, read from the broker on an interval: ready messages per priority,
//! the oldest message's age, delayed and dead-letter counts, a bounded series for charts,
//! and a flag when a threshold is passed (the seed practice: watch the backlog).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use queue_core::BrokerError;
use serde_json::{Value, json};

use crate::store::QueueSample;

/// Queues watched at most (a broker with more is shown in part).
pub const QUEUES_KEPT: usize = 1000;

/// What one reading of a queue found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// Ready messages per priority.
    pub by_priority: BTreeMap<u8, u64>,
    /// All ready messages.
    pub messages: u64,
    /// Age of the next ready message, where the broker knows.
    pub oldest_age: Option<f64>,
    /// Messages waiting for their eta, where the broker can tell.
    pub delayed: Option<u64>,
    /// Dead letters, where the broker can tell.
    pub dead_letters: Option<u64>,
}

/// One queue as shown.
#[derive(Clone, Debug, Default)]
pub struct QueueView {
    /// The queue.
    pub name: String,
    /// The last reading.
    pub reading: Reading,
    /// When it was read.
    pub updated: Option<f64>,
    /// The last error reading it (no secrets: broker errors carry no URL).
    pub error: Option<String>,
    /// Past readings, oldest first.
    pub series: VecDeque<QueueSample>,
    /// The thresholds passed (`backlog`, `oldest_age`).
    pub flags: Vec<&'static str>,
}

impl QueueView {
    /// The `/api/dashboard/queues` entry (`consumers`: the workers consuming it).
    pub fn json(&self, consumers: &[String], with_series: bool) -> Value {
        let by_priority: serde_json::Map<String, Value> = self
            .reading
            .by_priority
            .iter()
            .map(|(priority, count)| (priority.to_string(), json!(count)))
            .collect();
        let mut value = json!({
            "name": self.name,
            "messages": self.reading.messages,
            "by_priority": by_priority,
            "oldest_age_seconds": self.reading.oldest_age,
            "delayed": self.reading.delayed,
            "dead_letters": self.reading.dead_letters,
            "consumers": consumers,
            "flagged": !self.flags.is_empty(),
            "flags": self.flags,
            "updated": self.updated,
            "error": self.error,
        });
        if with_series {
            value["series"] = json!(self.series);
        }
        value
    }
}

/// Every watched queue.
#[derive(Clone, Debug, Default)]
pub struct QueueBoard {
    queues: BTreeMap<String, QueueView>,
    series_points: usize,
}

impl QueueBoard {
    /// Empty, keeping `series_points` readings per queue.
    pub fn new(series_points: usize) -> Self {
        Self {
            queues: BTreeMap::new(),
            series_points: series_points.max(1),
        }
    }

    /// Records a reading of `queue` at `now` and its flags against the thresholds.
    pub fn record(
        &mut self,
        queue: &str,
        now: f64,
        outcome: Result<Reading, &BrokerError>,
        backlog_threshold: u64,
        age_threshold: f64,
    ) -> Option<&QueueView> {
        if !self.queues.contains_key(queue) && self.queues.len() >= QUEUES_KEPT {
            return None;
        }
        let points = self.series_points;
        let view = self
            .queues
            .entry(queue.to_owned())
            .or_insert_with(|| QueueView {
                name: queue.to_owned(),
                ..QueueView::default()
            });
        match outcome {
            Ok(reading) => {
                view.flags.clear();
                if reading.messages >= backlog_threshold {
                    view.flags.push("backlog");
                }
                if reading.oldest_age.is_some_and(|age| age >= age_threshold) {
                    view.flags.push("oldest_age");
                }
                view.series.push_back(sample(queue, now, &reading));
                while view.series.len() > points {
                    view.series.pop_front();
                }
                view.reading = reading;
                view.updated = Some(now);
                view.error = None;
            }
            Err(error) => view.error = Some(error.to_string()),
        }
        Some(view)
    }

    /// Puts a reading back from the history (on start).
    pub fn restore(&mut self, sample: QueueSample) {
        if !self.queues.contains_key(&sample.queue) && self.queues.len() >= QUEUES_KEPT {
            return;
        }
        let points = self.series_points;
        let view = self
            .queues
            .entry(sample.queue.clone())
            .or_insert_with(|| QueueView {
                name: sample.queue.clone(),
                ..QueueView::default()
            });
        view.reading = Reading {
            by_priority: BTreeMap::from([(0, u64::try_from(sample.messages).unwrap_or(0))]),
            messages: u64::try_from(sample.messages).unwrap_or(0),
            oldest_age: sample.oldest_age,
            delayed: sample.delayed.and_then(|count| u64::try_from(count).ok()),
            dead_letters: sample
                .dead_letters
                .and_then(|count| u64::try_from(count).ok()),
        };
        view.updated = Some(sample.time);
        view.series.push_back(sample);
        while view.series.len() > points {
            view.series.pop_front();
        }
    }

    /// The queues, by name.
    pub fn queues(&self) -> &BTreeMap<String, QueueView> {
        &self.queues
    }

    /// Names known, for the next poll.
    pub fn names(&self) -> BTreeSet<String> {
        self.queues.keys().cloned().collect()
    }
}

/// The sample stored for a reading.
pub fn sample(queue: &str, time: f64, reading: &Reading) -> QueueSample {
    QueueSample {
        queue: queue.to_owned(),
        time,
        messages: i64::try_from(reading.messages).unwrap_or(i64::MAX),
        oldest_age: reading.oldest_age,
        delayed: reading.delayed.and_then(|count| i64::try_from(count).ok()),
        dead_letters: reading
            .dead_letters
            .and_then(|count| i64::try_from(count).ok()),
    }
}

/// Reads `queue` from `broker`: the backlog stats where the broker has them, else its
/// length and its dead letters (counted up to `dead_letter_limit`).
pub async fn read(
    broker: &dyn queue_core::Broker,
    queue: &str,
    now: chrono::DateTime<chrono::FixedOffset>,
    dead_letter_limit: usize,
) -> Result<Reading, BrokerError> {
    match broker.queue_stats(queue).await {
        Ok(stats) => Ok(Reading {
            messages: stats.ready.total,
            by_priority: stats.ready.by_priority,
            oldest_age: stats
                .oldest_ready
                .as_ref()
                .and_then(|oldest| oldest.age(now))
                .map(|age| age.as_secs_f64()),
            delayed: Some(stats.delayed),
            dead_letters: Some(stats.dead_letters),
        }),
        Err(BrokerError::Unsupported(_)) => {
            let length = broker.queue_length(queue).await?;
            let dead_letters = match broker.dead_letters(queue, dead_letter_limit).await {
                Ok(letters) => Some(letters.len() as u64),
                Err(_) => None,
            };
            Ok(Reading {
                messages: length.total,
                by_priority: length.by_priority,
                oldest_age: None,
                delayed: None,
                dead_letters,
            })
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_bounded_series() {
        let mut board = QueueBoard::new(3);
        for index in 0..5u64 {
            let reading = Reading {
                messages: index * 10,
                oldest_age: Some(index as f64),
                ..Reading::default()
            };
            board.record("celery", index as f64, Ok(reading), 30, 4.0);
        }
        let view = &board.queues()["celery"];
        assert_eq!(view.series.len(), 3);
        assert_eq!(view.flags, vec!["backlog", "oldest_age"]);
        let json = view.json(&["celery@w".to_owned()], true);
        assert_eq!(json["flagged"], true);
        assert_eq!(json["series"][2]["messages"], 40);
        let error = BrokerError::Unsupported("x");
        board.record("celery", 9.0, Err(&error), 30, 4.0);
        assert!(board.queues()["celery"].error.is_some());
    }
}
