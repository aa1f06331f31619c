use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect, Set,
};
use sha2::{Digest, Sha256};

use crate::{entity::application, model::ApplicationView};
use chat_links::error::Result;

/// 128 random bits from the OS-seeded CSPRNG, URL-safe base64 (22 chars).
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token as shown where it must not be whole (logs, the dashboard):
/// its first 4 characters, enough to tell applications apart.
pub fn shown_token(token: &str) -> String {
    let kept: String = token.chars().take(4).collect();
    if kept.len() < token.len() {
        format!("{kept}…")
    } else {
        kept
    }
}

/// A token's stand-in where it is kept outside the database (rate-limit
/// keys in Redis): the first 128 bits of its SHA-256, URL-safe base64. The
/// token is 128 random bits, so the digest names it as uniquely, and no
/// one who reads the keyspace learns a token.
pub fn token_digest(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(token.as_bytes())[..16])
}

fn view(m: application::Model) -> ApplicationView {
    ApplicationView {
        id: m.id,
        token: m.token,
        name: m.name,
        chats_count: m.chats_count,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

pub async fn create(db: &DatabaseConnection, name: &str) -> Result<ApplicationView> {
    create_as(db, name, &new_token()).await
}

/// Creates the application with this token, or returns the one that has
/// it: a request sent again under its `Idempotency-Key` plans the same
/// token, and must find the application its first run created.
pub async fn create_as(
    db: &DatabaseConnection,
    name: &str,
    token: &str,
) -> Result<ApplicationView> {
    if let Some(app) = find_by_token(db, token).await? {
        return Ok(app);
    }
    match insert(db, name, token).await {
        Ok(app) => Ok(app),
        // The first run's insert landed meanwhile.
        Err(e) => find_by_token(db, token).await?.ok_or(e),
    }
}

async fn insert(db: &DatabaseConnection, name: &str, token: &str) -> Result<ApplicationView> {
    let now = chat_links::now();
    let model = application::ActiveModel {
        token: Set(token.to_owned()),
        name: Set(name.to_owned()),
        chats_count: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(view(model))
}

pub async fn find_by_token(
    db: &DatabaseConnection,
    token: &str,
) -> Result<Option<ApplicationView>> {
    // Tokens are ASCII, and MySQL refuses to compare other text with the
    // `ascii_bin` column ("illegal mix of collations"): such a token names
    // no application, without asking.
    if !token.is_ascii() {
        return Ok(None);
    }
    Ok(application::Entity::find()
        .filter(application::Column::Token.eq(token))
        .one(db)
        .await?
        .map(view))
}

/// Up to `limit` applications whose token starts with `prefix`, for an
/// operator who has only the cut token that logs and the dashboard show.
/// A range on the token column rather than `LIKE`, so that `_` in a token
/// is not a wildcard and the token's index serves it: every token
/// character sorts below DEL.
pub async fn find_by_token_prefix(
    db: &DatabaseConnection,
    prefix: &str,
    limit: u64,
) -> Result<Vec<ApplicationView>> {
    if !prefix.is_ascii() || prefix.is_empty() {
        return Ok(Vec::new());
    }
    Ok(application::Entity::find()
        .filter(application::Column::Token.gte(prefix))
        .filter(application::Column::Token.lt(format!("{prefix}\u{7f}")))
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(view)
        .collect())
}

/// The applications with these ids; unknown ids are left out.
pub async fn find_by_ids(db: &DatabaseConnection, ids: &[i64]) -> Result<Vec<ApplicationView>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(application::Entity::find()
        .filter(application::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(view)
        .collect())
}

pub async fn rename(db: &DatabaseConnection, id: i64, name: &str) -> Result<ApplicationView> {
    let model = application::ActiveModel {
        id: Set(id),
        name: Set(name.to_owned()),
        updated_at: Set(chat_links::now()),
        ..Default::default()
    }
    .update(db)
    .await?;
    Ok(view(model))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_digest_is_stable_distinct_and_hides_the_token() {
        let token = super::new_token();
        let digest = super::token_digest(&token);
        assert_eq!(digest, super::token_digest(&token));
        assert_eq!(digest.len(), 22);
        assert_ne!(digest, token);
        assert_ne!(digest, super::token_digest(&super::new_token()));
        // SHA-256 of "abc", first 16 bytes, URL-safe base64.
        assert_eq!(super::token_digest("abc"), "ungWv48Bz-pBQUDeXa4iIw");
    }

    #[test]
    fn a_token_is_shown_by_its_first_four_characters() {
        assert_eq!(super::shown_token("Zq3nF0cV8l2h1mRkT5wYxA"), "Zq3n…");
        assert_eq!(super::shown_token("ab"), "ab");
    }
}
