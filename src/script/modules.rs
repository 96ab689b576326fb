//! `require(id)`: CommonJS modules, as IDM's scripts use them (`require('lib/lodash')`,
//! `require('auth/customAuthz')`).
//!
//! An id names a file of the project: `script/<id>.js`, then `<id>.js` (IDM's `project-script`
//! and `project` script sources), read and reloaded like any script file (a changed file is
//! a new module version; one that does not compile keeps its last good version). Built in,
//! when the project has no such file: `lib/lodash` (lodash 4, as IDM's defaults ship it).
//! Ids are relative paths of letters, digits, `_`, `-` and `.`; absolute paths and `..` are
//! refused. A module runs once per runtime and version with `module`, `exports` and
//! `require` bound (cycles see partial exports, as in Node); its `module.exports` is what
//! `require` answers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use rquickjs::{Ctx, Exception, Function, Value};

use super::files::RECHECK;
use super::runner::{compile, run_compiled};
use super::Shared;

/// Modules built into the gateway: (id, file name in messages, text).
const BUILTIN: [(&str, &str, &str); 1] = [(
    "lib/lodash",
    "lib/lodash.js (built in: lodash 4.18.1)",
    include_str!("defaults/lodash.min.js"),
)];

/// Longest module id.
const MAX_ID: usize = 256;

/// Where an id resolved.
#[derive(Clone)]
enum Source {
    File(PathBuf),
    Builtin(usize),
}

/// Installs `require` in `ctx`.
pub fn install<'js>(ctx: &Ctx<'js>, shared: Arc<Shared>) -> rquickjs::Result<()> {
    let resolved: Rc<RefCell<HashMap<String, (Instant, Source)>>> = Default::default();
    let lookup = {
        let shared = shared.clone();
        move |ctx: &Ctx<'js>, id: &str| -> rquickjs::Result<Source> {
            let now = Instant::now();
            if let Some((at, source)) = resolved.borrow().get(id) {
                if now.duration_since(*at) < RECHECK {
                    return Ok(source.clone());
                }
            }
            let source = resolve(&shared, id).map_err(|m| Exception::throw_message(ctx, &m))?;
            let mut map = resolved.borrow_mut();
            if map.len() > 1024 {
                map.clear();
            }
            map.insert(id.to_owned(), (now, source.clone()));
            Ok(source)
        }
    };
    let lookup = Rc::new(lookup);
    // The cache key of the module's current version.
    let key = {
        let lookup = lookup.clone();
        let shared = shared.clone();
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, id: String| -> rquickjs::Result<String> {
                match lookup(&ctx, &id)? {
                    Source::Builtin(i) => Ok(format!("builtin:{}", BUILTIN[i].0)),
                    Source::File(file) => {
                        let (_, hash) = file_text(&ctx, &shared, &file)?;
                        Ok(format!("{}#{hash:x}", file.display()))
                    }
                }
            },
        )?
    };
    // The module's code as a function of (exports, module, require).
    let load = Function::new(
        ctx.clone(),
        move |ctx: Ctx<'js>, id: String| -> rquickjs::Result<Value<'js>> {
            let (name, text): (String, Arc<str>) = match lookup(&ctx, &id)? {
                Source::Builtin(i) => (BUILTIN[i].1.to_owned(), Arc::from(BUILTIN[i].2)),
                Source::File(file) => {
                    let (text, _) = file_text(&ctx, &shared, &file)?;
                    (file.display().to_string(), text)
                }
            };
            // On the first line, so the module's lines keep their numbers.
            let wrapped = format!("(function (exports, module, require) {{{text}\n}})");
            let code = compile(&ctx, &name, &wrapped)?;
            run_compiled(&ctx, &code)
        },
    )?;
    let make: Function = ctx.eval(
        r#"(function (key, load) {
            var cache = Object.create(null);
            function require(id) {
                if (typeof id !== 'string') { throw new TypeError('require: the module id must be a string'); }
                var k = key(id);
                var m = cache[k];
                if (m) { return m.exports; }
                m = { id: id, exports: {} };
                cache[k] = m;
                try {
                    load(id).call(m.exports, m.exports, m, require);
                } catch (e) {
                    delete cache[k];
                    throw e;
                }
                return m.exports;
            }
            return require;
        })"#,
    )?;
    let require: Function = make.call((key, load))?;
    ctx.globals().set("require", require)
}

/// The current good text of a module file, or a thrown error saying why there is none.
fn file_text(
    ctx: &Ctx<'_>,
    shared: &Shared,
    file: &std::path::Path,
) -> rquickjs::Result<(Arc<str>, u64)> {
    let name: Arc<str> = Arc::from(file.display().to_string());
    shared
        .files
        .text(&name, file)
        .map_err(|e| Exception::throw_message(ctx, &format!("require: {}", e.message)))
}

/// Resolves `id` to a project file or a built-in module.
fn resolve(shared: &Shared, id: &str) -> Result<Source, String> {
    let clean = id.strip_suffix(".js").unwrap_or(id);
    let valid = !clean.is_empty()
        && clean.len() <= MAX_ID
        && clean.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        });
    if !valid {
        return Err(format!(
            "require: '{}' is not a module id (a relative path of letters, digits, '_', '-' and '.'; no '..')",
            id.escape_debug()
        ));
    }
    let project = shared.files.project();
    for rel in [format!("script/{clean}.js"), format!("{clean}.js")] {
        if project.join(&rel).is_file() {
            return Ok(Source::File(PathBuf::from(rel)));
        }
    }
    if let Some(i) = BUILTIN.iter().position(|(b, _, _)| *b == clean) {
        return Ok(Source::Builtin(i));
    }
    Err(format!(
        "require: no module '{clean}' (looked for script/{clean}.js and {clean}.js in the project directory)"
    ))
}
