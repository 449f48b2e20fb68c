//! `unistream consumers`: a stream's registered enhanced fan-out consumers
//! (list, deregister).

use std::fmt::Write as _;

use serde_json::json;
use unistream_core::Result;
use unistream_kinesis::{deregister_consumer, list_consumers};

use crate::Output;
use crate::aws::AwsArgs;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// The stream's registered consumers: name, status, creation time, ARN.
    List {
        /// The stream (name or ARN).
        #[arg(long)]
        stream: String,
    },
    /// Deregisters a consumer (its subscriptions end; AWS bills a
    /// registered consumer per shard-hour whether it reads or not).
    Deregister {
        /// The stream (name or ARN).
        #[arg(long)]
        stream: String,
        /// The consumer's name.
        #[arg(long)]
        name: String,
    },
}

pub(crate) async fn run(cmd: Command, aws: &AwsArgs) -> Result<Output> {
    let kinesis = aws.clients().await.kinesis();
    match cmd {
        Command::List { stream } => {
            let consumers = list_consumers(&kinesis, &stream).await?;
            // Writing to a String cannot fail.
            let mut text = format!("stream {stream}: {} consumers\n", consumers.len());
            for c in &consumers {
                let _ = writeln!(
                    text,
                    "{:<32} {:<10} {:<26} {}",
                    c.name,
                    c.status,
                    c.created.map_or("-".into(), |t| t.to_rfc3339()),
                    c.arn
                );
            }
            let json = json!({
                "stream": stream,
                "consumers": consumers.iter().map(|c| json!({
                    "name": c.name,
                    "arn": c.arn,
                    "status": c.status,
                    "created": c.created.map(|t| t.to_rfc3339()),
                })).collect::<Vec<_>>(),
            });
            Ok(Output {
                text,
                json,
                ..Default::default()
            })
        }
        Command::Deregister { stream, name } => {
            deregister_consumer(&kinesis, &stream, &name).await?;
            Ok(Output {
                text: format!("deregistered consumer {name} of stream {stream}\n"),
                json: json!({ "stream": stream, "deregistered": name }),
                ..Default::default()
            })
        }
    }
}
