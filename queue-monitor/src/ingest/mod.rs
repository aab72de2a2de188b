//! Ingestion: Celery events, inspect polling and queue lengths folded into the state.
