//! The group state's lock under a writer: readers on other threads must never
//! wait on each other.
//!
//! `std::sync::RwLock` queues new readers behind a waiting writer. A thread
//! that takes a second read guard while it still holds a first one deadlocks
//! as soon as the state machine's apply (the writer) arrives between the two:
//! the writer waits for the first guard, the second read waits for the writer.
//! Both tokio workers of a loaded leader ended up parked that way (the
//! registrar's `Node::registration` and the apply of a send), and the node fell
//! silent until it was killed — `cluster-tests/tests/soak.rs` under a topic
//! flood, and CI.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::json;

use crate::common::http::TestNode;

/// How many registrations each reader thread builds.
const REGISTRATIONS: usize = 20_000;
/// Reader threads building registrations while the node applies sends.
const READERS: usize = 2;
/// Far longer than the readers need (well under a second each here); only a
/// deadlock reaches it.
const DEADLOCK_AFTER: Duration = Duration::from_secs(60);

/// What the run found.
enum Outcome {
    /// Every reader finished; the writer applied this many sends beside them.
    Finished {
        sent: u64,
    },
    Deadlocked,
}

#[test]
fn registrations_built_while_sends_apply_never_deadlock() {
    // A runtime of its own, as the node's (two workers): when the node
    // deadlocks, its workers never return, and only `shutdown_background` lets
    // the test end and report it instead of hanging in the runtime's drop.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(registrations_beside_sends()) {
        Outcome::Finished { sent } => {
            assert!(sent > 0, "the writer sent nothing, so nothing was tested");
            eprintln!(
                "{} registrations built beside {sent} applied sends",
                READERS * REGISTRATIONS
            );
        }
        Outcome::Deadlocked => {
            runtime.shutdown_background();
            panic!(
                "building registrations deadlocked against the state machine's writes \
                 (a reader waited on the group state's lock for {DEADLOCK_AFTER:?})"
            );
        }
    }
}

async fn registrations_beside_sends() -> Outcome {
    let test = TestNode::start().await;
    test.create_topic(
        "lock",
        json!({ "write_queue_nums": 4, "read_queue_nums": 4 }),
    )
    .await;

    // The writer: sends keep the state machine taking the write lock.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let router = test.router.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let request = axum::http::Request::post("/v1/topics/lock/messages")
                    .header("content-type", "application/json")
                    .header(
                        "authorization",
                        format!("Bearer {}", broker::config::TEST_ADMIN_TOKEN),
                    )
                    .body(axum::body::Body::from(
                        json!({ "messages": [{ "body": format!("m{sent}") }] }).to_string(),
                    ))
                    .expect("a request");
                let response = tower::ServiceExt::oneshot(router.clone(), request)
                    .await
                    .expect("the router answers");
                assert!(
                    response.status().is_success(),
                    "a send failed: {}",
                    response.status()
                );
                sent += 1;
            }
            sent
        })
    };

    // The readers, on threads of their own so a deadlock cannot stall the test.
    let (done_tx, done_rx) = mpsc::channel();
    for _ in 0..READERS {
        let node = Arc::clone(&test.node);
        let done = done_tx.clone();
        std::thread::spawn(move || {
            for _ in 0..REGISTRATIONS {
                let registration = node.registration();
                assert_eq!(registration.topics.len(), 1, "the one topic is registered");
            }
            let _ = done.send(());
        });
    }
    drop(done_tx);
    let readers_done = tokio::task::spawn_blocking(move || {
        (0..READERS).all(|_| done_rx.recv_timeout(DEADLOCK_AFTER).is_ok())
    })
    .await
    .expect("the waiting thread");
    stop.store(true, Ordering::Relaxed);
    if !readers_done {
        // The node cannot apply anything more: nothing here may wait for it.
        std::mem::forget(test);
        return Outcome::Deadlocked;
    }
    let sent = sender.await.expect("the sender task");
    test.stop().await;
    Outcome::Finished { sent }
}
