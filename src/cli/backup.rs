//! `dbaas backup FILE` and `dbaas restore FILE`: the orchestrator's
//! `db/backup` and `db/restore` from a shell, with the admin token when
//! one is set and a progress bar when stderr is a terminal.
//!
//! A backup is written to `FILE.partial` as it streams in, its checksum
//! computed on the way; only a whole file whose checksum matches its
//! trailer is renamed to `FILE`. A restore sends the file as it is: the
//! orchestrator checks it whole before anything changes.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::model::backup::{BackupHeader, TRAILER};

use super::DEFAULT_ORCHESTRATOR;
/// The pieces a restore is uploaded in (each one step of its bar).
const UPLOAD_CHUNK: usize = 256 * 1024;
/// How long a backup or a restore may take end to end.
const TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `dbaas backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// The file to write the backup to.
    pub file: PathBuf,
    /// The orchestrator's base URL.
    #[arg(long, env = "DBAAS_ORCHESTRATOR", default_value = DEFAULT_ORCHESTRATOR)]
    pub orchestrator: String,
}

/// `dbaas restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup file to restore (every table's rows are replaced).
    pub file: PathBuf,
    /// The orchestrator's base URL.
    #[arg(long, env = "DBAAS_ORCHESTRATOR", default_value = DEFAULT_ORCHESTRATOR)]
    pub orchestrator: String,
}

type Result<T> = std::result::Result<T, String>;

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .pool_idle_timeout(crate::model::HTTP_IDLE_TIMEOUT)
        .build()
        .map_err(|e| format!("http client: {e}"))
}

/// The request with the admin token, if one is set.
fn authorized(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match crate::http::admin::token() {
        Some(token) => req.bearer_auth(token),
        None => req,
    }
}

/// A bar (bytes of `total`, or a spinner when it is not known) shown
/// only when stderr is a terminal.
fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(n) => (
            ProgressBar::new(n),
            "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {msg} {bytes} {binary_bytes_per_sec} {elapsed}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// An error answer's text: its `error` field, or the body.
async fn refusal(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(body);
    format!("{status}: {msg}")
}

/// Takes a backup into `args.file`; answers what it says of itself.
pub async fn backup(args: &BackupArgs) -> Result<String> {
    let url = format!(
        "{}/api/v1/db/backup",
        args.orchestrator.trim_end_matches('/')
    );
    let mut resp = authorized(client()?.get(&url))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(refusal(resp).await);
    }
    let partial = partial_path(&args.file);
    let mut out =
        std::fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let bar = progress(resp.content_length(), "backup");
    let mut check = Check::default();
    let received = async {
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("download: {e}"))? {
            check.add(&chunk);
            out.write_all(&chunk)
                .map_err(|e| format!("{}: {e}", partial.display()))?;
            bar.inc(chunk.len() as u64);
        }
        out.sync_all()
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        check.finish()
    };
    let head = match received.await {
        Ok(h) => h,
        Err(e) => {
            bar.abandon();
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    bar.finish_and_clear();
    std::fs::rename(&partial, &args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    Ok(format!(
        "backup of cluster {:016x} at seq {} (epoch {}): {} rows, {} bytes, in {}",
        head.cluster,
        head.seq,
        head.epoch,
        head.rows(),
        check.bytes,
        args.file.display()
    ))
}

/// `dbaas backup`: the backup, and a line on stdout saying what it is.
pub async fn run_backup(args: &BackupArgs) -> crate::error::Result<()> {
    said(backup(args).await)
}

/// `dbaas restore`: the restore, and a line on stdout saying what it did.
pub async fn run_restore(args: &RestoreArgs) -> crate::error::Result<()> {
    said(restore(args).await)
}

/// Prints what a command did; its failure goes to the caller, which
/// prints it as it is (a `BadRequest` displays its message alone).
fn said(result: Result<String>) -> crate::error::Result<()> {
    let line = result.map_err(crate::error::Error::BadRequest)?;
    println!("{line}");
    Ok(())
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The checksum of a backup as it streams in, and its header.
#[derive(Default)]
struct Check {
    crc: crc32fast::Hasher,
    /// The last 4 bytes seen (the trailer's checksum, at the end), held
    /// back from the checksum.
    tail: Vec<u8>,
    /// The first bytes, until the header is read.
    head: Vec<u8>,
    bytes: u64,
}

const HEAD_MAX: usize = 1 << 20;

impl Check {
    fn add(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        if self.head.len() < HEAD_MAX {
            let take = chunk.len().min(HEAD_MAX - self.head.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.tail.extend_from_slice(chunk);
        let keep = self.tail.len().saturating_sub(TRAILER.len() + 4);
        self.crc.update(&self.tail[..keep]);
        self.tail.drain(..keep);
    }

    /// The header, if the file is whole: it ends with the trailer, whose
    /// checksum matches.
    fn finish(&mut self) -> Result<BackupHeader> {
        let cut = || "the backup arrived cut short or damaged (checksum mismatch)".to_owned();
        if self.tail.len() != TRAILER.len() + 4 || &self.tail[..TRAILER.len()] != TRAILER {
            return Err(cut());
        }
        let crc = std::mem::take(&mut self.crc);
        let mut crc = crc;
        crc.update(TRAILER);
        let want = u32::from_be_bytes([self.tail[8], self.tail[9], self.tail[10], self.tail[11]]);
        if crc.finalize() != want {
            return Err(cut());
        }
        crate::model::backup::read_header(&self.head).map_err(|e| e.to_string())
    }
}

/// Restores `args.file`; answers the orchestrator's account of it.
pub async fn restore(args: &RestoreArgs) -> Result<String> {
    let bytes = std::fs::read(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let size = bytes.len();
    let url = format!(
        "{}/api/v1/db/restore",
        args.orchestrator.trim_end_matches('/')
    );
    // The upload as a bar (what was handed to the connection), then a
    // spinner while the cluster checks and installs it.
    let bar = progress(Some(size as u64), "upload");
    let counted = bar.clone();
    let chunks: Vec<Vec<u8>> = bytes.chunks(UPLOAD_CHUNK).map(<[u8]>::to_vec).collect();
    drop(bytes);
    let upload = futures::stream::iter(chunks).map(move |chunk| {
        counted.inc(chunk.len() as u64);
        if counted.position() >= counted.length().unwrap_or(0) {
            counted.set_message("restoring on the cluster");
        }
        Ok::<_, std::io::Error>(chunk)
    });
    let sent = authorized(client()?.post(&url))
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await;
    bar.finish_and_clear();
    let resp = sent.map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(refusal(resp).await);
    }
    let answer: serde_json::Value = resp.json().await.map_err(|e| format!("answer: {e}"))?;
    let rows = answer["result"]["restored"]["rows"].as_u64().unwrap_or(0);
    let backup = &answer["backup"];
    Ok(format!(
        "restored {rows} rows at seq {} (a backup of cluster {} at seq {})",
        answer["seq"],
        backup["cluster"].as_str().unwrap_or("?"),
        backup["seq"]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::backup::encode_whole;

    fn file() -> (BackupHeader, Vec<u8>) {
        let head = BackupHeader {
            cluster: 3,
            seq: 9,
            entries: 1,
            parts: 1,
            tables: vec![("users".into(), 1)],
            ..Default::default()
        };
        let bytes = encode_whole(&head, &[vec![(b"dusers\0ta".to_vec(), vec![1])]]);
        (head, bytes)
    }

    #[test]
    fn a_whole_stream_passes_in_any_chunks_and_a_cut_one_does_not() {
        let (head, bytes) = file();
        for size in [1, 3, 7, 64, bytes.len()] {
            let mut c = Check::default();
            bytes.chunks(size).for_each(|ch| c.add(ch));
            assert_eq!(c.finish().unwrap(), head, "chunks of {size}");
            let mut cut = Check::default();
            bytes[..bytes.len() - 1]
                .chunks(size)
                .for_each(|ch| cut.add(ch));
            assert!(cut.finish().is_err());
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        let mut c = Check::default();
        c.add(&flipped);
        assert!(c.finish().is_err());
    }
}
