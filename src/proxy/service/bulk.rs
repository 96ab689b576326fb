//! The bulk import endpoints outside `/openidm` (as in IDM): `POST /upload/csv/<collection>`
//! streams its multipart body into [`CsvImports::upload`]; `GET
//! /export/csvImportFailures/<id>` writes the failed rows as CSV as they are read. Both are
//! for administrators only, like every write under `/openidm`.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::{respond_error, write_local, RequestCtx};
use crate::auth::Caller;
use crate::crest::{HttpResponse, ResourceError, JSON_CONTENT_TYPE};
use crate::csv_import::upload::UploadRequest;
use crate::csv_import::CsvImports;
use crate::proxy::errors::body_read_error;
use crate::proxy::headers::TRANSACTION_ID;

/// Answers an upload or export request (`upload`: which one), already authenticated.
pub(super) async fn handle(
    csv: Option<&Arc<CsvImports>>,
    session: &mut Session,
    ctx: &RequestCtx,
    upload: bool,
    segments: Vec<Cow<'_, str>>,
    caller: Arc<Caller>,
) -> Result<()> {
    let segments: Vec<String> = segments.into_iter().map(Cow::into_owned).collect();
    let Some(csv) = csv else {
        return respond_error(
            session,
            ctx,
            &ResourceError::not_found("Bulk import is not available"),
        )
        .await;
    };
    if !caller.is_admin() {
        return respond_error(session, ctx, &ResourceError::forbidden("Access denied")).await;
    }
    let method = session.req_header().method.clone();
    let wanted = if upload {
        http::Method::POST
    } else {
        http::Method::GET
    };
    if method != wanted {
        let e = ResourceError::new(
            405,
            format!("Method {method} is not allowed here; use {wanted}"),
        );
        return respond_error(session, ctx, &e).await;
    }
    if upload {
        let resp = match upload_body(csv, session, &segments, caller).await {
            Ok(v) => HttpResponse {
                status: 200,
                content_type: JSON_CONTENT_TYPE,
                etag: None,
                location: None,
                body: serde_json::to_vec(&v).unwrap_or_default(),
                stream: None,
            },
            Err(e) => {
                // The body may not have been read to its end: do not reuse the connection.
                if !session.is_http2() {
                    session.set_keepalive(None);
                }
                HttpResponse::error(&e)
            }
        };
        return write_local(session, ctx, resp).await;
    }
    let [id] = segments.as_slice() else {
        let e = ResourceError::not_found("Use /export/csvImportFailures/<importId>");
        return respond_error(session, ctx, &e).await;
    };
    let mut body = match csv.export_failures(id).await {
        Ok(body) => body,
        Err(e) => return respond_error(session, ctx, &e).await,
    };
    let mut header = ResponseHeader::build(200, Some(6))?;
    header.insert_header(http::header::CONTENT_TYPE, "text/csv;charset=utf-8")?;
    header.insert_header(
        http::header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{id}.csv\""),
    )?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    header.insert_header(TRANSACTION_ID, ctx.txid.clone())?;
    if !session.is_http2() {
        header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    let mut chunk = body.next().await;
    while let Some(current) = chunk {
        chunk = body.next().await;
        session
            .write_response_body(Some(Bytes::from(current)), chunk.is_none())
            .await?;
    }
    Ok(())
}

async fn upload_body(
    csv: &Arc<CsvImports>,
    session: &mut Session,
    segments: &[String],
    caller: Arc<Caller>,
) -> std::result::Result<serde_json::Value, ResourceError> {
    let req = session.req_header();
    let query = req.uri.query().map(str::to_owned);
    let header = |name: http::header::HeaderName| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(http::header::CONTENT_TYPE);
    let content_length = header(http::header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
    // curl sends `Expect: 100-continue` for files over 1 MB and waits a second for it: it is
    // sent when the body is first read, so a request refused before that gets no 100.
    let expects_continue = req.version == http::Version::HTTP_11
        && req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let state = Some((session, expects_continue));
    let body = futures_util::stream::unfold(state, |state| async move {
        let (s, expects_continue) = state?;
        if expects_continue {
            if let Err(e) = s.downstream_session.write_continue_response().await {
                return Some((Err(body_read_error(&e)), None));
            }
        }
        match s.read_request_body().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some((s, false)))),
            Ok(None) => None,
            Err(e) => Some((Err(body_read_error(&e)), None)),
        }
    });
    csv.upload(
        caller,
        UploadRequest {
            collection: segments,
            query: query.as_deref(),
            content_type: content_type.as_deref(),
            content_length,
        },
        body,
    )
    .await
}
