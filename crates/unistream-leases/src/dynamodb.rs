//! The lease table in DynamoDB.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use unistream_core::{Error, Result};

use crate::error::LeaseError;
use crate::lease::{Lease, LeaseTable};

/// The partition key of the lease table (a string: the shard id).
pub const LEASE_KEY: &str = "lease_key";

/// A [`LeaseTable`] in a DynamoDB table whose partition key is the string
/// attribute [`LEASE_KEY`] (one table per application: the leases of one
/// stream as consumed by one group of workers).
///
/// An item: `lease_key` (shard id), `owner` (absent when free), `counter`,
/// `parents` (list of shard ids), `ended`, `changed` (when it last changed,
/// ms since the epoch: for operators, never for expiry). Every change is an `UpdateItem`
/// conditional on the counter the worker last read, so of two workers racing
/// for a lease exactly one wins; a worker that lost a lease cannot renew,
/// release or end it.
///
/// ```no_run
/// # async fn demo(ddb: aws_sdk_dynamodb::Client) {
/// use unistream_leases::DynamoDbLeaseTable;
/// let leases = DynamoDbLeaseTable::new(ddb, "orders-app-leases");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DynamoDbLeaseTable {
    client: Client,
    table: String,
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The error of a failed call: [`Error::Denied`] if the service refused it,
/// else [`LeaseError::Table`]. `what` starts with the operation's name.
fn backend<E>(what: &str, table: &str, e: aws_sdk_dynamodb::error::SdkError<E>) -> Error
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
    aws_sdk_dynamodb::error::SdkError<E>: Into<aws_sdk_dynamodb::Error>,
{
    let operation = what.split(' ').next().unwrap_or(what);
    if let Some(denied) = unistream_aws::denied(&e, &format!("dynamodb:{operation}"), || {
        format!("lease table {table}")
    }) {
        return denied;
    }
    LeaseError::Table {
        operation: what.to_owned(),
        table: table.to_owned(),
        source: Box::new(e.into()),
    }
    .into()
}

impl DynamoDbLeaseTable {
    /// Leases in `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbLeaseTable {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn parse(&self, item: &HashMap<String, AttributeValue>) -> Result<Lease> {
        let bad = |what: &str| {
            Error::from(LeaseError::NotALease {
                table: self.table.clone(),
                what: what.to_owned(),
                item: format!("{item:?}"),
            })
        };
        let shard_id = item
            .get(LEASE_KEY)
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| bad("no lease_key"))?
            .clone();
        let counter = item
            .get("counter")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("no numeric counter"))?;
        let parents = match item.get("parents") {
            None => Vec::new(),
            Some(v) => v
                .as_l()
                .map_err(|_| bad("parents is not a list"))?
                .iter()
                .map(|p| {
                    p.as_s()
                        .cloned()
                        .map_err(|_| bad("a parent is not a string"))
                })
                .collect::<Result<_>>()?,
        };
        Ok(Lease {
            shard_id,
            owner: item.get("owner").and_then(|v| v.as_s().ok()).cloned(),
            counter,
            parents,
            ended: item
                .get("ended")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
        })
    }

    /// One conditional update of a lease: `set` (and `remove_owner`) applied
    /// and the counter bumped if the counter is still `lease.counter`.
    async fn change(
        &self,
        what: &str,
        lease: &Lease,
        set: &[(&str, AttributeValue)],
        remove_owner: bool,
    ) -> Result<Option<Lease>> {
        let mut sets = vec!["#c = #c + :one".to_owned(), "#changed = :now".to_owned()];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(LEASE_KEY, AttributeValue::S(lease.shard_id.clone()))
            .condition_expression("#c = :seen")
            .expression_attribute_names("#c", "counter")
            .expression_attribute_values(":seen", n(lease.counter))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_names("#changed", CHANGED)
            .expression_attribute_values(":now", now_millis())
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        for (i, (name, value)) in set.iter().enumerate() {
            sets.push(format!("#s{i} = :s{i}"));
            req = req
                .expression_attribute_names(format!("#s{i}"), *name)
                .expression_attribute_values(format!(":s{i}"), value.clone());
        }
        let mut expr = format!("SET {}", sets.join(", "));
        if remove_owner {
            expr.push_str(" REMOVE #o");
            req = req.expression_attribute_names("#o", "owner");
        }
        match req.update_expression(expr).send().await {
            Ok(out) => match out.attributes {
                Some(item) => self.parse(&item).map(Some),
                None => Ok(None),
            },
            Err(e) => match e.as_service_error() {
                Some(s) if s.is_conditional_check_failed_exception() => Ok(None),
                _ => Err(backend(what, &self.table, e)),
            },
        }
    }
}

/// The attribute holding when a lease last changed (milliseconds since the
/// epoch, this machine's clock): for operators only, never for expiry (a
/// lease expires when its counter stops moving, which needs no clock).
const CHANGED: &str = "changed";

fn now_millis() -> AttributeValue {
    AttributeValue::N(Utc::now().timestamp_millis().to_string())
}

impl DynamoDbLeaseTable {
    /// Every lease (consistent read), with when it last changed (taken,
    /// renewed, released, ended) by the clock of the worker that changed
    /// it; `None` for a lease not changed since it was written by a version
    /// that did not record it. For operators (`unistream leases show`): a
    /// lease expires when its counter stops moving, never by this time.
    ///
    /// # Errors
    ///
    /// A failed `Scan`, or an item that is not a lease.
    pub async fn list_with_change_times(&self) -> Result<Vec<(Lease, Option<DateTime<Utc>>)>> {
        self.scan(|item| {
            let changed = item
                .get(CHANGED)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(DateTime::from_timestamp_millis);
            Ok((self.parse(item)?, changed))
        })
        .await
    }

    async fn scan<R>(
        &self,
        mut each: impl FnMut(&HashMap<String, AttributeValue>) -> Result<R>,
    ) -> Result<Vec<R>> {
        let mut leases = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend("Scan", &self.table, e))?;
            for item in out.items() {
                leases.push(each(item)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(leases)
    }
}

impl LeaseTable for DynamoDbLeaseTable {
    async fn list(&self) -> Result<Vec<Lease>> {
        self.scan(|item| self.parse(item)).await
    }

    async fn create(&self, lease: &Lease) -> Result<bool> {
        let parents = lease
            .parents
            .iter()
            .map(|p| AttributeValue::S(p.clone()))
            .collect();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(LEASE_KEY, AttributeValue::S(lease.shard_id.clone()))
            .item("counter", n(0))
            .item("parents", AttributeValue::L(parents))
            .item("ended", AttributeValue::Bool(lease.ended))
            .item(CHANGED, now_millis())
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", LEASE_KEY)
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(s) if s.is_conditional_check_failed_exception() => Ok(false),
                _ => Err(backend("PutItem", &self.table, e)),
            },
        }
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Option<Lease>> {
        self.change(
            "UpdateItem (take)",
            lease,
            &[("owner", AttributeValue::S(owner.to_owned()))],
            false,
        )
        .await
    }

    async fn renew(&self, lease: &Lease) -> Result<Option<Lease>> {
        self.change("UpdateItem (renew)", lease, &[], false).await
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        Ok(self
            .change("UpdateItem (release)", lease, &[], true)
            .await?
            .is_some())
    }

    async fn end(&self, lease: &Lease) -> Result<bool> {
        Ok(self
            .change(
                "UpdateItem (end)",
                lease,
                &[("ended", AttributeValue::Bool(true))],
                true,
            )
            .await?
            .is_some())
    }
}
