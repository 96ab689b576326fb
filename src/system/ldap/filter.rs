//! Query filters: the native [`QueryFilter`] as an RFC 4515 LDAP filter, values escaped,
//! and the `__NAME__ eq <dn>` form that becomes a base-scope search.

use super::*;

/// Escapes a value for an RFC 4515 filter: `*`, `(`, `)`, `\` and NUL as `\xx`.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn filter_value_text(v: &FilterValue) -> String {
    match v {
        FilterValue::String(s) => s.clone(),
        FilterValue::Integer(i) => i.to_string(),
        FilterValue::Float(x) => x.to_string(),
        FilterValue::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
    }
}

/// Translates a filter on native names to an RFC 4515 LDAP filter. `__UID__` becomes
/// `uid_attribute`, `__NAME__` `entryDN`; other names must be attribute descriptions.
pub fn to_ldap_filter(filter: &QueryFilter, uid_attribute: &str) -> Result<String, String> {
    let attr = |field: &crate::crest::filter::JsonPointer| -> Result<String, String> {
        let name = match field.tokens() {
            [one] => one.as_str(),
            _ => return Err(format!("cannot filter on '{field}': not an LDAP attribute")),
        };
        let name = match name {
            UID => uid_attribute,
            NAME => "entryDN",
            PASSWORD => return Err("cannot filter on the password".into()),
            other => other,
        };
        if name.eq_ignore_ascii_case("dn") {
            return Ok("entryDN".into());
        }
        if !valid_attribute(name) {
            return Err(format!(
                "cannot filter on '{name}': not an LDAP attribute name"
            ));
        }
        Ok(name.to_owned())
    };
    Ok(match filter {
        QueryFilter::True => "(objectClass=*)".into(),
        QueryFilter::False => "(!(objectClass=*))".into(),
        QueryFilter::And(items) if items.is_empty() => "(objectClass=*)".into(),
        QueryFilter::Or(items) if items.is_empty() => "(!(objectClass=*))".into(),
        QueryFilter::And(items) | QueryFilter::Or(items) => {
            let op = if matches!(filter, QueryFilter::And(_)) {
                '&'
            } else {
                '|'
            };
            let mut out = format!("({op}");
            for item in items {
                out.push_str(&to_ldap_filter(item, uid_attribute)?);
            }
            out.push(')');
            out
        }
        QueryFilter::Not(inner) => format!("(!{})", to_ldap_filter(inner, uid_attribute)?),
        QueryFilter::Present(field) => format!("({}=*)", attr(field)?),
        QueryFilter::Compare { field, op, value } => {
            let a = attr(field)?;
            let v = escape_filter_value(&filter_value_text(value));
            match op {
                CompareOp::Eq => format!("({a}={v})"),
                CompareOp::Co if v.is_empty() => format!("({a}=*)"),
                CompareOp::Co => format!("({a}=*{v}*)"),
                CompareOp::Sw if v.is_empty() => format!("({a}=*)"),
                CompareOp::Sw => format!("({a}={v}*)"),
                CompareOp::Ge => format!("({a}>={v})"),
                CompareOp::Le => format!("({a}<={v})"),
                CompareOp::Gt => format!("(&({a}>={v})(!({a}={v})))"),
                CompareOp::Lt => format!("(&({a}<={v})(!({a}={v})))"),
            }
        }
        QueryFilter::In { field, values } => {
            let a = attr(field)?;
            match values.as_slice() {
                [] => "(!(objectClass=*))".into(),
                [one] => format!("({a}={})", escape_filter_value(one)),
                many => {
                    let mut out = "(|".to_owned();
                    for v in many {
                        out.push_str(&format!("({a}={})", escape_filter_value(v)));
                    }
                    out.push(')');
                    out
                }
            }
        }
    })
}

/// `(&a b …)` of the non-empty parts, or the single part.
pub(super) fn and_filters(parts: Vec<String>) -> String {
    let parts: Vec<String> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    match parts.len() {
        0 => "(objectClass=*)".into(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => format!("(&{})", parts.concat()),
    }
}

/// If the filter pins `__NAME__` (the DN) with `eq` at its top, the DN and the rest.
pub(super) fn split_dn_filter(filter: &QueryFilter) -> Option<(String, Option<QueryFilter>)> {
    let is_dn_eq = |f: &QueryFilter| match f {
        QueryFilter::Compare {
            field,
            op: CompareOp::Eq,
            value: FilterValue::String(dn),
        } if field.tokens().len() == 1 && field.tokens()[0] == NAME => Some(dn.clone()),
        _ => None,
    };
    if let Some(dn) = is_dn_eq(filter) {
        return Some((dn, None));
    }
    if let QueryFilter::And(items) = filter {
        let pos = items.iter().position(|f| is_dn_eq(f).is_some())?;
        let dn = is_dn_eq(&items[pos])?;
        let rest: Vec<QueryFilter> = items
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != pos)
            .map(|(_, f)| f.clone())
            .collect();
        let rest = match rest.len() {
            0 => None,
            1 => rest.into_iter().next(),
            _ => Some(QueryFilter::And(rest)),
        };
        return Some((dn, rest));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crest::filter::JsonPointer;

    fn cmp(field: &str, op: CompareOp, v: &str) -> QueryFilter {
        QueryFilter::Compare {
            field: JsonPointer::parse(field),
            op,
            value: FilterValue::String(v.into()),
        }
    }

    #[test]
    fn filter_translation_table() {
        use CompareOp::*;
        let cases: Vec<(QueryFilter, &str)> = vec![
            (cmp("cn", Eq, "Bob"), "(cn=Bob)"),
            (cmp("cn", Co, "ob"), "(cn=*ob*)"),
            (cmp("cn", Sw, "Bo"), "(cn=Bo*)"),
            (cmp("cn", Ge, "b"), "(cn>=b)"),
            (cmp("cn", Le, "b"), "(cn<=b)"),
            (cmp("cn", Gt, "b"), "(&(cn>=b)(!(cn=b)))"),
            (cmp("cn", Lt, "b"), "(&(cn<=b)(!(cn=b)))"),
            (cmp("cn", Co, ""), "(cn=*)"),
            (QueryFilter::Present(JsonPointer::parse("mail")), "(mail=*)"),
            (QueryFilter::True, "(objectClass=*)"),
            (QueryFilter::False, "(!(objectClass=*))"),
            (cmp("__UID__", Eq, "abc"), "(entryUUID=abc)"),
            (cmp("__NAME__", Eq, "uid=a,dc=x"), "(entryDN=uid=a,dc=x)"),
            // Escaping of every special character.
            (
                cmp("cn", Eq, "a*b(c)d\\e\0f"),
                "(cn=a\\2ab\\28c\\29d\\5ce\\00f)",
            ),
            (cmp("cn", Co, "*)(uid=*"), "(cn=*\\2a\\29\\28uid=\\2a*)"),
            (cmp("cn", Eq, "Åsa Ünal"), "(cn=Åsa Ünal)"),
            (
                QueryFilter::And(vec![cmp("sn", Eq, "x"), cmp("cn", Eq, "y")]),
                "(&(sn=x)(cn=y))",
            ),
            (
                QueryFilter::Or(vec![cmp("sn", Eq, "x"), cmp("cn", Eq, "y")]),
                "(|(sn=x)(cn=y))",
            ),
            (QueryFilter::Not(Box::new(cmp("sn", Eq, "x"))), "(!(sn=x))"),
            (
                QueryFilter::In {
                    field: JsonPointer::parse("uid"),
                    values: vec!["a".into(), "b)".into()],
                },
                "(|(uid=a)(uid=b\\29))",
            ),
            (
                QueryFilter::In {
                    field: JsonPointer::parse("uid"),
                    values: vec![],
                },
                "(!(objectClass=*))",
            ),
            (
                QueryFilter::Compare {
                    field: JsonPointer::parse("uidNumber"),
                    op: Ge,
                    value: FilterValue::Integer(42),
                },
                "(uidNumber>=42)",
            ),
            (
                QueryFilter::Compare {
                    field: JsonPointer::parse("flag"),
                    op: Eq,
                    value: FilterValue::Bool(true),
                },
                "(flag=TRUE)",
            ),
        ];
        for (filter, want) in cases {
            let got = to_ldap_filter(&filter, "entryUUID").unwrap();
            assert_eq!(got, want, "{filter:?}");
            assert!(ldap3::parse_filter(&got).is_ok(), "{got} must parse");
        }
    }

    #[test]
    fn filter_rejects_bad_attribute_names() {
        for field in ["a=b)(x", "x y", "a/b", "__PASSWORD__"] {
            let f = QueryFilter::Present(JsonPointer(vec![field.into()]));
            assert!(to_ldap_filter(&f, "entryUUID").is_err(), "{field}");
        }
        let nested = QueryFilter::Present(JsonPointer::parse("/a/b"));
        assert!(to_ldap_filter(&nested, "entryUUID").is_err());
    }

    #[test]
    fn dn_filter_becomes_a_base_search() {
        let f = cmp("__NAME__", CompareOp::Eq, "uid=a,dc=x");
        assert_eq!(split_dn_filter(&f), Some(("uid=a,dc=x".into(), None)));
        let f = QueryFilter::And(vec![
            cmp("cn", CompareOp::Eq, "y"),
            cmp("__NAME__", CompareOp::Eq, "uid=a,dc=x"),
        ]);
        assert_eq!(
            split_dn_filter(&f),
            Some(("uid=a,dc=x".into(), Some(cmp("cn", CompareOp::Eq, "y"))))
        );
        assert_eq!(split_dn_filter(&cmp("cn", CompareOp::Eq, "y")), None);
    }
}
