//! A fake DynamoDB table and S3 bucket behind SDK clients mocked with
//! `aws-smithy-mocks`, for fault tests that no emulator can produce.
//!
//! The fake keeps state like the services do — items written by `PutItem`
//! and `UpdateItem` (condition and update expressions evaluated as DynamoDB
//! evaluates them, see `expression.rs`), objects written by `PutObject` —,
//! so the tests check behaviour (what a store opened afterwards loads), not
//! the text of the requests. A fault can be planned for the n-th call of
//! given operations: that call fails with the service's error and changes
//! nothing. Every call is logged with the client that made it.
//!
//! Only the calls a checkpoint store makes are served (`GetItem`, `PutItem`,
//! `UpdateItem`; `PutObject`, `GetObject`, `DeleteObject`); any other call
//! panics (the mock client's `must_match`), and a request DynamoDB would
//! refuse as invalid is refused with a `ValidationException` and noted in
//! [`FakeAws::invalid_requests`].

// Each test binary uses part of this module.
#![allow(dead_code)]

mod expression;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aws_sdk_dynamodb::error::ErrorMetadata;
use aws_sdk_dynamodb::operation::get_item::{GetItemError, GetItemInput, GetItemOutput};
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemInput, PutItemOutput};
use aws_sdk_dynamodb::operation::update_item::{
    UpdateItemError, UpdateItemInput, UpdateItemOutput,
};
use aws_sdk_dynamodb::types::error::{
    ConditionalCheckFailedException, InternalServerError, ProvisionedThroughputExceededException,
    ThrottlingException,
};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_s3::operation::delete_object::{
    DeleteObjectError, DeleteObjectInput, DeleteObjectOutput,
};
use aws_sdk_s3::operation::get_object::{GetObjectError, GetObjectInput, GetObjectOutput};
use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectInput, PutObjectOutput};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::error::NoSuchKey;
use aws_smithy_mocks::{MockResponse, RuleMode, mock, mock_client};
pub(crate) use expression::Item;
use expression::{Placeholders, apply_update, condition_holds, item_size};

/// The partition key attribute of every table of the fake (the store's
/// default).
pub(crate) const KEY: &str = "id";

/// DynamoDB's item size limit.
const ITEM_LIMIT: usize = 400 * 1024;

/// An operation the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// DynamoDB `GetItem`.
    GetItem,
    /// DynamoDB `PutItem`.
    PutItem,
    /// DynamoDB `UpdateItem`.
    UpdateItem,
    /// S3 `PutObject`.
    PutObject,
    /// S3 `GetObject`.
    GetObject,
    /// S3 `DeleteObject`.
    DeleteObject,
}

/// The writes of a checkpoint: the batch's object and the item's writes.
pub(crate) const CHECKPOINT_WRITES: &[Op] = &[Op::PutObject, Op::PutItem, Op::UpdateItem];

/// An error the fake answers a planned call with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// DynamoDB `ProvisionedThroughputExceededException` (S3: `SlowDown`).
    ProvisionedThroughputExceeded,
    /// DynamoDB `ThrottlingException` (S3: `SlowDown`).
    Throttling,
    /// DynamoDB `InternalServerError` (S3: `InternalError`).
    InternalServerError,
    /// DynamoDB `ConditionalCheckFailedException`, as if another writer had
    /// changed the item (S3: `PreconditionFailed`).
    ConditionalCheckFailed,
}

impl Fault {
    /// The error code the service of `op` answers with.
    pub(crate) fn code(self, op: Op) -> &'static str {
        match op {
            Op::PutObject | Op::GetObject | Op::DeleteObject => self.s3_code(),
            _ => self.dynamodb_code(),
        }
    }

    fn dynamodb_code(self) -> &'static str {
        match self {
            Fault::ProvisionedThroughputExceeded => "ProvisionedThroughputExceededException",
            Fault::Throttling => "ThrottlingException",
            Fault::InternalServerError => "InternalServerError",
            Fault::ConditionalCheckFailed => "ConditionalCheckFailedException",
        }
    }

    fn s3_code(self) -> &'static str {
        match self {
            Fault::ProvisionedThroughputExceeded | Fault::Throttling => "SlowDown",
            Fault::InternalServerError => "InternalError",
            Fault::ConditionalCheckFailed => "PreconditionFailed",
        }
    }

    fn meta(self) -> ErrorMetadata {
        ErrorMetadata::builder()
            .code(self.dynamodb_code())
            .message(format!("fake {}", self.dynamodb_code()))
            .build()
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A read answered, or a write applied.
    Done,
    /// A planned fault.
    Faulted(Fault),
    /// Its condition expression did not hold: nothing written.
    ConditionFailed,
    /// Refused as DynamoDB would refuse it (the reason).
    Invalid(String),
    /// `GetObject` of an object that is not there.
    NoSuchKey,
}

/// One call the fake answered.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// The name given to the client that made it.
    pub client: String,
    /// The operation.
    pub op: Op,
    /// How it ended.
    pub outcome: Outcome,
}

impl Call {
    /// Whether it changed the table or the bucket.
    pub(crate) fn wrote(&self) -> bool {
        self.outcome == Outcome::Done
            && matches!(
                self.op,
                Op::PutItem | Op::UpdateItem | Op::PutObject | Op::DeleteObject
            )
    }
}

struct Planned {
    ops: Vec<Op>,
    /// Matching calls to let through first.
    skip: usize,
    fault: Fault,
}

#[derive(Default)]
struct State {
    /// (table, key value) → item.
    items: BTreeMap<(String, String), Item>,
    /// (bucket, key) → object.
    objects: BTreeMap<(String, String), Vec<u8>>,
    planned: Vec<Planned>,
    calls: Vec<Call>,
}

impl State {
    fn fault_for(&mut self, op: Op) -> Option<Fault> {
        let mut hit = None;
        for (i, p) in self.planned.iter_mut().enumerate() {
            if p.ops.contains(&op) {
                if p.skip == 0 {
                    hit = Some(i);
                    break;
                }
                p.skip -= 1;
            }
        }
        hit.map(|i| self.planned.remove(i).fault)
    }

    fn log(&mut self, client: &str, op: Op, outcome: Outcome) {
        self.calls.push(Call {
            client: client.to_owned(),
            op,
            outcome,
        });
    }
}

/// What a conditional write did.
enum Written<T> {
    Applied(T),
    /// The condition did not hold; the item as it was.
    ConditionFailed(Option<Item>),
}

/// An applied `UpdateItem`: the item before and after, and the top-level
/// attributes it changed.
struct Updated {
    old: Option<Item>,
    new: Item,
    changed: Vec<String>,
}

/// The fake services; clones share one state.
#[derive(Clone, Default)]
pub(crate) struct FakeAws {
    state: Arc<Mutex<State>>,
}

fn key_value(key: Option<&Item>) -> Result<String, String> {
    match key.map(|k| (k.len(), k.get(KEY))) {
        Some((1, Some(AttributeValue::S(v)))) => Ok(v.clone()),
        _ => Err(format!(
            "The provided key element does not match the schema (key {KEY:?}, a string): {key:?}"
        )),
    }
}

/// The top-level attributes a projection expression names: a superset of
/// what DynamoDB returns for nested paths, which is harmless here.
fn projected(
    item: Item,
    projection: &str,
    names: Option<&std::collections::HashMap<String, String>>,
) -> Result<Item, String> {
    let mut keep = Vec::new();
    for part in projection.split(',') {
        let head = part.trim().split(['.', '[']).next().unwrap_or_default();
        keep.push(if head.starts_with('#') {
            names
                .and_then(|n| n.get(head))
                .ok_or_else(|| format!("projection placeholder {head} is not defined"))?
                .clone()
        } else {
            head.to_owned()
        });
    }
    Ok(item.into_iter().filter(|(k, _)| keep.contains(k)).collect())
}

fn validation(message: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code("ValidationException")
        .message(message)
        .build()
}

macro_rules! write_error {
    ($error:ident, $fault:expr) => {{
        let f: Fault = $fault;
        match f {
            Fault::ProvisionedThroughputExceeded => $error::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("fake throughput exceeded")
                    .meta(f.meta())
                    .build(),
            ),
            Fault::Throttling => $error::ThrottlingException(
                ThrottlingException::builder()
                    .message("fake throttling")
                    .meta(f.meta())
                    .build(),
            ),
            Fault::InternalServerError => $error::InternalServerError(
                InternalServerError::builder()
                    .message("fake internal error")
                    .meta(f.meta())
                    .build(),
            ),
            Fault::ConditionalCheckFailed => $error::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .message("fake conditional check failure")
                    .meta(f.meta())
                    .build(),
            ),
        }
    }};
}

impl FakeAws {
    /// Empty services.
    pub(crate) fn new() -> Self {
        FakeAws::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A DynamoDB client of the fake, its calls logged as `client`'s. The
    /// SDK's retries are off: a fault reaches the store.
    pub(crate) fn dynamodb(&self, client: &str) -> aws_sdk_dynamodb::Client {
        let (f, c) = (self.clone(), client.to_owned());
        let get = mock!(aws_sdk_dynamodb::Client::get_item)
            .then_compute_response(move |r| f.get_item(&c, r));
        let (f, c) = (self.clone(), client.to_owned());
        let put = mock!(aws_sdk_dynamodb::Client::put_item)
            .then_compute_response(move |r| f.put_item(&c, r));
        let (f, c) = (self.clone(), client.to_owned());
        let update = mock!(aws_sdk_dynamodb::Client::update_item)
            .then_compute_response(move |r| f.update_item(&c, r));
        mock_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&get, &put, &update],
            |c| c.retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        )
    }

    /// An S3 client of the fake, its calls logged as `client`'s; no retries.
    pub(crate) fn s3(&self, client: &str) -> aws_sdk_s3::Client {
        let (f, c) = (self.clone(), client.to_owned());
        let put = mock!(aws_sdk_s3::Client::put_object)
            .then_compute_response(move |r| f.put_object(&c, r));
        let (f, c) = (self.clone(), client.to_owned());
        let get = mock!(aws_sdk_s3::Client::get_object)
            .then_compute_response(move |r| f.get_object(&c, r));
        let (f, c) = (self.clone(), client.to_owned());
        let delete = mock!(aws_sdk_s3::Client::delete_object)
            .then_compute_response(move |r| f.delete_object(&c, r));
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put, &get, &delete], |c| c
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()))
    }

    /// The next call of `op` fails with `fault`.
    pub(crate) fn fail_next(&self, op: Op, fault: Fault) {
        self.fail_nth(&[op], 1, fault);
    }

    /// The `n`-th call (from 1) from now of any of `ops` fails with `fault`.
    pub(crate) fn fail_nth(&self, ops: &[Op], n: usize, fault: Fault) {
        assert!(n >= 1, "calls are counted from 1");
        self.lock().planned.push(Planned {
            ops: ops.to_vec(),
            skip: n - 1,
            fault,
        });
    }

    /// Planned faults not yet reached.
    pub(crate) fn planned_faults(&self) -> usize {
        self.lock().planned.len()
    }

    /// Every call so far, in order.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The reasons of the requests refused as invalid.
    pub(crate) fn invalid_requests(&self) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match &c.outcome {
                Outcome::Invalid(why) => Some(format!("{:?} by {}: {why}", c.op, c.client)),
                _ => None,
            })
            .collect()
    }

    /// Replaces every attribute of every item but its key with text no
    /// store wrote.
    pub(crate) fn corrupt_items(&self) {
        for item in self.lock().items.values_mut() {
            for (name, value) in item.iter_mut() {
                if name != KEY {
                    *value = AttributeValue::S("{not json".into());
                }
            }
        }
    }

    /// Every item of every table.
    pub(crate) fn items(&self) -> Vec<Item> {
        self.lock().items.values().cloned().collect()
    }

    fn get_item(
        &self,
        client: &str,
        r: &GetItemInput,
    ) -> MockResponse<GetItemOutput, GetItemError> {
        let mut s = self.lock();
        if let Some(f) = s.fault_for(Op::GetItem) {
            s.log(client, Op::GetItem, Outcome::Faulted(f));
            return MockResponse::Error(GetItemError::generic(f.meta()));
        }
        let key = match key_value(r.key()) {
            Ok(k) => k,
            Err(why) => {
                s.log(client, Op::GetItem, Outcome::Invalid(why.clone()));
                return MockResponse::Error(GetItemError::generic(validation(&why)));
            }
        };
        let item = s
            .items
            .get(&(r.table_name().unwrap_or_default().to_owned(), key))
            .cloned();
        let item = match (item, r.projection_expression()) {
            (Some(item), Some(projection)) => {
                match projected(item, projection, r.expression_attribute_names()) {
                    Ok(item) => Some(item),
                    Err(why) => {
                        s.log(client, Op::GetItem, Outcome::Invalid(why.clone()));
                        return MockResponse::Error(GetItemError::generic(validation(&why)));
                    }
                }
            }
            (item, _) => item,
        };
        s.log(client, Op::GetItem, Outcome::Done);
        MockResponse::Output(GetItemOutput::builder().set_item(item).build())
    }

    fn put_item(
        &self,
        client: &str,
        r: &PutItemInput,
    ) -> MockResponse<PutItemOutput, PutItemError> {
        let mut s = self.lock();
        if let Some(f) = s.fault_for(Op::PutItem) {
            s.log(client, Op::PutItem, Outcome::Faulted(f));
            return MockResponse::Error(write_error!(PutItemError, f));
        }
        let result = (|| -> Result<Written<Option<Item>>, String> {
            let item = r.item().ok_or("PutItem without an item")?.clone();
            let key = match item.get(KEY) {
                Some(AttributeValue::S(v)) => v.clone(),
                _ => return Err(format!("the item has no string key {KEY:?}")),
            };
            let id = (r.table_name().unwrap_or_default().to_owned(), key);
            let old = s.items.get(&id).cloned();
            let mut ph = Placeholders::new(
                r.expression_attribute_names(),
                r.expression_attribute_values(),
            );
            if let Some(c) = r.condition_expression()
                && !condition_holds(c, &old.clone().unwrap_or_default(), &mut ph)?
            {
                ph.check_all_used()?;
                return Ok(Written::ConditionFailed(old));
            }
            ph.check_all_used()?;
            if item_size(&item) > ITEM_LIMIT {
                return Err("Item size has exceeded the maximum allowed size".into());
            }
            s.items.insert(id, item);
            Ok(Written::Applied(old))
        })();
        match result {
            Ok(Written::Applied(old)) => {
                s.log(client, Op::PutItem, Outcome::Done);
                let old = old.filter(|_| r.return_values() == Some(&ReturnValue::AllOld));
                MockResponse::Output(PutItemOutput::builder().set_attributes(old).build())
            }
            Ok(Written::ConditionFailed(old)) => {
                s.log(client, Op::PutItem, Outcome::ConditionFailed);
                MockResponse::Error(PutItemError::ConditionalCheckFailedException(
                    condition_failed(old, r.return_values_on_condition_check_failure()),
                ))
            }
            Err(why) => {
                s.log(client, Op::PutItem, Outcome::Invalid(why.clone()));
                MockResponse::Error(PutItemError::generic(validation(&why)))
            }
        }
    }

    fn update_item(
        &self,
        client: &str,
        r: &UpdateItemInput,
    ) -> MockResponse<UpdateItemOutput, UpdateItemError> {
        let mut s = self.lock();
        if let Some(f) = s.fault_for(Op::UpdateItem) {
            s.log(client, Op::UpdateItem, Outcome::Faulted(f));
            return MockResponse::Error(write_error!(UpdateItemError, f));
        }
        let result = (|| -> Result<Written<Updated>, String> {
            let key = key_value(r.key())?;
            let id = (r.table_name().unwrap_or_default().to_owned(), key.clone());
            let old = s.items.get(&id).cloned();
            let mut ph = Placeholders::new(
                r.expression_attribute_names(),
                r.expression_attribute_values(),
            );
            let base = old.clone().unwrap_or_default();
            let update = r.update_expression().ok_or(
                "UpdateItem without an UpdateExpression (AttributeUpdates is not supported)",
            )?;
            if let Some(c) = r.condition_expression()
                && !condition_holds(c, &base, &mut ph)?
            {
                // Parsed for its placeholders only: DynamoDB validates the
                // whole request before it checks the condition.
                let _ = apply_update(update, &mut base.clone(), KEY, &mut ph);
                ph.check_all_used()?;
                return Ok(Written::ConditionFailed(old));
            }
            let mut new = base;
            new.insert(KEY.to_owned(), AttributeValue::S(key));
            let changed = apply_update(update, &mut new, KEY, &mut ph)?;
            ph.check_all_used()?;
            if item_size(&new) > ITEM_LIMIT {
                return Err("Item size to update has exceeded the maximum allowed size".into());
            }
            s.items.insert(id, new.clone());
            Ok(Written::Applied(Updated { old, new, changed }))
        })();
        match result {
            Ok(Written::Applied(Updated { old, new, changed })) => {
                s.log(client, Op::UpdateItem, Outcome::Done);
                let pick = |item: Option<Item>, only_changed: bool| {
                    item.map(|i| {
                        i.into_iter()
                            .filter(|(k, _)| !only_changed || changed.contains(k))
                            .collect::<Item>()
                    })
                };
                let attributes = match r.return_values() {
                    Some(ReturnValue::AllOld) => pick(old, false),
                    Some(ReturnValue::AllNew) => pick(Some(new), false),
                    Some(ReturnValue::UpdatedOld) => pick(old, true),
                    Some(ReturnValue::UpdatedNew) => pick(Some(new), true),
                    _ => None,
                };
                MockResponse::Output(
                    UpdateItemOutput::builder()
                        .set_attributes(attributes)
                        .build(),
                )
            }
            Ok(Written::ConditionFailed(old)) => {
                s.log(client, Op::UpdateItem, Outcome::ConditionFailed);
                MockResponse::Error(UpdateItemError::ConditionalCheckFailedException(
                    condition_failed(old, r.return_values_on_condition_check_failure()),
                ))
            }
            Err(why) => {
                s.log(client, Op::UpdateItem, Outcome::Invalid(why.clone()));
                MockResponse::Error(UpdateItemError::generic(validation(&why)))
            }
        }
    }

    fn put_object(
        &self,
        client: &str,
        r: &PutObjectInput,
    ) -> MockResponse<PutObjectOutput, PutObjectError> {
        let mut s = self.lock();
        if let Some(f) = s.fault_for(Op::PutObject) {
            s.log(client, Op::PutObject, Outcome::Faulted(f));
            return MockResponse::Error(PutObjectError::generic(s3_meta(f)));
        }
        let Some(body) = r.body().bytes() else {
            let why = "a streamed body (the fake takes bodies in memory)".to_owned();
            s.log(client, Op::PutObject, Outcome::Invalid(why.clone()));
            return MockResponse::Error(PutObjectError::generic(validation(&why)));
        };
        let id = (
            r.bucket().unwrap_or_default().to_owned(),
            r.key().unwrap_or_default().to_owned(),
        );
        s.objects.insert(id, body.to_vec());
        s.log(client, Op::PutObject, Outcome::Done);
        MockResponse::Output(PutObjectOutput::builder().build())
    }

    fn get_object(
        &self,
        client: &str,
        r: &GetObjectInput,
    ) -> MockResponse<GetObjectOutput, GetObjectError> {
        let mut s = self.lock();
        if let Some(f) = s.fault_for(Op::GetObject) {
            s.log(client, Op::GetObject, Outcome::Faulted(f));
            return MockResponse::Error(GetObjectError::generic(s3_meta(f)));
        }
        let id = (
            r.bucket().unwrap_or_default().to_owned(),
            r.key().unwrap_or_default().to_owned(),
        );
        match s.objects.get(&id).cloned() {
            Some(body) => {
                s.log(client, Op::GetObject, Outcome::Done);
                MockResponse::Output(
                    GetObjectOutput::builder()
                        .content_length(body.len() as i64)
                        .body(ByteStream::from(body))
                        .build(),
                )
            }
            None => {
                s.log(client, Op::GetObject, Outcome::NoSuchKey);
                MockResponse::Error(GetObjectError::NoSuchKey(
                    NoSuchKey::builder()
                        .message("The specified key does not exist.")
                        .meta(
                            aws_sdk_s3::error::ErrorMetadata::builder()
                                .code("NoSuchKey")
                                .build(),
                        )
                        .build(),
                ))
            }
        }
    }

    fn delete_object(
        &self,
        client: &str,
        r: &DeleteObjectInput,
    ) -> MockResponse<DeleteObjectOutput, DeleteObjectError> {
        let mut s = self.lock();
        if let Some(f) = s.fault_for(Op::DeleteObject) {
            s.log(client, Op::DeleteObject, Outcome::Faulted(f));
            return MockResponse::Error(DeleteObjectError::generic(s3_meta(f)));
        }
        let id = (
            r.bucket().unwrap_or_default().to_owned(),
            r.key().unwrap_or_default().to_owned(),
        );
        s.objects.remove(&id);
        s.log(client, Op::DeleteObject, Outcome::Done);
        MockResponse::Output(DeleteObjectOutput::builder().build())
    }
}

fn s3_meta(f: Fault) -> aws_sdk_s3::error::ErrorMetadata {
    aws_sdk_s3::error::ErrorMetadata::builder()
        .code(f.s3_code())
        .message(format!("fake {}", f.s3_code()))
        .build()
}

fn condition_failed(
    old: Option<Item>,
    on_failure: Option<&ReturnValuesOnConditionCheckFailure>,
) -> ConditionalCheckFailedException {
    let item = old.filter(|_| on_failure == Some(&ReturnValuesOnConditionCheckFailure::AllOld));
    ConditionalCheckFailedException::builder()
        .message("The conditional request failed")
        .set_item(item)
        .meta(Fault::ConditionalCheckFailed.meta())
        .build()
}
