//! # migration
//!
//! Schema history of the jobstream projection. Files are frozen history:
//! `mYYYYMMDD_NNNNNN_verb_noun.rs`, schema DSL only, never the `entity` crate.
//! Every table here is a projection of the `JOBS` stream and can be rebuilt from it.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_queued_jobs;
mod m20261122_000002_create_projector_checkpoints;
mod m20261123_000101_add_job_attempt_errors;
mod m20261123_000201_create_schedules;
mod m20261123_000401_create_users;
mod m20261201_000501_create_rejected_events;
mod m20261202_000601_create_queue_status_index;
mod m20261202_000601_create_workflows;
mod m20261202_000901_index_job_list_filters;
mod m20261202_001001_create_queue_states;
mod m20261202_100000_job_trace_id;
mod m20261202_200000_schedule_firings;
mod m20261202_300000_create_job_counts;
mod m20261203_000101_partial_job_indexes;

/// All migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_queued_jobs::Migration),
            Box::new(m20261122_000002_create_projector_checkpoints::Migration),
            Box::new(m20261123_000101_add_job_attempt_errors::Migration),
            Box::new(m20261123_000201_create_schedules::Migration),
            Box::new(m20261123_000401_create_users::Migration),
            Box::new(m20261201_000501_create_rejected_events::Migration),
            Box::new(m20261202_000601_create_queue_status_index::Migration),
            Box::new(m20261202_001001_create_queue_states::Migration),
            Box::new(m20261202_000601_create_workflows::Migration),
            Box::new(m20261202_000901_index_job_list_filters::Migration),
            Box::new(m20261202_100000_job_trace_id::Migration),
            Box::new(m20261202_200000_schedule_firings::Migration),
            Box::new(m20261202_300000_create_job_counts::Migration),
            Box::new(m20261203_000101_partial_job_indexes::Migration),
        ]
    }
}
