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
}

impl Caller {
    pub fn new(user: impl Into<String>, component: impl Into<String>, roles: Vec<String>) -> Self {
        Self {
            user: user.into(),
            component: component.into(),
            roles,
        }
    }

    /// The gateway itself (reconciliation, scheduler, start-up seeding): may do everything.
    pub fn system() -> Self {
        Self::new("system", "internal/user", vec![ROLE_ADMIN.into()])
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(ROLE_ADMIN)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
