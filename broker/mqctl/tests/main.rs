//! mqctl's end-to-end tests, one binary: a file per command family, each driving the
//! real `mqctl` executable against in-process brokers. Run one with
//! `cargo test -p mqctl --test integration mqctl_topics::`.

mod mqctl_support;

mod mqctl_add_node;
mod mqctl_delay_retry;
mod mqctl_errors;
mod mqctl_finalize_upgrade;
mod mqctl_group_reset;
mod mqctl_messages;
mod mqctl_receive;
mod mqctl_tls;
mod mqctl_topics;
mod mqctl_transactions;
mod mqctl_users;
