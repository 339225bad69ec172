//! `workflows` and `workflow_steps`: folded from `workflows.*` events and the step jobs' events.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Workflows {
    Table,
    Id,
    Owner,
    Name,
    Status,
    Generation,
    StepCount,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
    LastSeq,
}

#[derive(DeriveIden)]
enum WorkflowSteps {
    Table,
    WorkflowId,
    StepId,
    Position,
    JobId,
    After,
    OnFailure,
    Spec,
    Status,
    Result,
    Error,
    Action,
    HasJob,
    CancelRequested,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workflows::Table)
                    .if_not_exists()
                    .col(string_len(Workflows::Id, 36).primary_key())
                    .col(text(Workflows::Owner))
                    .col(text(Workflows::Name))
                    .col(string_len(Workflows::Status, 16))
                    .col(integer(Workflows::Generation))
                    .col(integer(Workflows::StepCount))
                    .col(timestamp_with_time_zone(Workflows::CreatedAt))
                    .col(timestamp_with_time_zone(Workflows::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Workflows::FinishedAt))
                    .col(big_integer(Workflows::LastSeq))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_workflows_owner_id")
                    .table(Workflows::Table)
                    .col(Workflows::Owner)
                    .col(Workflows::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WorkflowSteps::Table)
                    .if_not_exists()
                    .col(string_len(WorkflowSteps::WorkflowId, 36))
                    .col(string_len(WorkflowSteps::StepId, 64))
                    .col(integer(WorkflowSteps::Position))
                    .col(string_len(WorkflowSteps::JobId, 36))
                    .col(json_binary(WorkflowSteps::After))
                    .col(string_len(WorkflowSteps::OnFailure, 16))
                    .col(json_binary(WorkflowSteps::Spec))
                    .col(string_len(WorkflowSteps::Status, 16))
                    .col(json_binary_null(WorkflowSteps::Result))
                    .col(text_null(WorkflowSteps::Error))
                    .col(string_len_null(WorkflowSteps::Action, 16))
                    .col(boolean(WorkflowSteps::HasJob))
                    .col(boolean(WorkflowSteps::CancelRequested))
                    .primary_key(
                        Index::create()
                            .col(WorkflowSteps::WorkflowId)
                            .col(WorkflowSteps::StepId),
                    )
                    .to_owned(),
            )
            .await?;
        // The fold finds a job's step by its id; the conductor finds the outbox rows.
        manager
            .create_index(
                Index::create()
                    .name("idx_workflow_steps_job_id")
                    .table(WorkflowSteps::Table)
                    .col(WorkflowSteps::JobId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_workflow_steps_action")
                    .table(WorkflowSteps::Table)
                    .col(WorkflowSteps::Action)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WorkflowSteps::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Workflows::Table).to_owned())
            .await
    }
}
