//! Progress of search index rebuilds, so `chat reindex` resumes where an
//! interrupted run stopped instead of starting over.
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_search_rebuilds"
    }
}

#[derive(Iden)]
enum SearchRebuilds {
    Table,
    Generation,
    LastMessageId,
    Indexed,
    StartedAt,
    FinishedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SearchRebuilds::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(SearchRebuilds::Generation)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(SearchRebuilds::LastMessageId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SearchRebuilds::Indexed)
                            .big_integer()
                            .not_null(),
                    )
                    // Milliseconds since the epoch, the same on both backends.
                    .col(
                        ColumnDef::new(SearchRebuilds::StartedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(SearchRebuilds::FinishedAt).big_integer())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SearchRebuilds::Table).to_owned())
            .await
    }
}
