//! Schema: the server's subschema (RFC 4512 descriptions) as IDM object type schemas.

use super::*;

/// The parts of an objectClass/attributeType description the schema needs.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct SchemaDef {
    pub(super) names: Vec<String>,
    pub(super) sup: Vec<String>,
    pub(super) must: Vec<String>,
    pub(super) may: Vec<String>,
    pub(super) single_value: bool,
    pub(super) no_user_modification: bool,
    pub(super) syntax: Option<String>,
}

pub(super) fn schema_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' || c == ')' || c == '$' {
            out.push(c.to_string());
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut s = String::new();
            for c in chars.by_ref() {
                if c == '\'' {
                    break;
                }
                s.push(c);
            }
            out.push(format!("'{s}"));
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '(' || c == ')' || c == '$' || c == '\'' {
                    break;
                }
                s.push(c);
                chars.next();
            }
            out.push(s);
        }
    }
    out
}

/// Parses `( oid NAME 'x' SUP y MUST ( a $ b ) MAY c SINGLE-VALUE … )`.
pub(super) fn parse_schema_def(text: &str) -> SchemaDef {
    let tokens = schema_tokens(text);
    let mut def = SchemaDef::default();
    let mut i = 0;
    // One value or a parenthesised list; quoted strings lose their leading quote mark.
    let list = |i: &mut usize| -> Vec<String> {
        let mut out = Vec::new();
        let clean = |t: &str| t.trim_start_matches('\'').to_owned();
        match tokens.get(*i).map(String::as_str) {
            Some("(") => {
                *i += 1;
                while let Some(t) = tokens.get(*i) {
                    *i += 1;
                    match t.as_str() {
                        ")" => break,
                        "$" => {}
                        t => out.push(clean(t)),
                    }
                }
            }
            Some(t) => {
                out.push(clean(t));
                *i += 1;
            }
            None => {}
        }
        out
    };
    while i < tokens.len() {
        let t = tokens[i].clone();
        i += 1;
        match t.as_str() {
            "NAME" => def.names = list(&mut i),
            "SUP" => def.sup = list(&mut i),
            "MUST" => def.must = list(&mut i),
            "MAY" => def.may = list(&mut i),
            "SYNTAX" => def.syntax = list(&mut i).into_iter().next(),
            "SINGLE-VALUE" => def.single_value = true,
            "NO-USER-MODIFICATION" => def.no_user_modification = true,
            _ => {}
        }
    }
    def
}

/// Binary syntaxes (octet string, JPEG, certificates, …).
pub(super) fn binary_syntax(syntax: &str) -> bool {
    let oid = syntax.split('{').next().unwrap_or("");
    matches!(
        oid,
        "1.3.6.1.4.1.1466.115.121.1.5"
            | "1.3.6.1.4.1.1466.115.121.1.8"
            | "1.3.6.1.4.1.1466.115.121.1.9"
            | "1.3.6.1.4.1.1466.115.121.1.10"
            | "1.3.6.1.4.1.1466.115.121.1.28"
            | "1.3.6.1.4.1.1466.115.121.1.40"
    )
}

pub(super) struct Subschema {
    pub(super) classes: HashMap<String, SchemaDef>,
    pub(super) attributes: HashMap<String, SchemaDef>,
}

impl Subschema {
    pub(super) fn parse(object_classes: &[String], attribute_types: &[String]) -> Self {
        let index = |defs: &[String]| {
            let mut map = HashMap::new();
            for text in defs {
                let def = parse_schema_def(text);
                for n in &def.names {
                    map.insert(n.to_lowercase(), def.clone());
                }
            }
            map
        };
        Subschema {
            classes: index(object_classes),
            attributes: index(attribute_types),
        }
    }

    /// MUST and MAY attributes of `classes` and their superclasses, in order.
    pub(super) fn attributes_of(&self, classes: &[String]) -> (Vec<String>, Vec<String>) {
        let (mut must, mut may) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        let mut todo: Vec<String> = classes.to_vec();
        let mut order = Vec::new();
        while let Some(c) = todo.pop() {
            if !seen.insert(c.to_lowercase()) || seen.len() > 1000 {
                continue;
            }
            if let Some(def) = self.classes.get(&c.to_lowercase()) {
                order.push(def.clone());
                todo.extend(def.sup.iter().cloned());
            }
        }
        order.reverse();
        let push = |list: &mut Vec<String>, a: &str| {
            if !list.iter().any(|x: &String| x.eq_ignore_ascii_case(a)) {
                list.push(a.to_owned());
            }
        };
        for def in &order {
            for a in &def.must {
                push(&mut must, a);
            }
        }
        for def in &order {
            for a in &def.may {
                if !must.iter().any(|m| m.eq_ignore_ascii_case(a)) {
                    push(&mut may, a);
                }
            }
        }
        (must, may)
    }

    /// An attribute type, following SUP for the syntax.
    pub(super) fn attribute(&self, name: &str) -> (bool, bool, bool) {
        let mut def = self.attributes.get(&name.to_lowercase());
        let single = def.is_some_and(|d| d.single_value);
        let read_only = def.is_some_and(|d| d.no_user_modification);
        let mut binary = false;
        for _ in 0..10 {
            let Some(d) = def else { break };
            if let Some(s) = &d.syntax {
                binary = binary_syntax(s);
                break;
            }
            def = d
                .sup
                .first()
                .and_then(|s| self.attributes.get(&s.to_lowercase()));
        }
        (single, read_only, binary)
    }
}

impl LdapConnector {
    pub(super) fn object_type_schema(
        &self,
        schema: &Subschema,
        native: &str,
        classes: &[String],
    ) -> Value {
        let (must, may) = schema.attributes_of(classes);
        let mut props = Map::new();
        props.insert(
            "dn".into(),
            json!({"type": "string", "nativeName": NAME, "nativeType": "string", "required": true}),
        );
        for (attr, required) in must
            .iter()
            .map(|a| (a, true))
            .chain(may.iter().map(|a| (a, false)))
        {
            if attr.eq_ignore_ascii_case("objectClass") || props.contains_key(attr.as_str()) {
                continue;
            }
            let (single, read_only, binary) = schema.attribute(attr);
            if attr.eq_ignore_ascii_case(&self.cfg.password_attribute) {
                props.insert(
                    attr.clone(),
                    json!({"type": "string", "nativeName": PASSWORD,
                           "nativeType": "JAVA_TYPE_GUARDEDSTRING",
                           "flags": ["NOT_READABLE", "NOT_RETURNED_BY_DEFAULT"]}),
                );
                continue;
            }
            let native_type = if binary {
                "JAVA_TYPE_BYTE_ARRAY"
            } else {
                "string"
            };
            let mut p = if single {
                json!({"type": "string", "nativeName": attr, "nativeType": native_type})
            } else {
                json!({"type": "array", "items": {"type": "string", "nativeType": native_type},
                       "nativeName": attr, "nativeType": native_type})
            };
            if required {
                p["required"] = Value::Bool(true);
            }
            if read_only {
                p["flags"] = json!(["NOT_CREATABLE", "NOT_UPDATEABLE"]);
            }
            props.insert(attr.clone(), p);
        }
        json!({
            "$schema": "http://json-schema.org/draft-03/schema",
            "id": native,
            "type": "object",
            "nativeType": native,
            "properties": props,
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_descriptions() {
        let d = parse_schema_def(
            "( 2.5.6.6 NAME 'person' DESC 'RFC2256: a person' SUP top STRUCTURAL MUST ( sn $ cn ) MAY ( userPassword $ telephoneNumber ) )",
        );
        assert_eq!(d.names, vec!["person"]);
        assert_eq!(d.sup, vec!["top"]);
        assert_eq!(d.must, vec!["sn", "cn"]);
        assert_eq!(d.may, vec!["userPassword", "telephoneNumber"]);
        let a = parse_schema_def(
            "( 0.9.2342.19200300.100.1.1 NAME ( 'uid' 'userid' ) EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{256} SINGLE-VALUE )",
        );
        assert_eq!(a.names, vec!["uid", "userid"]);
        assert!(a.single_value);
        assert_eq!(
            a.syntax.as_deref(),
            Some("1.3.6.1.4.1.1466.115.121.1.15{256}")
        );
        // Garbage never panics.
        let _ = parse_schema_def("( ( ' $ NAME");
        let _ = parse_schema_def("");
    }
}
