//! `GET /api/v1/db/backup` and `POST /api/v1/db/restore` on the
//! orchestrator (admin endpoints: guarded by the admin token when one is
//! set).
//!
//! A backup is the master's store at one seq (see
//! [`crate::model::backup`] for the file), encoded part by part and sent
//! with its length. A restore is read whole (up to [`MAX_RESTORE_BYTES`]) and
//! checked whole, magic, format, checksum, every part and every row
//! against the schema, before anything is sent to the master: a file that
//! is garbage, cut short, damaged or of another format gets a 4xx saying
//! why, and nothing changes. A backup of another cluster restores too
//! (that is how a database moves); its rows replace every table's, under
//! the next seq of this cluster's history.

use actix_web::body::SizedStream;
use actix_web::http::{header, StatusCode};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures::StreamExt;

use super::admin;
use super::common;
use super::orchestrator::OrchestratorState;
use crate::error::{Error, Result};
use crate::model::backup::{self, BackupHeader, Entries, Writer};
use crate::model::{wire, ReadOp};
use crate::store::{backup_entries, check_backup, wall_clock_ms};

/// The largest restore accepted (413 past it): it is held in memory, as a
/// snapshot is, while it is checked and sent.
pub const MAX_RESTORE_BYTES: usize = 1 << 30;

/// What every restore upload under way may hold together, in KiB: one
/// largest restore. Uploads at once beyond it are answered 503 (try
/// again), rather than the orchestrator's memory growing with each.
static UPLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_RESTORE_BYTES >> 10);

type State = web::Data<OrchestratorState>;

/// Streams a backup of the database as it is now.
pub async fn db_backup(state: State, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = admin::refusal(&req) {
        return refused;
    }
    let taken = match state.handle.backup().await {
        Ok(t) => t,
        Err(e) => return common::from_error(&e),
    };
    let entries = backup_entries(taken.snapshot.entries);
    let tables = match check_backup(&state.schema, &entries) {
        Ok(t) => t,
        // The master's own rows fit its schema; this would be a bug.
        Err(e) => return common::from_error(&Error::Storage(format!("backup: {e}"))),
    };
    let count = entries.len() as u64;
    let parts = wire::chunk_parts(entries.into_iter().map(|e| {
        let size = e.0.len() + e.1.len();
        (e, size)
    }));
    let head = BackupHeader {
        cluster: taken.stamp.cluster,
        epoch: taken.stamp.epoch,
        seq: taken.snapshot.seq,
        made_ms: wall_clock_ms(),
        tables,
        entries: count,
        parts: u32::try_from(parts.len()).unwrap_or(u32::MAX),
    };
    tracing::info!(
        seq = head.seq,
        rows = head.rows(),
        parts = head.parts,
        "backup streamed"
    );
    let name = format!("dbaas-{:016x}-{}.backup", head.cluster, head.seq);
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header(("x-dbaas-backup-seq", head.seq.to_string()))
        .insert_header(("x-dbaas-backup-rows", head.rows().to_string()))
        .body(encoded(head, parts))
}

/// The file, piece by piece: the header, each part, the trailer. Each
/// part is encoded as its rows are let go, so the whole is held about
/// once; its length is then known, and sent, for a client's progress.
fn encoded(
    head: BackupHeader,
    parts: Vec<Entries>,
) -> SizedStream<impl futures::Stream<Item = std::result::Result<Bytes, std::convert::Infallible>>>
{
    let mut writer = Writer::default();
    let mut pieces = Vec::with_capacity(parts.len() + 2);
    pieces.push(Bytes::from(writer.header(&head)));
    for p in parts {
        pieces.push(Bytes::from(writer.part(&p)));
    }
    pieces.push(Bytes::from(writer.trailer()));
    let total: usize = pieces.iter().map(Bytes::len).sum();
    let stream = futures::stream::iter(pieces.into_iter().map(Ok::<_, std::convert::Infallible>));
    SizedStream::new(total as u64, stream)
}

/// Checks an uploaded backup whole, then restores it through the master.
pub async fn db_restore(state: State, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    if let Some(refused) = admin::refusal(&req) {
        return refused;
    }
    if let Some(refused) = too_large(&req) {
        return refused;
    }
    let (bytes, _held) =
        match read_upload(payload.map(|c| c.map_err(|e| e.to_string())), &UPLOADS).await {
            Ok(b) => b,
            Err(refused) => return refused,
        };
    let restore = async {
        let (head, parts) = checked(&state, &bytes)?;
        drop(bytes);
        let reply = state.handle.restore(parts, probe(&state)?).await?;
        tracing::info!(
            seq = reply.seq,
            rows = head.rows(),
            from = head.seq,
            "restored"
        );
        Ok(serde_json::json!({
            "seq": reply.seq,
            "result": reply.result,
            "backup": {
                "cluster": format!("{:016x}", head.cluster),
                "epoch": head.epoch,
                "seq": head.seq,
                "tables": head.tables.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            },
        }))
    };
    common::reply(restore.await)
}

/// The 413 of an upload whose declared length is past
/// [`MAX_RESTORE_BYTES`], answered from its headers, before its body is
/// waited for or held.
fn too_large(req: &HttpRequest) -> Option<HttpResponse> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    (declared > MAX_RESTORE_BYTES as u64).then(|| {
        common::error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a restore is at most {MAX_RESTORE_BYTES} bytes; this one says {declared}"),
        )
    })
}

/// The body, up to [`MAX_RESTORE_BYTES`], and what it holds of `budget`
/// (KiB, taken as it comes: 503 once every upload under way together
/// would hold more than the budget).
async fn read_upload<'a>(
    payload: impl futures::Stream<Item = std::result::Result<Bytes, String>>,
    budget: &'a tokio::sync::Semaphore,
) -> std::result::Result<(Vec<u8>, Option<tokio::sync::SemaphorePermit<'a>>), HttpResponse> {
    let mut payload = std::pin::pin!(payload);
    let mut bytes = Vec::new();
    let mut held: Option<tokio::sync::SemaphorePermit<'a>> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| common::bad_request(format!("reading the upload: {e}")))?;
        if bytes.len() + chunk.len() > MAX_RESTORE_BYTES {
            return Err(common::error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a restore is at most {MAX_RESTORE_BYTES} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
        let want = (bytes.len() as u32).div_ceil(1024);
        let have = held.as_ref().map_or(0, |p| p.num_permits() as u32);
        if want > have {
            let more = budget.try_acquire_many(want - have).map_err(|_| {
                common::error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "restores under way hold all the memory restores may take; try again once they end",
                )
            })?;
            match held.as_mut() {
                Some(p) => p.merge(more),
                None => held = Some(more),
            }
        }
    }
    Ok((bytes, held))
}

/// The backup, opened and checked against the schema (400 with the
/// reason otherwise).
fn checked(state: &OrchestratorState, bytes: &[u8]) -> Result<(BackupHeader, Vec<Entries>)> {
    let (head, parts) = backup::decode(bytes)?;
    let mut tables = std::collections::BTreeMap::<String, u64>::new();
    for part in &parts {
        for (table, n) in check_backup(&state.schema, part)? {
            *tables.entry(table).or_default() += n;
        }
    }
    let said: std::collections::BTreeMap<String, u64> = head.tables.iter().cloned().collect();
    if said != tables {
        return Err(Error::bad(format!(
            "the backup's header counts rows {said:?}, its parts hold {tables:?}"
        )));
    }
    Ok((head, parts))
}

/// The strong read that shows a restore installed on a replica: a count
/// of the first table (served from its kept count).
fn probe(state: &OrchestratorState) -> Result<ReadOp> {
    let table = state
        .schema
        .tables()
        .next()
        .ok_or_else(|| Error::bad("a schema with no table restores nothing"))?;
    Ok(ReadOp::Count {
        table: table.name.clone(),
        filter: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` chunks of `size` bytes.
    fn chunks(
        n: usize,
        size: usize,
    ) -> impl futures::Stream<Item = std::result::Result<Bytes, String>> {
        futures::stream::iter((0..n).map(move |_| Ok(Bytes::from(vec![0u8; size]))))
    }

    /// Uploads under way together hold at most the budget: one past it is
    /// answered 503 and lets go of what it took; one that ends lets go of
    /// all it held.
    #[actix_web::test]
    async fn uploads_together_hold_at_most_the_budget() {
        let budget = tokio::sync::Semaphore::new(8);
        let Ok((first, held)) = read_upload(chunks(5, 1024), &budget).await else {
            panic!("the first upload fits");
        };
        assert_eq!(first.len(), 5 * 1024);
        assert_eq!(budget.available_permits(), 3);
        match read_upload(chunks(4, 1024), &budget).await {
            Err(refused) => assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE),
            Ok(_) => panic!("a second upload past the budget was taken"),
        }
        assert_eq!(budget.available_permits(), 3, "the refused one let go");
        drop(held);
        assert_eq!(budget.available_permits(), 8);
        assert!(read_upload(chunks(4, 1024), &budget).await.is_ok());
    }
}
