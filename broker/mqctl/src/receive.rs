//! `mqctl receive`, `mqctl ack` and `mqctl nack`: lease-based consumption
//! (shared/API.md "Receive and ack") from the command line.
//!
//! `receive` prints the messages as `pull` does, with each one's delivery attempt,
//! lease end and receipt handle; `ack` and `nack` take those handles. Messages
//! neither acked nor given back are delivered again once their lease ends. Every
//! request is a [`broker_client::BrokerClient`] method: any node takes them.

use serde_json::json;

use super::args::{AckArgs, NackArgs, ReceiveArgs};
use super::output::{message_row, utc, Table, MESSAGE_HEADER};
use super::{CliError, Context};
use broker_proto::receive::{
    AckResponse, AckResult, ReceiveRequest, ReceivedMessage, ACK_OK, MAX_ACK_HANDLES,
};

/// Runs `mqctl receive`: one receive; with `--ack`, an ack of what was printed.
///
/// # Errors
/// A failed request; with `--ack`, [`CliError::Failed`] unless every ack is `OK`.
pub async fn receive(ctx: &Context, args: ReceiveArgs) -> Result<(), CliError> {
    let request = ReceiveRequest {
        max_messages: Some(args.max),
        invisible_ms: Some(args.invisible_ms),
        max_wait_ms: Some(args.wait_ms),
        tags: args.tags.clone(),
        fifo: args.fifo,
    };
    let answer = ctx
        .client
        .receive(&args.group, &args.topic, &request)
        .await?;
    if ctx.out.json {
        ctx.out.json(&json!({
            "group": args.group,
            "topic": args.topic,
            "messages": answer.messages,
        }))?;
    } else if answer.messages.is_empty() {
        eprintln!("no messages");
    } else {
        let mut table = Table::new(&received_header());
        for message in &answer.messages {
            table.row(received_row(message));
        }
        ctx.out.table(&table)?;
    }
    if !args.ack || answer.messages.is_empty() {
        return Ok(());
    }
    // Only once printed: a message whose output failed is not acked, and comes
    // again when its lease ends.
    let handles: Vec<String> = answer
        .messages
        .iter()
        .map(|m| m.receipt_handle.clone())
        .collect();
    let acked = ack_all(ctx, &args.group, &handles).await?;
    // On stderr, so that stdout holds only the messages.
    for result in acked.results.iter().filter(|r| r.status != ACK_OK) {
        eprintln!("mqctl: ack {}: {}", result.receipt_handle, result.status);
    }
    let ok = ok_count(&acked);
    eprintln!("acked {ok} of {}", handles.len());
    not_acked(ok, handles.len())
}

/// Runs `mqctl ack`: prints each handle's status.
///
/// # Errors
/// A failed request, or [`CliError::Failed`] unless every handle is `OK`.
pub async fn ack(ctx: &Context, args: AckArgs) -> Result<(), CliError> {
    let answer = ack_all(ctx, &args.group, &args.handles).await?;
    ctx.out.either(&answer, || {
        let mut table = Table::new(&["RECEIPT_HANDLE", "STATUS"]);
        for result in &answer.results {
            table.row(vec![result.receipt_handle.clone(), result.status.clone()]);
        }
        table
    })?;
    not_acked(ok_count(&answer), args.handles.len())
}

/// Runs `mqctl nack`: a change-invisible; prints the new lease's handle and end.
///
/// # Errors
/// A failed request (`EXPIRED` when the lease has ended).
pub async fn nack(ctx: &Context, args: NackArgs) -> Result<(), CliError> {
    let answer = ctx
        .client
        .change_invisible(&args.group, &args.handle, args.invisible_ms)
        .await?;
    ctx.out.either(&answer, || {
        let mut table = Table::new(&["RECEIPT_HANDLE", "INVISIBLE_UNTIL"]);
        table.row(vec![
            answer.receipt_handle.clone(),
            utc(answer.invisible_until),
        ]);
        table
    })
}

/// Acks `handles` in requests of at most [`MAX_ACK_HANDLES`]; the results of all,
/// in order.
async fn ack_all(ctx: &Context, group: &str, handles: &[String]) -> Result<AckResponse, CliError> {
    let mut results: Vec<AckResult> = Vec::with_capacity(handles.len());
    for chunk in handles.chunks(MAX_ACK_HANDLES) {
        results.extend(ctx.client.ack(group, chunk).await?.results);
    }
    Ok(AckResponse { results })
}

fn ok_count(answer: &AckResponse) -> usize {
    answer.results.iter().filter(|r| r.status == ACK_OK).count()
}

/// Fails unless all `sent` handles were acked (a handle without a result was not).
fn not_acked(ok: usize, sent: usize) -> Result<(), CliError> {
    if ok >= sent {
        return Ok(());
    }
    Err(CliError::Failed(format!(
        "{} of {sent} handles not acked (their messages may be delivered again)",
        sent - ok
    )))
}

/// The header of [`received_row`]: a pulled message's, with the lease before the
/// body.
fn received_header() -> Vec<&'static str> {
    let (body, message) = MESSAGE_HEADER
        .split_last()
        .expect("the message header has columns");
    let mut header = message.to_vec();
    header.extend(["ATTEMPT", "INVISIBLE_UNTIL", "RECEIPT_HANDLE", body]);
    header
}

/// One received message as a table row: [`message_row`] with the lease's cells
/// before the body (the last column, which is not padded).
fn received_row(received: &ReceivedMessage) -> Vec<String> {
    let mut row = message_row(Some(&received.broker_group), &received.message);
    let body = row.pop().unwrap_or_default();
    row.extend([
        received.delivery_attempt.to_string(),
        utc(received.invisible_until),
        received.receipt_handle.clone(),
        body,
    ]);
    row
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};
    use broker_proto::api::MessageView;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("mqctl").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    #[test]
    fn receive_takes_the_contract_defaults_and_bounds() {
        let Ok(Command::Receive(args)) = parse(&["receive", "billing", "orders"]) else {
            panic!("receive parses");
        };
        assert_eq!(
            (args.group.as_str(), args.topic.as_str()),
            ("billing", "orders")
        );
        assert_eq!((args.max, args.invisible_ms, args.wait_ms), (16, 30_000, 0));
        assert!(!args.fifo && !args.ack && args.tags.is_none());
        let Ok(Command::Receive(args)) = parse(&[
            "receive",
            "g",
            "t",
            "--max",
            "256",
            "--invisible-ms",
            "1000",
            "--wait-ms",
            "30000",
            "--tags",
            "A||B",
            "--fifo",
            "--ack",
        ]) else {
            panic!("every flag parses");
        };
        assert_eq!(
            (args.max, args.invisible_ms, args.wait_ms),
            (256, 1000, 30_000)
        );
        assert_eq!(args.tags.as_deref(), Some("A||B"));
        assert!(args.fifo && args.ack);
        for bad in [
            ["--max", "0"],
            ["--max", "257"],
            ["--invisible-ms", "999"],
            ["--invisible-ms", "43200001"],
            ["--wait-ms", "30001"],
        ] {
            let args = ["receive", "g", "t", bad[0], bad[1]];
            let error = parse(&args).expect_err(&bad.join(" "));
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ack_needs_a_handle_and_nack_gives_back_at_once_by_default() {
        let Ok(Command::Ack(args)) = parse(&["ack", "g", "h1", "h2"]) else {
            panic!("ack parses");
        };
        assert_eq!(args.handles, ["h1", "h2"]);
        assert!(parse(&["ack", "g"]).is_err(), "no handle");

        let Ok(Command::Nack(args)) = parse(&["nack", "g", "h"]) else {
            panic!("nack parses");
        };
        assert_eq!((args.handle.as_str(), args.invisible_ms), ("h", 0));
        let Ok(Command::Nack(args)) = parse(&["nack", "g", "h", "--invisible-ms", "5000"]) else {
            panic!("nack with a delay parses");
        };
        assert_eq!(args.invisible_ms, 5000);
        for bad in ["1", "999", "43200001", "soon"] {
            let error = parse(&["nack", "g", "h", "--invisible-ms", bad]).expect_err(bad);
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad}"
            );
        }
        assert!(
            parse(&["nack", "g", "h1", "h2"]).is_err(),
            "one handle only"
        );
    }

    #[test]
    fn a_received_row_has_the_lease_before_the_body() {
        let received = ReceivedMessage {
            message: MessageView {
                msg_id: "id".into(),
                topic: "t".into(),
                queue_id: 3,
                queue_offset: 42,
                commit_log_offset: 0,
                body: Some("hello".into()),
                body_base64: None,
                tags: Some("A".into()),
                keys: vec!["k".into()],
                properties: Default::default(),
                born_timestamp: 0,
                store_timestamp: 0,
                reconsume_times: 0,
                producer_id: None,
                sequence: None,
            },
            receipt_handle: "1:broker-a:t:3:42:2:1000:g".into(),
            delivery_attempt: 2,
            invisible_until: 1_000,
            broker_group: "broker-a".into(),
        };
        let header = received_header();
        let row = received_row(&received);
        assert_eq!(header.len(), row.len());
        let cell = |name: &str| {
            let column = header.iter().position(|h| *h == name).expect("a column");
            row[column].as_str()
        };
        assert_eq!(cell("QUEUE"), "broker-a/3");
        assert_eq!(cell("OFFSET"), "42");
        assert_eq!(cell("ATTEMPT"), "2");
        assert_eq!(cell("INVISIBLE_UNTIL"), "1970-01-01T00:00:01.000Z");
        assert_eq!(cell("RECEIPT_HANDLE"), "1:broker-a:t:3:42:2:1000:g");
        assert_eq!(header.last(), Some(&"BODY"));
        assert_eq!(row.last().map(String::as_str), Some("hello"));
    }

    #[test]
    fn every_handle_must_be_ok() {
        assert!(not_acked(2, 2).is_ok());
        let error = not_acked(1, 3).expect_err("two refused");
        assert!(error.to_string().starts_with("2 of 3 handles"), "{error}");
    }
}
