//! CSV import (admin key with `config:write`; docs/archive.md):
//! - `POST /v1/admin/import?source=server` with the CSV as the body (streamed to R2, at most
//!   256 MB, `Content-Length` required) and the column mapping as JSON in `X-Seam-Mapping`
//!   (`seam_core::collect::import::Mapping`): the header and mapping are checked at once, then
//!   the rows are imported a chunk at a time by the import queue. 202 with the import's ID.
//! - `GET /v1/admin/import/{id}`: progress (bytes read, rows, accepted, duplicates, rejected)
//!   and the first refused rows with their row number, column and reason.

use seam_core::collect::import::{self, ImportError, Mapping};
use seam_core::collect::ingest::RequestError;
use seam_core::format::id;
use seam_core::privacy::access::Scope;
use serde_json::{json, Value};
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::http::admin::{audit_entry, authorize, query_param};
use crate::jobs::import::{file_key, read_file, send, Step, BUCKET};
use crate::store::imports::{self, Import};
use crate::{http, platform, store};

/// The largest file an import takes.
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// The header must fit in the file's first this many bytes.
const HEADER_BYTES: u64 = 64 * 1024;
const MAX_MAPPING_BYTES: usize = 16 * 1024;

/// Handles `POST /v1/admin/import`.
pub async fn post(req: Request, env: &Env, now_ms: i64) -> Result<Response, ApiError> {
    let grant = authorize(&req, env, Scope::ConfigWrite).await?;
    let source_id = query_param(&req, "source").unwrap_or_else(|| "server".into());
    let source = store::sources::by_id(env, &*store::sources::configured(env)?, &source_id)
        .await?
        .filter(|s| s.is_trusted())
        .ok_or(ImportError::UntrustedSource)?;
    let mapping: Value = http::header(&req, "X-Seam-Mapping")
        .filter(|m| m.len() <= MAX_MAPPING_BYTES)
        .and_then(|m| serde_json::from_str(&m).ok())
        .ok_or_else(|| {
            ImportError::InvalidMapping("X-Seam-Mapping must hold the mapping as JSON".into())
        })?;
    let length: u64 = http::header(&req, "Content-Length")
        .and_then(|l| l.parse().ok())
        .ok_or(ImportError::LengthRequired)?;
    if length > MAX_FILE_BYTES {
        return Err(RequestError::TooLarge.into());
    }
    if length == 0 {
        return Err(ImportError::InvalidHeader.into());
    }
    let id = id::message_id("import", now_ms, platform::random_bytes());
    let bucket = env.bucket(BUCKET)?;
    let body = req.inner().body().ok_or(ImportError::InvalidHeader)?;
    bucket.put(file_key(&id), body).execute().await?;
    let stored = bucket.head(file_key(&id)).await?.map_or(0, |o| o.size());
    let first = read_file(&bucket, &id, 0, HEADER_BYTES.min(stored.max(1)))
        .await?
        .unwrap_or_default();
    let checked = import::header(&first, stored <= HEADER_BYTES)
        .and_then(|(header, used)| Mapping::parse(&mapping, &header).map(|_| (header, used)));
    let (header, used) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            bucket.delete(file_key(&id)).await?;
            return Err(e.into());
        }
    };
    let job = Import {
        id: id.clone(),
        source_id: source.id.clone(),
        mapping: mapping.to_string(),
        header: json!(header).to_string(),
        status: "running".into(),
        bytes: stored as i64,
        offset: used as i64,
        rows: 0,
        accepted: 0,
        duplicates: 0,
        rejected: 0,
        attempts: 0,
        actor: grant.label.clone(),
        created_at: now_ms,
        updated_at: now_ms,
    };
    let detail = json!({ "import": id, "source": source.id, "bytes": stored, "columns": header });
    imports::create(
        &env.d1("DB")?,
        &job,
        audit_entry(&grant, "import", detail, now_ms),
    )
    .await?;
    send(
        env,
        Step {
            import: id.clone(),
            offset: job.offset,
        },
    )
    .await?;
    Ok(Response::from_json(&progress(&job, Vec::new()))?.with_status(202))
}

/// Handles `GET /v1/admin/import/{id}`.
pub async fn get(req: &Request, env: &Env, id: &str) -> Result<Response, ApiError> {
    authorize(req, env, Scope::ConfigWrite).await?;
    let db = env.d1("DB")?;
    let job = imports::get(&db, id).await?.ok_or(ApiError::NotFound)?;
    let errors = imports::errors(&db, id, 100).await?;
    Ok(Response::from_json(&progress(&job, errors))?)
}

fn progress(job: &Import, errors: Vec<Value>) -> Value {
    json!({
        "id": job.id,
        "source": job.source_id,
        "status": job.status,
        "bytes": job.bytes,
        "bytesRead": job.offset,
        "rows": job.rows,
        "accepted": job.accepted,
        "duplicates": job.duplicates,
        "rejected": job.rejected,
        "errors": errors,
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
    })
}
