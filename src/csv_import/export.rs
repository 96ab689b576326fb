//! `GET /export/csvImportFailures/<importId>`: the failed rows as CSV, the import's header
//! plus `_importError` (the CREST error of the row, as JSON), in row order, read from the
//! store as they are written out (memory does not grow with the failures).

use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::handler::failures_of;
use super::meta;
use super::{CsvImports, FAILURES};
use crate::crest::ResourceError;
use crate::repo::{ObjectStream, RepoQuery};

/// Bytes gathered before a chunk is handed to the socket.
const CHUNK: usize = 64 * 1024;

/// The CSV body, chunk by chunk; an error ends it (the status is already sent).
pub type CsvBody = BoxStream<'static, Vec<u8>>;

impl CsvImports {
    /// The failures CSV of import `id`: 404 when there is no such import or no failed row.
    pub async fn export_failures(&self, id: &str) -> Result<CsvBody, ResourceError> {
        let (_, m) = meta::read(self.repo.as_ref(), id).await?;
        if m.failure == 0 || m.purged_error_records {
            return Err(ResourceError::not_found(format!(
                "Import '{id}' has no failed records"
            )));
        }
        let f = failures_of(id);
        let rows = self
            .repo
            .query_stream(FAILURES, RepoQuery::all(&f, &[]))
            .await?;
        let mut header = m.header.clone();
        header.push("_importError".into());
        let width = m.header.len();
        let state = Some((rows, csv_line(&header)));
        Ok(
            futures_util::stream::unfold(state, move |state| async move {
                let (mut rows, mut buf) = state?;
                let mut done = false;
                while buf.len() < CHUNK {
                    match rows.next().await {
                        Some(Ok(o)) => buf.extend(failure_line(&o.content, width)),
                        Some(Err(e)) => {
                            tracing::error!(error = %e, "reading failed import rows");
                            done = true;
                            break;
                        }
                        None => {
                            done = true;
                            break;
                        }
                    }
                }
                if buf.is_empty() {
                    return None;
                }
                let next: Option<(ObjectStream, Vec<u8>)> = (!done).then(|| (rows, Vec::new()));
                Some((buf, next))
            })
            .boxed(),
        )
    }
}

/// One failed row: its fields (as many as the header has) and the error.
fn failure_line(content: &serde_json::Map<String, serde_json::Value>, width: usize) -> Vec<u8> {
    let mut fields: Vec<String> = content
        .get("row")
        .and_then(|r| r.as_array())
        .map(|r| {
            r.iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    fields.resize(width, String::new());
    let error = content
        .get("error")
        .map(|e| e.to_string())
        .unwrap_or_default();
    fields.push(error);
    csv_line(&fields)
}

fn csv_line(fields: &[String]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let _ = w.write_record(fields);
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failed_rows_are_padded_to_the_header_and_quoted() {
        let content = json!({"row": ["a,b", "c"], "error": {"code": 400, "message": "x \"y\""}});
        let line = failure_line(content.as_object().unwrap(), 3);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "\"a,b\",c,,\"{\"\"code\"\":400,\"\"message\"\":\"\"x \\\"\"y\\\"\"\"\"}\"\r\n"
        );
    }
}
