//! `external/email?_action=send` and `?_action=sendTemplate`: outbound mail over SMTP
//! (`lettre`, rustls), configured by `external.email.json` as in IDM:
//!
//! ```json
//! { "host": "smtp.example.com", "port": 587, "from": "idm@example.com",
//!   "auth": {"enable": true, "username": "idm", "password": "…"},
//!   "starttls": {"enable": true}, "ssl": {"enable": false},
//!   "timeout": 300000, "connectiontimeout": 300000, "writetimeout": 300000 }
//! ```
//!
//! `ssl.enable`: TLS from the first byte (SMTPS); `starttls.enable`: STARTTLS, required
//! (a server that does not offer it is refused rather than sent the mail and password in
//! clear). TLS trusts the platform roots plus `certs/*.pem`. The password may be a
//! `$crypto` envelope or a `&{…}` reference. Timeouts are milliseconds; lettre has one
//! timeout for connecting and each exchange, the smallest of the three (default 30 s).
//! `debug`, `smtpProperties` and `threadPoolSize` are accepted and ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Mailboxes, MessageBuilder};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{json, Map, Value};

use super::template::Template;
use super::{show, substituted, LastGood, EMAIL_CONFIG, TEMPLATE_FACTORY};
use crate::config::Trust;
use crate::crest::{Request, RequestHandler, ResourceError, Response};
use crate::crypto::{is_encrypted, Crypto};
use crate::state::Gateway;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `external.email.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    /// `auth.enable`: user name and password (a string or a `$crypto` envelope).
    pub auth: Option<(String, Value)>,
    pub starttls: bool,
    pub ssl: bool,
    pub from: String,
    pub timeout: Duration,
}

impl EmailConfig {
    pub fn parse(raw: &Value) -> Result<Self, Vec<String>> {
        let doc = substituted(raw)?;
        let Some(o) = doc.as_object() else {
            return Err(vec!["the file must contain a JSON object".into()]);
        };
        let mut problems = Vec::new();
        let host = match o.get("host").and_then(Value::as_str) {
            Some(h) if !h.trim().is_empty() => h.trim().to_owned(),
            _ => {
                problems.push("host: the SMTP server's host name is required".into());
                String::new()
            }
        };
        let enabled = |key: &str, problems: &mut Vec<String>| match o.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Object(m)) => match m.get("enable") {
                None | Some(Value::Null) => false,
                Some(v) => flag(v).unwrap_or_else(|| {
                    problems.push(format!("{key}/enable: must be true or false"));
                    false
                }),
            },
            Some(_) => {
                problems.push(format!("{key}: must be an object"));
                false
            }
        };
        let ssl = enabled("ssl", &mut problems);
        let starttls = enabled("starttls", &mut problems);
        let port = match o.get("port") {
            None | Some(Value::Null) => Some(if ssl { 465 } else { 25 }),
            Some(v) => number(v)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|p| *p > 0),
        }
        .unwrap_or_else(|| {
            problems.push("port: must be a port number".into());
            0
        });
        let auth = if enabled("auth", &mut problems) {
            let a = &o["auth"];
            let username = a.get("username").and_then(Value::as_str).unwrap_or("");
            if username.is_empty() {
                problems.push("auth/username: required when auth/enable is true".into());
            }
            let password = a.get("password").cloned().unwrap_or(Value::Null);
            if !(password.is_string() || is_encrypted(&password)) {
                problems.push(
                    "auth/password: must be a string or a $crypto value when auth/enable is true"
                        .into(),
                );
            }
            Some((username.to_owned(), password))
        } else {
            None
        };
        let from = match o.get("from") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => {
                if !s.is_empty() && s.parse::<Mailbox>().is_err() {
                    problems.push(format!("from: '{s}' is not an email address"));
                }
                s.clone()
            }
            Some(_) => {
                problems.push("from: must be a string".into());
                String::new()
            }
        };
        let mut timeout = DEFAULT_TIMEOUT;
        for key in ["timeout", "connectiontimeout", "writetimeout"] {
            match o.get(key) {
                None | Some(Value::Null) => {}
                Some(v) => match number(v).filter(|ms| *ms > 0) {
                    Some(ms) => timeout = timeout.min(Duration::from_millis(ms)),
                    None => problems.push(format!("{key}: must be a number of milliseconds")),
                },
            }
        }
        if problems.is_empty() {
            Ok(Self {
                host,
                port,
                auth,
                starttls,
                ssl,
                from,
                timeout,
            })
        } else {
            Err(problems)
        }
    }

    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A boolean as IDM files write them (`true`, or `"true"` after substitution).
fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// A transport with the config it was built from and the trust fingerprint.
type CachedTransport = (Arc<EmailConfig>, u64, Arc<Transport>);

/// The `external/email` handler.
pub struct EmailHandler {
    gw: Arc<Gateway>,
    crypto: Arc<Crypto>,
    config: LastGood<EmailConfig>,
    templates: Mutex<HashMap<String, Arc<LastGood<Template>>>>,
    /// The transport of the current config and trust (the config it was built from, and
    /// the trust fingerprint).
    transport: Mutex<Option<CachedTransport>>,
}

impl EmailHandler {
    pub fn new(gw: Arc<Gateway>, crypto: Arc<Crypto>) -> Self {
        Self {
            gw,
            crypto,
            config: LastGood::default(),
            templates: Mutex::new(HashMap::new()),
            transport: Mutex::new(None),
        }
    }

    fn template(&self, name: &str) -> Option<Arc<Template>> {
        let cache = self
            .templates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone();
        let live = self.gw.live();
        cache.get(&live.conf, &format!("{TEMPLATE_FACTORY}/{name}"), |doc| {
            Template::parse(name, doc)
        })
    }

    fn transport(
        &self,
        conf: &Arc<EmailConfig>,
        trust: &Trust,
    ) -> Result<Arc<Transport>, ResourceError> {
        let mut cached = self.transport.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, fp, t)) = cached.as_ref() {
            if Arc::ptr_eq(k, conf) && *fp == trust.fingerprint {
                return Ok(t.clone());
            }
        }
        let failed = |e: lettre::transport::smtp::Error| {
            ResourceError::internal(format!("external/email: cannot set up TLS: {e}"))
        };
        let mut builder = Transport::builder_dangerous(&conf.host)
            .port(conf.port)
            .timeout(Some(conf.timeout));
        if conf.ssl || conf.starttls {
            // The gateway's anchors (platform roots loaded once, then `certs/`), not
            // lettre's own load of the platform roots.
            let mut params =
                TlsParameters::builder(conf.host.clone()).certificate_store(CertificateStore::None);
            for der in crate::tls::material(trust).anchors() {
                params = params
                    .add_root_certificate(Certificate::from_der(der.to_vec()).map_err(failed)?);
            }
            let params = params.build_rustls().map_err(failed)?;
            builder = builder.tls(if conf.ssl {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            });
        }
        if let Some((user, password)) = &conf.auth {
            let password = match self.crypto.decrypt(password) {
                Ok(Value::String(p)) => p,
                _ => return Err(ResourceError::internal(
                    "external/email: auth/password cannot be decrypted with this gateway's keys",
                )),
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let transport = Arc::new(builder.build());
        *cached = Some((conf.clone(), trust.fingerprint, transport.clone()));
        Ok(transport)
    }

    async fn send(&self, mail: Mail) -> Result<Value, ResourceError> {
        let live = self.gw.live();
        let conf = self
            .config
            .get(&live.conf, EMAIL_CONFIG, EmailConfig::parse)
            .ok_or_else(|| {
                ResourceError::unavailable(
                    "external/email: the email service is not configured (conf/external.email.json)",
                )
            })?;
        let from = [
            mail.from.as_str(),
            mail.template_from.as_str(),
            conf.from.as_str(),
        ]
        .into_iter()
        .find(|f| !f.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            ResourceError::bad_request(
                "external/email: 'from' is required (in the request or external.email.json)",
            )
        })?;
        let message = mail.message(&from)?;
        let transport = self.transport(&conf, &live.conf.trust)?;
        transport
            .send(message)
            .await
            .map_err(|e| smtp_error(&conf, &e))?;
        Ok(json!({"status": "OK", "message": "Email sent"}))
    }
}

/// The CREST error of a failed send: the server and what went wrong, never the password.
fn smtp_error(conf: &EmailConfig, e: &lettre::transport::smtp::Error) -> ResourceError {
    let server = conf.server();
    if e.is_timeout() {
        return ResourceError::gateway_timeout(format!(
            "external/email: the SMTP server {server} did not answer within {}",
            show(conf.timeout)
        ));
    }
    if e.is_transient() || e.is_permanent() {
        return ResourceError::bad_gateway(format!(
            "external/email: the SMTP server {server} refused the mail: {e}"
        ));
    }
    if e.is_tls() {
        return ResourceError::bad_gateway(format!(
            "external/email: TLS with the SMTP server {server} failed: {e}"
        ));
    }
    ResourceError::unavailable(format!(
        "external/email: cannot reach the SMTP server {server}: {e}"
    ))
}

/// One mail to send, from `send` or a rendered template.
struct Mail {
    from: String,
    template_from: String,
    to: Mailboxes,
    cc: Mailboxes,
    bcc: Mailboxes,
    subject: String,
    body: String,
    mime_type: String,
}

impl Mail {
    /// The recipients and sender of a request body (`send` and `sendTemplate` alike).
    fn addressed(body: &Map<String, Value>) -> Result<Self, ResourceError> {
        let to = addresses(body, "to")?;
        if to.iter().next().is_none() {
            return Err(ResourceError::bad_request(
                "external/email: 'to' is required",
            ));
        }
        Ok(Self {
            from: text(body, "from")?.to_owned(),
            template_from: String::new(),
            to,
            cc: addresses(body, "cc")?,
            bcc: addresses(body, "bcc")?,
            subject: String::new(),
            body: String::new(),
            mime_type: "text/plain".into(),
        })
    }

    fn message(self, from: &str) -> Result<Message, ResourceError> {
        let from: Mailbox = from.parse().map_err(|_| {
            ResourceError::bad_request(format!(
                "external/email: 'from' is not an email address: '{from}'"
            ))
        })?;
        let mut builder: MessageBuilder = Message::builder().from(from).subject(self.subject);
        for (list, header) in [(self.to, "to"), (self.cc, "cc"), (self.bcc, "bcc")] {
            for mailbox in list {
                builder = match header {
                    "to" => builder.to(mailbox),
                    "cc" => builder.cc(mailbox),
                    _ => builder.bcc(mailbox),
                };
            }
        }
        let content_type = ContentType::parse(&format!("{}; charset=utf-8", self.mime_type))
            .map_err(|_| {
                ResourceError::bad_request("external/email: 'type' is not a media type")
            })?;
        builder
            .header(content_type)
            .body(self.body)
            .map_err(|e| ResourceError::bad_request(format!("external/email: {e}")))
    }
}

fn text<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, ResourceError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ResourceError::bad_request(format!(
            "external/email: '{key}' must be a string"
        ))),
    }
}

/// A comma-separated list of addresses (or a JSON list of them).
fn addresses(body: &Map<String, Value>, key: &str) -> Result<Mailboxes, ResourceError> {
    let items: Vec<String> = match body.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|a| a.trim().to_owned()).collect(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(|s| s.trim().to_owned()))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                ResourceError::bad_request(format!(
                    "external/email: '{key}' must be a comma-separated string of addresses"
                ))
            })?,
        Some(_) => {
            return Err(ResourceError::bad_request(format!(
                "external/email: '{key}' must be a comma-separated string of addresses"
            )))
        }
    };
    let mut out = Mailboxes::new();
    for a in items.into_iter().filter(|a| !a.is_empty()) {
        let mailbox: Mailbox = a.parse().map_err(|_| {
            ResourceError::bad_request(format!(
                "external/email: '{key}' has an address that is not valid: '{a}'"
            ))
        })?;
        out.push(mailbox);
    }
    Ok(out)
}

#[async_trait::async_trait]
impl RequestHandler for EmailHandler {
    async fn handle(&self, req: &Request, rest: &[String]) -> Result<Response, ResourceError> {
        let name = req.service_action(rest)?;
        let body = req.body_object()?;
        let mail = match name {
            "send" => {
                let mime_type = match text(body, "type")? {
                    "" => "text/plain",
                    t @ ("text/plain" | "text/html" | "text/xml") => t,
                    other => {
                        return Err(ResourceError::bad_request(format!(
                            "external/email: type '{other}' is not one of text/plain, text/html, text/xml"
                        )))
                    }
                };
                Mail {
                    subject: text(body, "subject")?.to_owned(),
                    body: text(body, "body")?.to_owned(),
                    mime_type: mime_type.to_owned(),
                    ..Mail::addressed(body)?
                }
            }
            "sendTemplate" => {
                let name = text(body, "templateName")?;
                if name.is_empty() {
                    return Err(ResourceError::bad_request(
                        "external/email: 'templateName' is required",
                    ));
                }
                let template = self.template(name).ok_or_else(|| {
                    ResourceError::not_found(format!("Email template '{name}' not found"))
                })?;
                if !template.enabled {
                    return Err(ResourceError::bad_request(format!(
                        "external/email: email template '{name}' is disabled"
                    )));
                }
                let locales = [req.param("_locale").unwrap_or(""), text(body, "locale")?];
                let object = body.get("object").cloned().unwrap_or(json!({}));
                let rendered = template.render(&locales, &object).map_err(|e| {
                    ResourceError::bad_request(format!(
                        "external/email: email template '{name}': {e}"
                    ))
                })?;
                Mail {
                    template_from: template.from.clone(),
                    subject: rendered.subject,
                    body: rendered.body,
                    mime_type: template.mime_type.clone(),
                    ..Mail::addressed(body)?
                }
            }
            other => {
                return Err(ResourceError::bad_request(format!(
                    "Action {other} is not supported by openidm/external/email (send, sendTemplate)"
                )))
            }
        };
        Ok(Response::Action(Some(self.send(mail).await?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idm_sample_file_parses() {
        let c = EmailConfig::parse(&json!({
            "host": "smtp.gmail.com",
            "port": 587,
            "debug": false,
            "auth": {"enable": true, "username": "xxxxxxxx", "password": "xxxxxxxx"},
            "timeout": 300000,
            "writetimeout": 300000,
            "connectiontimeout": 300000,
            "starttls": {"enable": true},
            "ssl": {"enable": false},
            "smtpProperties": ["mail.smtp.ssl.protocols=TLSv1.2"],
            "threadPoolSize": 20
        }))
        .unwrap();
        assert_eq!(c.port, 587);
        assert!(c.starttls && !c.ssl);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.auth, Some(("xxxxxxxx".into(), json!("xxxxxxxx"))));
    }

    #[test]
    fn bad_files_name_their_problems() {
        let problems = EmailConfig::parse(&json!({
            "port": 70000,
            "auth": {"enable": true},
            "from": "not an address",
            "timeout": "soon"
        }))
        .unwrap_err();
        for start in [
            "host:",
            "port:",
            "auth/username:",
            "auth/password:",
            "from:",
            "timeout:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(start)),
                "{start} in {problems:?}"
            );
        }
    }
}
