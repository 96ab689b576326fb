//! One import, in the background: the spool file is read a batch of rows at a time on a
//! blocking thread, and each row is written through the router as the uploading caller:
//! a query on the `uniqueProperty` values, then a create (no match), a patch of the
//! columns that differ (one match; `unchanged` when none does) or a failure (several).
//! A failing row is recorded with its reason and never stops the rows after it. Progress
//! (counts, failures) is saved after every batch; a cancel is seen between rows.

use std::cell::Cell;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::columns::{self, Column};
use super::meta::{self, Meta};
use super::{Control, CsvImports, FAILURES};
use crate::crest::{Caller, Operation, QueryParams, Request, ResourceError, Response, Router};
use crate::repo::WriteOp;

/// Rows read, imported and saved together.
const BATCH: usize = 200;
/// Longest row (bytes): a quote left open would otherwise read the rest of the file as
/// one field.
pub const MAX_ROW_BYTES: u64 = 1 << 20;

/// What an import needs to run.
pub(super) struct Job {
    pub id: String,
    /// `managed/<type>`.
    pub resource: String,
    pub columns: Vec<Column>,
    /// Indexes of the `uniqueProperty` columns.
    pub unique: Vec<usize>,
    pub spool: PathBuf,
    pub caller: Arc<Caller>,
}

/// One data row of the file (`number` counts from 1 after the header).
pub(super) struct Row {
    pub number: u64,
    pub fields: Vec<String>,
    /// Why the row cannot be imported as read (width, encoding, length).
    pub error: Option<String>,
}

enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// A `Read` that fails once more than its budget is read (reset at each row).
struct Capped<R> {
    inner: R,
    budget: Rc<Cell<u64>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.budget.get();
        if left == 0 {
            return Err(std::io::Error::other("row too long"));
        }
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.budget.set(left - n as u64);
        Ok(n)
    }
}

type CsvReader = csv::Reader<Capped<std::fs::File>>;

fn open(path: &Path) -> Result<(CsvReader, Rc<Cell<u64>>), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open the upload: {e}"))?;
    let budget = Rc::new(Cell::new(MAX_ROW_BYTES));
    let reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(Capped {
            inner: file,
            budget: budget.clone(),
        });
    Ok((reader, budget))
}

fn too_long(e: &csv::Error) -> bool {
    matches!(e.kind(), csv::ErrorKind::Io(io) if io.to_string() == "row too long")
}

/// The header row of a spooled upload.
pub(super) fn read_header(path: &Path) -> Result<Vec<String>, String> {
    let (mut reader, _) = open(path)?;
    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => record
            .iter()
            .map(|f| {
                String::from_utf8(f.to_vec())
                    .map(|s| s.trim().to_owned())
                    .map_err(|_| "The CSV header is not UTF-8 text".to_owned())
            })
            .collect(),
        Ok(false) => Err("The CSV file is empty: it needs a header row".into()),
        Err(e) if too_long(&e) => Err(format!(
            "The CSV header is longer than {MAX_ROW_BYTES} bytes"
        )),
        Err(e) => Err(format!("The CSV header cannot be read: {e}")),
    }
}

/// Reads the data rows of `path`, handing each to `each` until it answers false. A row
/// that cannot be read at all (too long) is handed over with its error and ends the file.
fn read_rows(path: &Path, width: usize, mut each: impl FnMut(Row) -> bool) -> Result<(), String> {
    let (mut reader, budget) = open(path)?;
    let mut record = csv::ByteRecord::new();
    let mut number = 0u64;
    let mut header = true;
    loop {
        budget.set(MAX_ROW_BYTES);
        let read = reader.read_byte_record(&mut record);
        if std::mem::take(&mut header) {
            if let Ok(true) = read {
                continue;
            }
        }
        match read {
            Ok(false) => return Ok(()),
            Ok(true) => {
                number += 1;
                if !each(to_row(number, &record, width)) {
                    return Ok(());
                }
            }
            Err(e) => {
                number += 1;
                let error = if too_long(&e) {
                    format!("Row is longer than {MAX_ROW_BYTES} bytes (a quote left open?); the rows after it cannot be read")
                } else {
                    format!("Row cannot be read: {e}; the rows after it cannot be read")
                };
                each(Row {
                    number,
                    fields: Vec::new(),
                    error: Some(error),
                });
                return Ok(());
            }
        }
    }
}

fn to_row(number: u64, record: &csv::ByteRecord, width: usize) -> Row {
    let mut error = None;
    let fields: Vec<String> = record
        .iter()
        .map(|f| match std::str::from_utf8(f) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                error = Some("Row is not UTF-8 text".to_owned());
                String::from_utf8_lossy(f).into_owned()
            }
        })
        .collect();
    if fields.len() != width {
        error = Some(format!(
            "Row has {} fields; the header has {width}",
            fields.len()
        ));
    }
    Row {
        number,
        fields,
        error,
    }
}

impl CsvImports {
    /// Runs `job` on the imports' runtime; its record exists.
    pub(super) fn spawn(self: &Arc<Self>, job: Job) {
        let control = Arc::new(Control::default());
        self.lock_running().insert(job.id.clone(), control.clone());
        let this = self.clone();
        self.runtime.spawn(async move {
            if let Err(e) = this.run(&job, &control).await {
                tracing::error!(import = %job.id, error = %e, "CSV import failed");
                // Never left looking like it runs: ended, as an interrupted import.
                if let Ok((o, mut m)) = meta::read(this.repo.as_ref(), &job.id).await {
                    m.interrupt(job.spool.exists());
                    let _ = meta::save(this.repo.as_ref(), &job.id, Some(&o.rev), &m).await;
                }
            }
            this.lock_running().remove(&job.id);
        });
    }

    async fn run(&self, job: &Job, control: &Control) -> Result<(), ResourceError> {
        let repo = self.repo.as_ref();
        let (_, mut m) = meta::read(repo, &job.id).await?;
        let width = job.columns.len();
        let path = job.spool.clone();
        m.total = tokio::task::spawn_blocking(move || {
            let mut n = 0u64;
            read_rows(&path, width, |_| {
                n += 1;
                true
            })
            .map(|_| n)
        })
        .await
        .map_err(|e| ResourceError::internal(format!("the import stopped: {e}")))?
        .map_err(ResourceError::internal)?;
        m.temp_records = m.total;
        meta::save(repo, &job.id, Some(&self.current_rev(&job.id).await?), &m).await?;

        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Row>>(2);
        let path = job.spool.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let sent = read_rows(&path, width, |row| {
                batch.push(row);
                if batch.len() < BATCH {
                    return true;
                }
                tx.blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                    .is_ok()
            });
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            sent
        });

        let mut stopped_by_shutdown = false;
        while let Some(batch) = rx.recv().await {
            let Some(router) = self.router() else {
                stopped_by_shutdown = true;
                break;
            };
            let lanes = split_into_lanes(batch, &job.unique);
            let done = futures_util::future::join_all(
                lanes
                    .into_iter()
                    .map(|rows| run_lane(&router, job, control, rows)),
            )
            .await;
            let mut failures = Vec::new();
            for (number, outcome) in done.into_iter().flatten() {
                match outcome {
                    Ok(Outcome::Created) => m.created += 1,
                    Ok(Outcome::Updated) => m.updated += 1,
                    Ok(Outcome::Unchanged) => m.unchanged += 1,
                    Err((fields, e)) => {
                        m.failure += 1;
                        failures.push(failure(&job.id, number, fields, &e));
                    }
                }
            }
            m.cancelled = control.cancelled.load(Ordering::SeqCst);
            m.success = m.created + m.updated + m.unchanged;
            m.temp_records = m.pending();
            self.save_progress(job, &m, failures).await?;
            if m.cancelled {
                break;
            }
        }
        drop(rx);
        if let Ok(Err(e)) = reader.await {
            tracing::warn!(import = %job.id, error = %e, "CSV import: reading the upload failed");
        }
        if stopped_by_shutdown {
            m.interrupt(true);
        } else {
            m.end = Some(meta::now());
            if m.pending() == 0 {
                let _ = tokio::fs::remove_file(&job.spool).await;
                m.temp_records = 0;
                m.purged_temp_records = true;
            }
        }
        self.save_progress(job, &m, Vec::new()).await?;
        tracing::info!(
            import = %job.id,
            total = m.total,
            created = m.created,
            updated = m.updated,
            unchanged = m.unchanged,
            failure = m.failure,
            cancelled = m.cancelled,
            "CSV import ended"
        );
        Ok(())
    }

    async fn current_rev(&self, id: &str) -> Result<String, ResourceError> {
        Ok(meta::read(self.repo.as_ref(), id).await?.0.rev)
    }

    /// Saves the failed rows of a batch, then the counts.
    async fn save_progress(
        &self,
        job: &Job,
        m: &Meta,
        failures: Vec<WriteOp>,
    ) -> Result<(), ResourceError> {
        if !failures.is_empty() {
            for r in self.repo.batch(failures).await {
                if let Err(e) = r {
                    tracing::error!(import = %job.id, error = %e, "cannot save a failed row");
                }
            }
        }
        meta::save(
            self.repo.as_ref(),
            &job.id,
            Some(&self.current_rev(&job.id).await?),
            m,
        )
        .await?;
        Ok(())
    }
}

/// Rows imported at once: rows with the same `uniqueProperty` values go to the same
/// lane, in file order, so a later row of the file always wins over an earlier one.
const LANES: usize = 8;

type Done = (u64, Result<Outcome, (Vec<String>, ResourceError)>);

fn split_into_lanes(batch: Vec<Row>, unique: &[usize]) -> Vec<Vec<Row>> {
    use std::hash::{Hash, Hasher};
    let mut lanes: Vec<Vec<Row>> = (0..LANES).map(|_| Vec::new()).collect();
    for row in batch {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for &i in unique {
            row.fields.get(i).hash(&mut h);
        }
        lanes[(h.finish() % LANES as u64) as usize].push(row);
    }
    lanes
}

/// Imports the rows of one lane in order, until a cancel.
async fn run_lane(router: &Router, job: &Job, control: &Control, rows: Vec<Row>) -> Vec<Done> {
    let mut done = Vec::with_capacity(rows.len());
    for row in rows {
        if control.cancelled.load(Ordering::SeqCst) {
            break;
        }
        let outcome = match row.error {
            Some(e) => Err(ResourceError::bad_request(e)),
            None => import_row(router, job, &row.fields).await,
        };
        done.push((row.number, outcome.map_err(|e| (row.fields, e))));
    }
    done
}

/// The stored form of a failed row.
fn failure(import: &str, number: u64, fields: Vec<String>, e: &ResourceError) -> WriteOp {
    let mut content = Map::new();
    content.insert("importId".into(), json!(import));
    content.insert("recordNumber".into(), json!(number));
    content.insert("row".into(), json!(fields));
    content.insert("error".into(), e.to_json());
    WriteOp::Put {
        resource: FAILURES.into(),
        id: failure_id(import, number),
        content,
    }
}

/// Failed rows sort by id in row order.
pub(super) fn failure_id(import: &str, number: u64) -> String {
    format!("{import}-{number:012}")
}

/// Imports one row through the router.
async fn import_row(
    router: &Router,
    job: &Job,
    fields: &[String],
) -> Result<Outcome, ResourceError> {
    let mut values = Vec::with_capacity(fields.len());
    for (column, cell) in job.columns.iter().zip(fields) {
        values.push(columns::convert(column, cell).map_err(ResourceError::bad_request)?);
    }
    let mut clauses = Vec::with_capacity(job.unique.len());
    for &i in &job.unique {
        let column = &job.columns[i];
        let value = values[i].as_ref().ok_or_else(|| {
            ResourceError::bad_request(format!(
                "Column '{}' (a uniqueProperty) has no value",
                column.name
            ))
        })?;
        clauses.push(format!("{} eq {value}", column.pointer()));
    }
    let mut params = QueryParams::filter(clauses.join(" and "));
    params.page_size = 2;
    let mut query = Request::new(
        Operation::Query(Box::new(params)),
        &job.resource,
        job.caller.clone(),
    );
    query.fields = vec![top_level_fields(&job.columns)];
    let found = match router.handle(&query).await? {
        Response::Query(q) => q.results,
        _ => return Err(ResourceError::internal("unexpected answer to a query")),
    };
    match found.as_slice() {
        [] => {
            let mut object = Map::new();
            for (column, value) in job.columns.iter().zip(values) {
                if let Some(value) = value {
                    columns::insert(&mut object, &column.path, value);
                }
            }
            let create = Request::new(
                Operation::Create { new_id: None },
                &job.resource,
                job.caller.clone(),
            )
            .with_body(Value::Object(object));
            router.handle(&create).await?;
            Ok(Outcome::Created)
        }
        [existing] => {
            let mut ops = Vec::new();
            for (column, value) in job.columns.iter().zip(values) {
                let current = columns::get(existing, &column.path);
                match (value, current) {
                    (Some(v), Some(c)) if &v == c => {}
                    (Some(v), _) => ops.push(json!({
                        "operation": "replace", "field": column.pointer(), "value": v
                    })),
                    (None, Some(_)) => ops.push(json!({
                        "operation": "remove", "field": column.pointer()
                    })),
                    (None, None) => {}
                }
            }
            if ops.is_empty() {
                return Ok(Outcome::Unchanged);
            }
            let id = existing.get("_id").and_then(Value::as_str).unwrap_or("");
            let rev = existing
                .get("_rev")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let mut patch =
                Request::new(Operation::Patch { rev }, &job.resource, job.caller.clone())
                    .with_body(Value::Array(ops));
            patch.path.push(id.to_owned());
            router.handle(&patch).await?;
            Ok(Outcome::Updated)
        }
        more => Err(ResourceError::new(
            409,
            format!(
                "{} or more objects of {} have this row's uniqueProperty values",
                more.len(),
                job.resource
            ),
        )),
    }
}

/// `_fields` of the query: the columns' top-level properties.
fn top_level_fields(columns: &[Column]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for c in columns {
        if !names.contains(&c.path[0].as_str()) {
            names.push(&c.path[0]);
        }
    }
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rows_of(text: &[u8], width: usize) -> Vec<(u64, Vec<String>, Option<String>)> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text).unwrap();
        let mut out = Vec::new();
        read_rows(f.path(), width, |r| {
            out.push((r.number, r.fields, r.error));
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn rows_are_numbered_and_bad_ones_say_why() {
        let rows = rows_of(b"a,b\n1,2\n3\n4,5,6\n\"x,y\",z\n\xff,1\n", 2);
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0], (1, vec!["1".into(), "2".into()], None));
        assert!(rows[1].2.as_deref().unwrap().contains("1 fields"));
        assert!(rows[2].2.as_deref().unwrap().contains("3 fields"));
        assert_eq!(rows[3].1, ["x,y", "z"]);
        assert_eq!(rows[3].2, None);
        assert_eq!(rows[4].2.as_deref(), Some("Row is not UTF-8 text"));
    }

    #[test]
    fn an_open_quote_ends_the_file_with_a_failure_not_a_huge_field() {
        let mut text = b"a,b\n1,2\n\"open,3\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', (MAX_ROW_BYTES as usize) * 2));
        let rows = rows_of(&text, 2);
        assert_eq!(rows.len(), 2);
        assert!(rows[1].2.as_deref().unwrap().contains("longer than"));
    }

    #[test]
    fn header_is_read_and_trimmed() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"\xef\xbb\xbfuserName, mail\nx,y\n").unwrap();
        assert_eq!(read_header(f.path()).unwrap(), ["userName", "mail"]);
        let empty = tempfile::NamedTempFile::new().unwrap();
        assert!(read_header(empty.path()).unwrap_err().contains("empty"));
    }
}
