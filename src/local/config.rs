//! `/openidm/config`: list, query, read, write, patch and delete the conf files, with
//! IDM's ids, as CREST resources.
//!
//! * `_rev` (and `ETag`) is [`config::revision`] of the file's bytes: a hand edit changes
//!   it, and `If-Match`/`If-None-Match` are checked against the file as it is on disk.
//! * Every write (PUT, create-only PUT, PATCH, DELETE) reads the current file, checks the
//!   caller's precondition, computes and validates the new document and writes it under
//!   one lock ([`Gateway::edit_conf_file`]): a compare-and-swap, so two concurrent patches
//!   never lose an update. The decision itself is the pure [`decide`].
//! * A write is validated by [`validate_conf`], the check a load (at start-up or reload)
//!   makes of the same file: a refused write is a 400 listing every problem, and nothing
//!   is written. Writes are stored atomically and made live at once.
//! * A well-formed id that no file holds is a 404 (IDM: the config does not exist); a
//!   malformed one (`../x`, `a/b/c`) is a 400.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::config::{self, factory_of, file_for_config_id, is_config_id, pid_for};
use crate::crest::patch::PatchOperation;
use crate::crest::{
    filter, patch, Operation, QueryKind, QueryResponse, Request, RequestHandler, ResourceError,
    ResourceResponse, Response,
};
use crate::state::{validate_conf, ConfEdit, Gateway};

pub struct ConfigHandler(pub Arc<Gateway>);

#[async_trait::async_trait]
impl RequestHandler for ConfigHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let gw = &self.0;
        let id = match (&req.op, rest) {
            // PUT + If-None-Match: * names the new config in its last segment: a single
            // config (`config/<pid>`) or a factory one (`config/<factory>/<name>`).
            (
                Operation::Create {
                    new_id: Some(new_id),
                },
                [],
            ) => new_id.clone(),
            (
                Operation::Create {
                    new_id: Some(new_id),
                },
                _,
            ) => format!("{}/{new_id}", rest.join("/")),
            (Operation::Read { .. }, []) => return Ok(list(gw)),
            (Operation::Query(q), []) => return query(gw, &q.kind),
            (_, []) => return Err(req.not_supported()),
            _ => rest.join("/"),
        };
        if !is_config_id(&id) {
            return Err(ResourceError::bad_request(format!(
                "'{id}' is not a valid configuration id"
            )));
        }
        let change = match &req.op {
            Operation::Read { if_none_match } => return read(gw, &id, if_none_match.as_deref()),
            Operation::Create { .. } => Change::Create {
                doc: req.body_object()?.clone(),
            },
            Operation::Update { rev, upsert } => Change::Put {
                doc: req.body_object()?.clone(),
                rev: rev.clone(),
                upsert: *upsert,
            },
            Operation::Patch { rev } => Change::Patch {
                ops: patch::parse_patch(&req.body)?,
                rev: rev.clone(),
            },
            Operation::Delete { rev } => Change::Delete { rev: rev.clone() },
            _ => return Err(req.not_supported()),
        };
        let Some(file_name) = file_for_config_id(&id) else {
            // Well-formed but no file can hold it (a `-` in the factory part would read
            // back as another id): it cannot exist, and cannot be created.
            return Err(match change {
                Change::Create { .. } | Change::Put { .. } => ResourceError::bad_request(format!(
                    "Configuration id '{id}' cannot be stored: a config file name splits \
                         at its first '-', so the part before any '/' must not contain one"
                )),
                _ => not_found(&id),
            });
        };
        let edit_id = id.clone();
        let done = gw
            .edit_conf_file(file_name, move |current| {
                decide(&edit_id, current.as_deref(), change)
            })
            .await
            .map_err(|e| {
                ResourceError::internal(format!("Configuration {id} could not be written: {e}"))
            })??;
        audit_change(gw, req, &id, &done);
        Ok(match done {
            Done::Written { doc, rev, created } => {
                let resource = ResourceResponse::new(id, Some(rev), doc);
                if created {
                    Response::Created(resource)
                } else {
                    Response::Resource(resource)
                }
            }
            Done::Deleted { doc, rev } => Response::Resource(ResourceResponse::new(id, rev, doc)),
        })
    }
}

/// The `config` audit event of a write that was done (secrets removed by the event).
fn audit_change(gw: &Gateway, req: &Request, id: &str, done: &Done) {
    let operation = match (&req.op, done) {
        (_, Done::Deleted { .. }) => "delete",
        (_, Done::Written { created: true, .. }) => "create",
        (Operation::Patch { .. }, _) => "patch",
        _ => "update",
    };
    let (before, after, rev) = match done {
        Done::Written { doc, rev, .. } => {
            (None, Some(Value::Object(doc.clone())), Some(rev.as_str()))
        }
        Done::Deleted { doc, rev } => (Some(Value::Object(doc.clone())), None, rev.as_deref()),
    };
    gw.audit.object_change(
        "config",
        crate::audit::ObjectChange {
            txid: &crate::audit::current_transaction(),
            caller: &req.caller,
            object_id: &format!("config/{id}"),
            operation,
            before,
            after,
            revision: rev,
            password_written: false,
        },
    );
}

/// A write the caller asked for.
#[derive(Debug)]
enum Change {
    /// `PUT` + `If-None-Match: *` (or `_action=create`): only when absent.
    Create {
        doc: Map<String, Value>,
    },
    /// `PUT`: `rev` from `If-Match`; `upsert`: may create when absent.
    Put {
        doc: Map<String, Value>,
        rev: Option<String>,
        upsert: bool,
    },
    Patch {
        ops: Vec<PatchOperation>,
        rev: Option<String>,
    },
    Delete {
        rev: Option<String>,
    },
}

/// What a write did.
#[derive(Debug, PartialEq)]
enum Done {
    Written {
        doc: Map<String, Value>,
        rev: String,
        created: bool,
    },
    Deleted {
        doc: Map<String, Value>,
        rev: Option<String>,
    },
}

/// Decides a write of config `id` whose file holds `current` (`None`: absent): the
/// precondition, the new document, its validation and its bytes. Pure, so the caller can
/// run it under the write lock between reading the file and writing it.
fn decide(
    id: &str,
    current: Option<&[u8]>,
    change: Change,
) -> Result<(ConfEdit, Done), ResourceError> {
    let current_rev = current.map(config::revision);
    let check_rev = |expected: &Option<String>| match (expected, &current_rev) {
        (Some(_), None) => Err(not_found(id)),
        (Some(expected), Some(rev)) if expected != rev => Err(ResourceError::new(
            412,
            format!("Revision {expected} does not match the current revision of config/{id}"),
        )),
        _ => Ok(()),
    };
    let doc = match change {
        Change::Create { doc } => {
            if current.is_some() {
                return Err(ResourceError::new(
                    412,
                    format!("Configuration {id} already exists"),
                ));
            }
            doc
        }
        Change::Put { doc, rev, upsert } => {
            if current.is_none() && (rev.is_some() || !upsert) {
                return Err(not_found(id));
            }
            check_rev(&rev)?;
            doc
        }
        Change::Patch { ops, rev } => {
            check_rev(&rev)?;
            let mut doc = parse_current(id, current)?;
            patch::apply_patch(&mut doc, &ops, true)?;
            match doc {
                Value::Object(doc) => doc,
                _ => {
                    return Err(ResourceError::bad_request(
                        "A configuration must be a JSON object",
                    ))
                }
            }
        }
        Change::Delete { rev } => {
            if current.is_none() {
                return Err(not_found(id));
            }
            check_rev(&rev)?;
            let doc = match parse_current(id, current) {
                Ok(Value::Object(doc)) => doc,
                // A file that is not a JSON object can still be deleted.
                _ => Map::new(),
            };
            return Ok((
                ConfEdit::Delete,
                Done::Deleted {
                    doc: without_meta(doc),
                    rev: current_rev,
                },
            ));
        }
    };
    let doc = without_meta(doc);
    let (bytes, rev) = encode(id, &doc)?;
    Ok((
        ConfEdit::Write(bytes),
        Done::Written {
            doc,
            rev,
            created: current.is_none(),
        },
    ))
}

/// Config `id` as written to disk (pretty JSON, a final newline) and its revision, once
/// [`validate_conf`] accepts it: a refused document is a 400 listing every problem.
fn encode(id: &str, doc: &Map<String, Value>) -> Result<(Vec<u8>, String), ResourceError> {
    let doc_value = Value::Object(doc.clone());
    validate_conf(id, &doc_value).map_err(|problems| {
        ResourceError::bad_request(format!(
            "Configuration {id} is invalid: {}",
            problems.join("; ")
        ))
        .with_detail(json!({ "problems": problems }))
    })?;
    let mut bytes = serde_json::to_vec_pretty(&doc_value).map_err(|e| {
        ResourceError::internal(format!("Configuration {id} cannot be serialised: {e}"))
    })?;
    bytes.push(b'\n');
    let rev = config::revision(&bytes);
    Ok((bytes, rev))
}

/// Changes one part of config `id` (a service editing `managed.json` on behalf of its
/// caller): `edit` changes the document as it is on disk, under the conf write lock, and
/// the result is validated, written atomically and made live, as a `PUT` of the whole
/// config would be. An absent config is a 404, one that is not JSON a 409; an `Err` from
/// `edit` or a document that does not validate (400) writes nothing.
pub(crate) async fn edit_document<T: Send + 'static>(
    gw: &Arc<Gateway>,
    id: &str,
    edit: impl FnOnce(&mut Map<String, Value>) -> Result<T, ResourceError> + Send + 'static,
) -> Result<T, ResourceError> {
    let file_name = file_for_config_id(id).ok_or_else(|| not_found(id))?;
    let edit_id = id.to_owned();
    gw.edit_conf_file(file_name, move |current| {
        let mut doc = match parse_current(&edit_id, current.as_deref())? {
            Value::Object(doc) => without_meta(doc),
            _ => {
                return Err(ResourceError::new(
                    409,
                    format!("Configuration {edit_id} is not a JSON object on disk"),
                ))
            }
        };
        let out = edit(&mut doc)?;
        let (bytes, _) = encode(&edit_id, &doc)?;
        Ok((ConfEdit::Write(bytes), out))
    })
    .await
    .map_err(|e| ResourceError::internal(format!("Configuration {id} could not be written: {e}")))?
}

/// The current file as JSON: a 404 when absent, a 409 when it is not JSON (a hand edit
/// broke it: it can be replaced with a PUT, not patched).
fn parse_current(id: &str, current: Option<&[u8]>) -> Result<Value, ResourceError> {
    let bytes = current.ok_or_else(|| not_found(id))?;
    serde_json::from_slice(bytes).map_err(|e| {
        ResourceError::new(
            409,
            format!("Configuration {id} is not valid JSON on disk ({e}); replace it with a PUT"),
        )
    })
}

/// The document without `_id`/`_rev`, which the file name and the bytes carry.
fn without_meta(mut doc: Map<String, Value>) -> Map<String, Value> {
    doc.remove("_id");
    doc.remove("_rev");
    doc
}

fn list(gw: &Gateway) -> Response {
    let live = gw.live();
    let configurations: Vec<Value> = live
        .conf
        .files
        .iter()
        .map(|(id, file)| {
            let mut entry = Map::new();
            entry.insert("_id".into(), json!(id));
            entry.insert("pid".into(), json!(pid_for(id)));
            entry.insert("factoryPid".into(), json!(factory_of(id)));
            if !file.is_valid() {
                // Not in IDM's listing: tells the operator why a file is not live.
                entry.insert("problems".into(), json!(file.problems));
            }
            Value::Object(entry)
        })
        .collect();
    Response::Json(200, json!({"_id": "", "configurations": configurations}))
}

/// `GET /openidm/config?_queryFilter=…`: the config documents (with `_id`) that match.
fn query(gw: &Gateway, kind: &QueryKind) -> Result<Response, ResourceError> {
    let f = filter::of_listing_query(kind, "Configurations")?;
    let live = gw.live();
    let results = live
        .conf
        .files
        .iter()
        .filter_map(|(id, file)| match &file.raw {
            Some(Value::Object(doc)) => Some(
                ResourceResponse::new(id, Some(file.rev.clone()), without_meta(doc.clone()))
                    .to_json(),
            ),
            _ => None,
        })
        .filter(|doc| f.matches(doc))
        .collect();
    Ok(Response::Query(QueryResponse {
        results,
        ..Default::default()
    }))
}

fn not_found(id: &str) -> ResourceError {
    ResourceError::not_found(format!("No configuration exists for id {id}"))
}

fn read(gw: &Gateway, id: &str, if_none_match: Option<&str>) -> Result<Response, ResourceError> {
    let live = gw.live();
    let file = live.conf.files.get(id).ok_or_else(|| not_found(id))?;
    match &file.raw {
        Some(Value::Object(doc)) => {
            if if_none_match == Some(file.rev.as_str()) {
                return Ok(Response::NotModified {
                    rev: file.rev.clone(),
                });
            }
            Ok(Response::Resource(ResourceResponse::new(
                id,
                Some(file.rev.clone()),
                without_meta(doc.clone()),
            )))
        }
        _ => Err(ResourceError::internal(format!(
            "Configuration {id} cannot be read: {}",
            file.problems.join("; ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn status(r: Result<(ConfEdit, Done), ResourceError>) -> u16 {
        match r {
            Ok((ConfEdit::Write(_), Done::Written { created: true, .. })) => 201,
            Ok(_) => 200,
            Err(e) => e.code,
        }
    }

    #[test]
    fn preconditions_follow_crest() {
        let file = b"{\"a\": 1}\n".as_slice();
        let rev = config::revision(file);
        let other = Some("other".to_owned());
        let put = |rev: Option<String>, upsert: bool| Change::Put {
            doc: obj(json!({"a": 2})),
            rev,
            upsert,
        };
        let patch = |rev: Option<String>| Change::Patch {
            ops: patch::parse_patch(&json!([{"operation": "replace", "field": "/a", "value": 3}]))
                .unwrap(),
            rev,
        };
        let cases: Vec<(&str, Option<&[u8]>, Change, u16)> = vec![
            (
                "create absent",
                None,
                Change::Create {
                    doc: obj(json!({})),
                },
                201,
            ),
            (
                "create present",
                Some(file),
                Change::Create {
                    doc: obj(json!({})),
                },
                412,
            ),
            ("put upsert absent", None, put(None, true), 201),
            (
                "put if-match absent",
                None,
                put(Some(rev.clone()), true),
                404,
            ),
            ("put no upsert absent", None, put(None, false), 404),
            ("put any present", Some(file), put(None, true), 200),
            (
                "put right rev",
                Some(file),
                put(Some(rev.clone()), true),
                200,
            ),
            ("put wrong rev", Some(file), put(other.clone(), true), 412),
            ("patch absent", None, patch(None), 404),
            ("patch right rev", Some(file), patch(Some(rev.clone())), 200),
            ("patch wrong rev", Some(file), patch(other.clone()), 412),
            ("patch broken file", Some(b"{".as_slice()), patch(None), 409),
            ("delete absent", None, Change::Delete { rev: None }, 404),
            (
                "delete wrong rev",
                Some(file),
                Change::Delete { rev: other },
                412,
            ),
            (
                "delete right rev",
                Some(file),
                Change::Delete { rev: Some(rev) },
                200,
            ),
        ];
        for (name, current, change, expected) in cases {
            assert_eq!(status(decide("x.y", current, change)), expected, "{name}");
        }
    }

    #[test]
    fn written_bytes_carry_the_answered_revision_and_no_meta() {
        let (edit, done) = decide(
            "x.y",
            None,
            Change::Put {
                doc: obj(json!({"_id": "x.y", "_rev": "r", "a": 1})),
                rev: None,
                upsert: true,
            },
        )
        .unwrap();
        let ConfEdit::Write(bytes) = edit else {
            panic!("not a write")
        };
        let Done::Written { doc, rev, .. } = done else {
            panic!("not written")
        };
        assert_eq!(rev, config::revision(&bytes));
        assert_eq!(Value::Object(doc), json!({"a": 1}));
        let on_disk: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(on_disk, json!({"a": 1}));
    }

    #[test]
    fn invalid_documents_are_refused_with_every_problem() {
        let err = decide(
            "gateway",
            None,
            Change::Put {
                doc: obj(json!({"lisen": "x"})),
                rev: None,
                upsert: true,
            },
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains("unknown field `lisen`"),
            "{}",
            err.message
        );
    }
}
