//! Connections: opening (plain, ldaps or StartTLS, verified against the gateway's trust),
//! binding as `principal`, and the small pool of shared connections operations use.

use super::*;

/// The TLS failure behind a connection error, if that is what it is.
pub(super) fn tls_failure(e: &LdapError) -> Option<String> {
    let LdapError::Io { source } = e else {
        return None;
    };
    let inner = source.get_ref()?;
    let tls = inner.downcast_ref::<rustls::Error>()?;
    let hint = match tls {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            " (the server's certificate must chain to a platform root or a CA in certs/)"
        }
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => " (the server's certificate does not name the configured host)",
        _ => "",
    };
    Some(format!("{tls}{hint}"))
}

/// Whether a provisioner configures an LDAP connector over TLS (`ssl` or `startTLS`): its
/// connector depends on the trust of `certs/`.
pub fn uses_tls(p: &Provisioner) -> bool {
    p.kind == ConnectorKind::Ldap
        && ["ssl", "startTLS"]
            .iter()
            .any(|k| p.configuration.get(*k) == Some(&Value::Bool(true)))
}

pub(super) fn is_connection_error(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::Io { .. }
            | LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::IdScrubSend { .. }
            | LdapError::EndOfStream
    )
}

impl LdapConnector {
    /// A new connection, not bound.
    pub(super) async fn open(&self) -> ConnectorResult<Ldap> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.cfg.connect_timeout)
            .set_starttls(self.cfg.start_tls);
        if self.cfg.tls {
            // Shared, built once per trust change.
            settings = settings.set_config(crate::tls::client_config(&self.trust));
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.cfg.url)
            .await
            .map_err(|e| match e {
                LdapError::Timeout { .. } => ConnectorError::Timeout(format!(
                    "system {}: connecting to {} timed out",
                    self.sys(),
                    self.cfg.url
                )),
                e if tls_failure(&e).is_some() => ConnectorError::Unavailable(format!(
                    "system {}: TLS handshake with {}{} failed: {}",
                    self.sys(),
                    self.cfg.url,
                    if self.cfg.start_tls {
                        " (StartTLS)"
                    } else {
                        ""
                    },
                    tls_failure(&e).unwrap_or_default()
                )),
                e => ConnectorError::Unavailable(format!(
                    "system {}: cannot connect to {}: {e}",
                    self.sys(),
                    self.cfg.url
                )),
            })?;
        let system = self.cfg.system.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(system = %system, error = %e, "LDAP connection ended");
            }
        });
        Ok(ldap)
    }

    /// A new connection bound as `principal` (anonymous without one).
    pub(super) async fn open_bound(&self) -> ConnectorResult<Ldap> {
        let mut ldap = self.open().await?;
        if let Some(principal) = &self.cfg.principal {
            let pw = self.cfg.credentials.as_deref().unwrap_or("");
            let res = ldap
                .with_timeout(self.cfg.connect_timeout)
                .simple_bind(principal, pw)
                .await
                .and_then(|r| r.success());
            if let Err(e) = res {
                let _ = ldap.unbind().await;
                return Err(match e {
                    LdapError::LdapResult { result } => ConnectorError::Unavailable(format!(
                        "system {}: cannot bind as the configured principal '{principal}': {} [LDAP {}]",
                        self.sys(),
                        rc_name(result.rc),
                        result.rc
                    )),
                    e => self.map_err("bind as", &format!("'{principal}'"), e),
                });
            }
        }
        Ok(ldap)
    }

    /// A pooled connection (a handle on a shared connection), reconnecting a dead slot.
    pub(super) async fn conn(&self) -> ConnectorResult<Ldap> {
        let i = self.next_slot.fetch_add(1, AtomicOrdering::Relaxed) % self.slots.len().max(1);
        let Some(slot) = self.slots.get(i) else {
            return self.open_bound().await;
        };
        let mut slot = slot.lock().await;
        if let Some(ldap) = slot.as_mut() {
            if !ldap.is_closed() {
                return Ok(ldap.clone());
            }
        }
        *slot = None;
        let ldap = self.open_bound().await?;
        *slot = Some(ldap.clone());
        Ok(ldap)
    }
}
