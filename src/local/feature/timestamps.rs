//! The `password/timestamps` feature: user properties `passwordLastChangedTime` and
//! `passwordExpirationTime`, indexed strings (ISO-8601 UTC) that can be queried.
//!
//! Identity Cloud's directory computes them; here `passwordLastChangedTime` is kept by a
//! property `onStore` trigger installed with it: a write that sets the password (which
//! arrives in clear, before it is hashed or encrypted) stamps the time; any other write
//! keeps the stored value. `passwordExpirationTime` is declared for whoever manages
//! password ageing (a script, a mapping): the gateway has no maximum password age to
//! compute it from.

use serde_json::{json, Map, Value};

use super::{no_user_type, user_types, Feature};
use crate::crest::ResourceError;
use crate::local::schema::{insert_property, property};

pub(super) const FEATURE: Feature = Feature {
    id: "password/timestamps",
    installed,
    problems,
    must_be_empty,
    install,
};

const LAST_CHANGED: &str = "passwordLastChangedTime";
const EXPIRATION: &str = "passwordExpirationTime";

/// The trigger stamping a password change (a stored password is a `$crypto` object).
const STAMP: &str = "typeof object.password === 'string' ? new Date().toISOString() : property";

fn installed(doc: &Map<String, Value>) -> bool {
    let users = user_types(doc);
    !users.is_empty()
        && users.iter().all(|(user, _)| {
            property(doc, user, LAST_CHANGED).is_some() && property(doc, user, EXPIRATION).is_some()
        })
}

fn problems(doc: &Map<String, Value>) -> Vec<String> {
    let users = user_types(doc);
    if users.is_empty() {
        return vec![no_user_type()];
    }
    users
        .iter()
        .flat_map(|(user, _)| {
            [LAST_CHANGED, EXPIRATION]
                .into_iter()
                .filter(|p| property(doc, user, p).is_some())
                .map(move |p| format!("config/managed: managed/{user} {p} must not already exist."))
        })
        .collect()
}

fn must_be_empty(_: &Map<String, Value>) -> Vec<String> {
    Vec::new()
}

fn install(doc: &mut Map<String, Value>) -> Result<(), ResourceError> {
    for (user, _) in user_types(doc) {
        let mut last = timestamp("Password Last Changed Time");
        last["onStore"] = json!({"type": "text/javascript", "source": STAMP});
        insert_property(doc, &user, LAST_CHANGED, last)?;
        insert_property(
            doc,
            &user,
            EXPIRATION,
            timestamp("Password Expiration Time"),
        )?;
    }
    Ok(())
}

fn timestamp(title: &str) -> Value {
    json!({
        "title": title, "description": title, "type": "string", "viewable": false,
        "searchable": true, "userEditable": false, "isPersonal": false,
        "usageDescription": ""
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::parse_managed;

    #[test]
    fn installs_searchable_timestamps_with_a_trigger_that_parses() {
        let mut doc = json!({"objects": [{"name": "user", "schema": {"properties": {
            "password": {"type": "string", "secureHash": {"algorithm": "ARGON2"}}}}}]})
        .as_object()
        .cloned()
        .unwrap();
        assert!(!installed(&doc) && problems(&doc).is_empty());
        install(&mut doc).unwrap();
        let schema = parse_managed(&Value::Object(doc.clone())).unwrap();
        let user = &schema.types["user"];
        let last = user.property(LAST_CHANGED).unwrap();
        assert!(last.searchable && last.hooks.on_store.is_some());
        assert!(user.property(EXPIRATION).unwrap().searchable);
        assert!(installed(&doc));
        assert_eq!(problems(&doc).len(), 2);
    }
}
