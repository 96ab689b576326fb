//! boa_engine side.

use boa_engine::{object::JsObject, Context, JsString, JsValue, Source};
use serde_json::Value as Json;

pub struct Boa {
    pub ctx: Context,
}

pub type Compiled = JsObject;

impl Boa {
    pub fn new() -> Self {
        Boa {
            ctx: Context::default(),
        }
    }

    pub fn compile(&mut self, expr: &str) -> Compiled {
        let f = self
            .ctx
            .eval(Source::from_bytes(&crate::as_function(expr)))
            .expect("compile");
        f.as_callable().expect("a function")
    }

    pub fn call(&mut self, f: &Compiled, source: &Json) -> Result<Json, String> {
        let src = JsValue::from_json(source, &mut self.ctx).map_err(|e| e.to_string())?;
        let out = f
            .call(&JsValue::undefined(), &[src], &mut self.ctx)
            .map_err(|e| e.to_string())?;
        self.to_json(&out)
    }

    /// Calls several compiled functions on one source (converted once).
    pub fn call_many(&mut self, fs: &[Compiled], source: &Json) -> Result<Vec<Json>, String> {
        let src = JsValue::from_json(source, &mut self.ctx).map_err(|e| e.to_string())?;
        fs.iter()
            .map(|f| {
                let out = f
                    .call(&JsValue::undefined(), std::slice::from_ref(&src), &mut self.ctx)
                    .map_err(|e| e.to_string())?;
                self.to_json(&out)
            })
            .collect()
    }

    pub fn eval_each(&mut self, expr: &str, source: &Json) -> Result<Json, String> {
        let src = JsValue::from_json(source, &mut self.ctx).map_err(|e| e.to_string())?;
        self.ctx
            .global_object()
            .set(JsString::from("source"), src, true, &mut self.ctx)
            .map_err(|e| e.to_string())?;
        let out = self
            .ctx
            .eval(Source::from_bytes(expr))
            .map_err(|e| e.to_string())?;
        self.to_json(&out)
    }

    /// Runs a script to completion (used by the sandbox probes).
    pub fn run(&mut self, script: &str) -> Result<Json, String> {
        let out = self
            .ctx
            .eval(Source::from_bytes(script))
            .map_err(|e| e.to_string())?;
        self.to_json(&out)
    }

    fn to_json(&mut self, v: &JsValue) -> Result<Json, String> {
        v.to_json(&mut self.ctx)
            .map(|o| o.unwrap_or(Json::Null))
            .map_err(|e| e.to_string())
    }
}

impl Default for Boa {
    fn default() -> Self {
        Self::new()
    }
}
