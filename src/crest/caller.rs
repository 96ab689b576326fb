//! Who is asking: the authenticated caller carried by every request, HTTP or internal.

/// Role every administrator has (IDM's `internal/role/openidm-admin`).
pub const ROLE_ADMIN: &str = "internal/role/openidm-admin";
/// Role of every authenticated user.
pub const ROLE_AUTHORIZED: &str = "internal/role/openidm-authorized";
/// Role of the `anonymous` user (self-registration in IDM).
pub const ROLE_REG: &str = "internal/role/openidm-reg";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    /// Where the account lives (`internal/user`, later `managed/user`).
    pub component: String,
    pub roles: Vec<String>,
    /// The gateway itself (see [`Caller::is_internal`]). Private: only
    /// [`Caller::system`] and [`Caller::system_as`] set it, so no authenticator can.
    internal: bool,
    /// Authenticated by user name and password (a classic module), so the caller may
    /// re-authenticate with a password (`X-OpenIDM-Reauth-Password`). False for bearer
    /// tokens, anonymous mappings and the gateway itself.
    password_login: bool,
}

impl Caller {
    pub fn new(user: impl Into<String>, component: impl Into<String>, roles: Vec<String>) -> Self {
        Self {
            user: user.into(),
            component: component.into(),
            roles,
            internal: false,
            password_login: false,
        }
    }

    /// The same caller, marked as authenticated by a password.
    pub fn with_password_login(mut self) -> Self {
        self.password_login = true;
        self
    }

    /// Whether the caller logged in with a password (see [`Caller::with_password_login`]).
    pub fn password_login(&self) -> bool {
        self.password_login
    }

    /// The gateway itself (reconciliation, scheduler, scripts, start-up seeding): may do
    /// everything.
    pub fn system() -> Self {
        Self::system_as("internal/user")
    }

    /// The gateway itself, marked with a component (sync callers name their mapping).
    pub fn system_as(component: impl Into<String>) -> Self {
        Self {
            internal: true,
            ..Self::new("system", component, vec![ROLE_ADMIN.into()])
        }
    }

    /// Whether this is the gateway itself rather than an HTTP client (administrators
    /// included): internal callers read private and encrypted properties as stored.
    pub fn is_internal(&self) -> bool {
        self.internal
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(ROLE_ADMIN)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_gateway_itself_is_internal() {
        assert!(Caller::system().is_internal());
        assert!(Caller::system_as("sync/u2l").is_internal());
        // However an authenticator builds an administrator, even one named "system".
        let http = Caller::new("system", "internal/user", vec![ROLE_ADMIN.into()]);
        assert!(http.is_admin());
        assert!(!http.is_internal());
        assert_ne!(http, Caller::system());
    }
}
