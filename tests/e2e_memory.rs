//! The end-to-end scenarios on the memory broker and backend.

mod scenarios;

scenarios::e2e_scenarios!(Some(scenarios::Urls::new("memory://", "memory://")));
