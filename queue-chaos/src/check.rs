//! End-of-scenario checks, each printing plain `key value` lines for xtask to read.

use std::collections::BTreeMap;

use futures::StreamExt;
use queue::TaskState;

use crate::poison::classify;

/// Counts the dead letters of `queue` by kind of hostile message, and those without a
/// reason; names one reason per kind as evidence.
pub async fn dead(broker: &str, queue: &str, limit: usize) -> crate::Result<()> {
    let app = crate::worker::client(broker, "none", queue).await?;
    let letters = app.broker().dead_letters(queue, limit).await?;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<&str, String> = BTreeMap::new();
    let mut without_reason = 0;
    let mut no_reason: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unclassified = 0;
    let mut good = 0;
    for letter in &letters {
        let kind = match &letter.content {
            Ok(message) => {
                if message.id().starts_with("good-") {
                    good += 1;
                }
                classify(message.id().as_bytes())
            }
            Err(undecodable) => classify(&undecodable.raw),
        };
        if letter.reason.trim().is_empty() {
            without_reason += 1;
            *no_reason.entry(kind.unwrap_or("unclassified")).or_default() += 1;
        }
        match kind {
            Some(kind) => {
                *kinds.entry(kind).or_default() += 1;
                reasons
                    .entry(kind)
                    .or_insert_with(|| one_line(&letter.reason));
            }
            None => unclassified += 1,
        }
    }
    println!("dead total {}", letters.len());
    println!("dead without-reason {without_reason}");
    println!("dead unclassified {unclassified}");
    println!("dead good {good}");
    for (kind, count) in &kinds {
        println!("dead kind {kind} {count}");
    }
    for (kind, reason) in &reasons {
        println!("dead reason {kind} {reason}");
    }
    for (kind, count) in &no_reason {
        println!("dead no-reason {kind} {count}");
    }
    if broker.starts_with("redis") {
        // What a worker holds and never settles stays in kombu's `unacked` hash (renewed
        // while the worker lives): hostile messages found there are pinned.
        let mut connection = crate::resp::Connection::open(broker)?;
        let held = match connection.command(&[b"HVALS", b"unacked"])? {
            crate::resp::Reply::Array(values) => values,
            _ => Vec::new(),
        };
        let mut pinned: BTreeMap<&str, usize> = BTreeMap::new();
        for entry in &held {
            if let crate::resp::Reply::Bulk(Some(bytes)) = entry
                && let Some(kind) = classify(bytes)
            {
                *pinned.entry(kind).or_default() += 1;
            }
        }
        println!("dead unacked {}", held.len());
        for (kind, count) in &pinned {
            println!("dead pinned {kind} {count}");
        }
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(160).collect()
}

/// Reads the result of every task `<prefix>-<n>`: how many are SUCCESS, missing, other.
pub async fn results(backend: &str, prefix: &str, count: u64) -> crate::Result<()> {
    let app = queue::App::builder()
        .broker("memory://")
        .backend(backend.to_owned())
        .build()
        .await?;
    let backend = app.backend().ok_or("no result backend")?.clone();
    let mut success = 0u64;
    let mut missing = Vec::new();
    let mut other = Vec::new();
    let mut errors = 0u64;
    let mut reads = futures::stream::iter(0..count)
        .map(|n| {
            let backend = backend.clone();
            async move {
                let id = format!("{prefix}-{n}");
                let read = backend.get(&id).await;
                (id, read)
            }
        })
        .buffer_unordered(32);
    while let Some((id, read)) = reads.next().await {
        match read {
            Ok(Some(meta)) if meta.status == TaskState::Success => success += 1,
            Ok(Some(meta)) => other.push(format!("{id}={}", meta.status)),
            Ok(None) => missing.push(id),
            Err(error) => {
                errors += 1;
                other.push(format!("{id}: {error}"));
            }
        }
    }
    println!("results success {success}");
    println!("results missing {}", missing.len());
    println!("results other {}", other.len());
    println!("results errors {errors}");
    for id in missing.iter().take(5) {
        println!("results example-missing {id}");
    }
    for entry in other.iter().take(5) {
        println!("results example-other {}", one_line(entry));
    }
    Ok(())
}
