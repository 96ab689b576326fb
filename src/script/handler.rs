//! `/openidm/script`: `?_action=compile` checks a script without running it (`true`, or a
//! 400 with the engine's reason and line); `?_action=eval` runs one and answers its value
//! (administrators only: a script can do anything the gateway can).

use std::sync::Arc;

use serde_json::Value;

use super::{context_of, parse_script, ScriptEngine, ScriptErrorKind};
use crate::crest::{Operation, Request, RequestHandler, ResourceError, Response};

pub struct ScriptHandler {
    pub engine: Arc<ScriptEngine>,
}

#[async_trait::async_trait]
impl RequestHandler for ScriptHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let Operation::Action { name } = &req.op else {
            return Err(req.not_supported());
        };
        if !rest.is_empty() {
            return Err(ResourceError::not_found(format!(
                "Resource 'openidm/{}' not found",
                req.path_string()
            )));
        }
        req.body_object()?;
        let script = parse_script(&req.body, "script").map_err(ResourceError::bad_request)?;
        match name.as_str() {
            "compile" => {
                if let Some(file) = script.file() {
                    let file = file.to_owned();
                    self.engine
                        .run(move |w| w.compile_file(&file))
                        .await?
                        .map_err(ResourceError::bad_request)?;
                }
                Ok(Response::Action(Some(Value::Bool(true))))
            }
            "eval" => {
                if !req.caller.is_admin() {
                    return Err(ResourceError::forbidden(
                        "Only administrators may evaluate scripts",
                    ));
                }
                let mut vars = vec![("context".to_owned(), context_of(&req.caller))];
                // IDM binds the request's additional parameters as variables too.
                for (k, v) in req.params.iter().filter(|(k, _)| !k.starts_with('_')) {
                    vars.push((k.to_owned(), Value::String(v.to_owned())));
                }
                let out = self
                    .engine
                    .eval(&script, vars, &[])
                    .await
                    .map_err(|e| match e.kind {
                        ScriptErrorKind::Syntax => ResourceError::bad_request(e.to_string()),
                        _ => e.to_resource_error(),
                    })?;
                Ok(Response::Action(Some(out.value)))
            }
            other => Err(ResourceError::bad_request(format!(
                "Action {other} is not supported by openidm/script (compile, eval)"
            ))),
        }
    }
}

impl From<super::ScriptError> for ResourceError {
    fn from(e: super::ScriptError) -> Self {
        e.to_resource_error()
    }
}
