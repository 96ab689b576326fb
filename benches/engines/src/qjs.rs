//! rquickjs (QuickJS-ng) side.

use rquickjs::{Array, Context, Ctx, Function, Object, Persistent, Runtime, Type, Value};
use serde_json::Value as Json;

pub struct Qjs {
    pub rt: Runtime,
    pub ctx: Context,
}

pub type Compiled = Persistent<Function<'static>>;

impl Qjs {
    pub fn new() -> Self {
        let rt = Runtime::new().expect("runtime");
        let ctx = Context::full(&rt).expect("context");
        Qjs { rt, ctx }
    }

    pub fn compile(&self, expr: &str) -> Compiled {
        self.ctx.with(|ctx| {
            let f: Function = ctx.eval(crate::as_function(expr)).expect("compile");
            Persistent::save(&ctx, f)
        })
    }

    pub fn call(&self, f: &Compiled, source: &Json) -> Result<Json, String> {
        self.ctx.with(|ctx| {
            let f = f.clone().restore(&ctx).map_err(|e| e.to_string())?;
            let src = to_js(&ctx, source).map_err(|e| e.to_string())?;
            let out: Value = f.call((src,)).map_err(|e| caught(&ctx, e))?;
            from_js(&out).map_err(|e| e.to_string())
        })
    }

    /// Calls several compiled functions on one source (converted once).
    pub fn call_many(&self, fs: &[Compiled], source: &Json) -> Result<Vec<Json>, String> {
        self.ctx.with(|ctx| {
            let src = to_js(&ctx, source).map_err(|e| e.to_string())?;
            fs.iter()
                .map(|f| {
                    let f = f.clone().restore(&ctx).map_err(|e| e.to_string())?;
                    let out: Value = f.call((src.clone(),)).map_err(|e| caught(&ctx, e))?;
                    from_js(&out).map_err(|e| e.to_string())
                })
                .collect()
        })
    }

    pub fn eval_each(&self, expr: &str, source: &Json) -> Result<Json, String> {
        self.ctx.with(|ctx| {
            let src = to_js(&ctx, source).map_err(|e| e.to_string())?;
            ctx.globals()
                .set("source", src)
                .map_err(|e| e.to_string())?;
            let out: Value = ctx.eval(expr).map_err(|e| caught(&ctx, e))?;
            from_js(&out).map_err(|e| e.to_string())
        })
    }

    /// Runs a script to completion (used by the sandbox probes).
    pub fn run(&self, script: &str) -> Result<Json, String> {
        self.ctx.with(|ctx| {
            let out: Value = ctx.eval(script).map_err(|e| caught(&ctx, e))?;
            from_js(&out).map_err(|e| e.to_string())
        })
    }
}

impl Default for Qjs {
    fn default() -> Self {
        Self::new()
    }
}

/// The JS exception behind an `Error::Exception`, as text.
fn caught(ctx: &Ctx<'_>, e: rquickjs::Error) -> String {
    if matches!(e, rquickjs::Error::Exception) {
        let v = ctx.catch();
        if let Some(ex) = v.as_exception() {
            return ex.message().unwrap_or_else(|| format!("{ex:?}"));
        }
        return format!("{v:?}");
    }
    e.to_string()
}

pub fn to_js<'js>(ctx: &Ctx<'js>, v: &Json) -> rquickjs::Result<Value<'js>> {
    Ok(match v {
        Json::Null => Value::new_null(ctx.clone()),
        Json::Bool(b) => Value::new_bool(ctx.clone(), *b),
        Json::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
            Some(i) => Value::new_int(ctx.clone(), i),
            None => Value::new_float(ctx.clone(), n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        Json::Array(a) => {
            let arr = Array::new(ctx.clone())?;
            for (i, x) in a.iter().enumerate() {
                arr.set(i, to_js(ctx, x)?)?;
            }
            arr.into_value()
        }
        Json::Object(m) => {
            let o = Object::new(ctx.clone())?;
            for (k, x) in m {
                o.set(k.as_str(), to_js(ctx, x)?)?;
            }
            o.into_value()
        }
    })
}

pub fn from_js(v: &Value<'_>) -> rquickjs::Result<Json> {
    Ok(match v.type_of() {
        Type::Bool => Json::Bool(v.as_bool().unwrap_or(false)),
        Type::Int => Json::from(v.as_int().unwrap_or(0)),
        Type::Float => serde_json::Number::from_f64(v.as_float().unwrap_or(f64::NAN))
            .map_or(Json::Null, Json::Number),
        Type::String => Json::String(v.as_string().map(|s| s.to_string()).transpose()?.unwrap_or_default()),
        Type::Array => {
            let mut out = Vec::new();
            if let Some(a) = v.as_array() {
                for x in a.iter::<Value>() {
                    out.push(from_js(&x?)?);
                }
            }
            Json::Array(out)
        }
        Type::Object => {
            let mut out = serde_json::Map::new();
            if let Some(o) = v.as_object() {
                for p in o.props::<String, Value>() {
                    let (k, x) = p?;
                    out.insert(k, from_js(&x)?);
                }
            }
            Json::Object(out)
        }
        _ => Json::Null,
    })
}
