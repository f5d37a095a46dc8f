//! DynamoDB idempotency store for sqs-worker (work in progress).
