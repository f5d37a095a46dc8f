//! Creating the idempotency table.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use sqs_worker_core::BoxError;

use crate::{DynamoDbStore, EXPIRES_AT};

/// Why [`DynamoDbStore::create_table`] failed.
#[derive(Debug, thiserror::Error)]
#[error("creating DynamoDB idempotency table {table:?}: {step} failed")]
pub struct CreateTableError {
    /// The table.
    pub table: String,
    /// What was being done.
    pub step: &'static str,
    /// The cause.
    #[source]
    pub source: BoxError,
}

impl DynamoDbStore {
    /// Creates the table if it does not exist (on-demand billing, the
    /// partition key attribute of type S), waits until it is active, and
    /// enables TTL on `expires_at`. Idempotent: an existing table is left as
    /// is, apart from enabling TTL.
    ///
    /// For production, prefer declaring the table in your infrastructure
    /// code (see the crate docs for the schema).
    pub async fn create_table(&self) -> Result<(), CreateTableError> {
        let err = |step: &'static str, e: BoxError| CreateTableError {
            table: self.table.clone(),
            step,
            source: e,
        };
        let client: &Client = &self.client;
        let created = client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(&self.key_attribute)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| err("building the request", e.into()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(&self.key_attribute)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| err("building the request", e.into()))?,
            )
            .send()
            .await;
        if let Err(e) = created {
            let exists = e
                .as_service_error()
                .is_some_and(|se| se.is_resource_in_use_exception());
            if !exists {
                return Err(err("CreateTable", e.into()));
            }
        }
        client
            .wait_until_table_exists()
            .table_name(&self.table)
            .wait(Duration::from_secs(300))
            .await
            .map_err(|e| err("waiting for the table to become active", e.into()))?;

        let ttl = client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| err("DescribeTimeToLive", e.into()))?;
        let enabled = ttl.time_to_live_description().is_some_and(|d| {
            d.attribute_name() == Some(EXPIRES_AT)
                && matches!(
                    d.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
        });
        if !enabled {
            client
                .update_time_to_live()
                .table_name(&self.table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(EXPIRES_AT)
                        .enabled(true)
                        .build()
                        .map_err(|e| err("building the request", e.into()))?,
                )
                .send()
                .await
                .map_err(|e| err("UpdateTimeToLive", e.into()))?;
        }
        Ok(())
    }
}
