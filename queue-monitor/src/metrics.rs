//! Prometheus metrics with Flower's names, plus the queues' backlog gauges.
