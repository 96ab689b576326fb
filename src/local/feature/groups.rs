//! The `groups` feature: a `<realm>_group` type (`group` for self-hosted IDM's `user`)
//! whose `members` are the reverse of the user type's `groups`, and the users'
//! `effectiveGroups` (a virtual property over `groups`), as IDM's documentation defines
//! them (Identity Cloud's feature; the self-hosted "Groups" sample setup).

use serde_json::{json, Map, Value};

use super::{no_user_type, user_types, Feature};
use crate::crest::ResourceError;
use crate::local::schema::{insert_property, property, type_schema};

pub(super) const FEATURE: Feature = Feature {
    id: "groups",
    installed,
    problems,
    must_be_empty,
    install,
};

fn group_type(prefix: &str) -> String {
    format!("{prefix}group")
}

fn installed(doc: &Map<String, Value>) -> bool {
    let users = user_types(doc);
    !users.is_empty()
        && users.iter().all(|(user, prefix)| {
            property(doc, user, "groups").is_some()
                && type_schema(doc, &group_type(prefix)).is_some()
        })
}

fn problems(doc: &Map<String, Value>) -> Vec<String> {
    let users = user_types(doc);
    if users.is_empty() {
        return vec![no_user_type()];
    }
    let mut problems = Vec::new();
    for (user, prefix) in &users {
        for prop in ["groups", "effectiveGroups"] {
            if property(doc, user, prop).is_some() {
                problems.push(format!(
                    "config/managed: managed/{user} {prop} must not already exist."
                ));
            }
        }
        let group = group_type(prefix);
        if type_schema(doc, &group).is_some() {
            problems.push(format!(
                "config/managed: managed/{group} must not already exist."
            ));
        }
    }
    problems
}

fn must_be_empty(doc: &Map<String, Value>) -> Vec<String> {
    user_types(doc)
        .iter()
        .map(|(_, prefix)| group_type(prefix))
        .collect()
}

fn install(doc: &mut Map<String, Value>) -> Result<(), ResourceError> {
    for (user, prefix) in user_types(doc) {
        let group = group_type(&prefix);
        insert_property(doc, &user, "groups", groups(&group))?;
        insert_property(doc, &user, "effectiveGroups", effective_groups())?;
        let objects = doc
            .get_mut("objects")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| ResourceError::internal("managed.json has no objects"))?;
        objects.push(group_object(&group, &user, &prefix));
    }
    Ok(())
}

/// `_ref` and `_refProperties` of either side.
fn ref_properties(title: &str) -> Value {
    json!({
        "_ref": {"description": "References a relationship from a managed object",
                 "type": "string"},
        "_refProperties": {"description": "Supports metadata within the relationship",
            "type": "object", "title": title,
            "properties": {
                "_id": {"description": "_refProperties object ID", "type": "string"},
                "_grantType": {"description": "Grant Type", "type": "string",
                               "label": "Grant Type"}}}
    })
}

/// The user's `groups`.
fn groups(group: &str) -> Value {
    json!({
        "description": "Groups", "title": "Groups", "viewable": true, "userEditable": false,
        "returnByDefault": false, "usageDescription": "", "isPersonal": false,
        "type": "array", "relationshipGrantTemporalConstraintsEnforced": false,
        "items": {
            "type": "relationship", "title": "Groups Items",
            "reverseRelationship": true, "reversePropertyName": "members",
            "notifySelf": true, "validate": true,
            "properties": ref_properties("Groups Items _refProperties"),
            "resourceCollection": [{
                "path": format!("managed/{group}"), "label": "Group",
                "conditionalAssociationField": "condition",
                "query": {"queryFilter": "true", "fields": ["name"], "sortKeys": ["name"]}
            }]
        }
    })
}

/// The user's `effectiveGroups`: computed from `groups` (IDM's `queryConfig`).
fn effective_groups() -> Value {
    json!({
        "description": "Effective Groups", "title": "Effective Groups", "viewable": false,
        "returnByDefault": true, "isVirtual": true, "usageDescription": "",
        "isPersonal": false, "type": "array",
        "queryConfig": {"referencedRelationshipFields": ["groups"]},
        "items": {"type": "object", "title": "Effective Groups Items"}
    })
}

/// `alpha_` → `Alpha realm - Group`; no realm → `Group`.
fn title(prefix: &str) -> String {
    let realm = prefix.trim_end_matches('_');
    let mut chars = realm.chars();
    match chars.next() {
        Some(first) => format!("{}{} realm - Group", first.to_uppercase(), chars.as_str()),
        None => "Group".to_owned(),
    }
}

/// The group type.
fn group_object(group: &str, user: &str, prefix: &str) -> Value {
    json!({
        "name": group,
        "schema": {
            "$schema": "http://forgerock.org/json-schema#",
            "type": "object",
            "title": title(prefix),
            "icon": "fa-group",
            "mat-icon": "group",
            "viewable": true,
            "order": ["_id", "name", "description", "condition", "members"],
            "required": ["name"],
            "properties": group_properties(user)
        }
    })
}

fn group_properties(user: &str) -> Value {
    json!({
        "_id": {"description": "Group ID", "type": "string", "viewable": false,
                "searchable": false, "userEditable": false,
                "usageDescription": "", "isPersonal": false},
        "name": {"title": "Name", "description": "Group Name", "type": "string",
                 "viewable": true, "searchable": true},
        "description": {"title": "Description", "description": "Group Description",
                        "type": "string", "viewable": true, "searchable": true,
                        "userEditable": false},
        "condition": {"description": "A filter for conditionally assigned members",
                      "title": "Condition", "viewable": false, "searchable": false,
                      "isConditional": true, "type": "string"},
        "members": members(user)
    })
}

/// The group's `members`, the reverse of the user's `groups`.
fn members(user: &str) -> Value {
    json!({
        "description": "Group Members", "title": "Members", "viewable": true,
        "searchable": false, "userEditable": false, "policies": [],
        "returnByDefault": false, "type": "array",
        "items": {
            "type": "relationship", "title": "Group Members Items",
            "reverseRelationship": true, "reversePropertyName": "groups",
            "validate": true,
            "properties": ref_properties("Group Members Items _refProperties"),
            "resourceCollection": [{
                "notify": true, "conditionalAssociation": true,
                "path": format!("managed/{user}"), "label": "User",
                "query": {"queryFilter": "true", "fields": ["userName", "givenName", "sn"]}
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::parse_managed;

    #[test]
    fn installs_on_every_realm_and_the_result_loads() {
        let mut doc = json!({"objects": [
            {"name": "alpha_user", "schema": {"properties": {}}},
            {"name": "bravo_user", "schema": {"order": ["userName"], "properties": {}}},
            {"name": "alpha_role", "schema": {"properties": {}}},
        ]})
        .as_object()
        .cloned()
        .unwrap();
        assert!(!installed(&doc) && problems(&doc).is_empty());
        assert_eq!(must_be_empty(&doc), ["alpha_group", "bravo_group"]);
        install(&mut doc).unwrap();
        assert!(installed(&doc));
        let schema = parse_managed(&Value::Object(doc.clone())).unwrap();
        let bravo = &schema.types["bravo_user"];
        assert_eq!(
            bravo.relation("groups").unwrap().collections[0].path,
            "managed/bravo_group"
        );
        assert!(bravo.is_virtual("effectiveGroups"));
        assert_eq!(
            type_schema(&doc, "alpha_group").unwrap()["title"],
            "Alpha realm - Group"
        );
        assert_eq!(problems(&doc).len(), 6, "{:?}", problems(&doc));
        let none = json!({"objects": [{"name": "device"}]});
        assert_eq!(problems(none.as_object().unwrap()), vec![no_user_type()]);
    }
}
