//! Who is calling: the bearer token of a request resolved to an [`Identity`].
//!
//! Every node resolves tokens locally, from its own group's replicated user table
//! (an index by token hash, rebuilt when the table's version changes) and from
//! the bootstrap admin token of its configuration.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::HeaderValue;
use subtle::ConstantTimeEq;

use super::acl::{self, Action, Permission, Resource};
use super::token::{TokenHash, MAX_TOKEN_CHARS};
use super::users::{Quotas, UserTable};
use crate::config::NodeConfig;
use crate::error::BrokerError;

/// What kind of caller an identity is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IdentityKind {
    /// The bootstrap admin token of the configuration: everything.
    Bootstrap,
    /// A replicated user: its permissions.
    User,
    /// Any caller of a node started with `--insecure`: everything.
    Insecure,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub kind: IdentityKind,
    pub permissions: Vec<Permission>,
    pub quotas: Quotas,
}

/// Name of the bootstrap identity in errors and logs (it is not in the user table).
pub const BOOTSTRAP_NAME: &str = "bootstrap-admin";

impl Identity {
    fn everything(name: &str, kind: IdentityKind) -> Self {
        Self {
            name: name.to_string(),
            kind,
            permissions: Vec::new(),
            quotas: Quotas::default(),
        }
    }

    /// Whether the caller may do `action` on `resource`.
    pub fn allows(&self, action: Action, resource: Resource<'_>) -> bool {
        match self.kind {
            IdentityKind::Bootstrap | IdentityKind::Insecure => true,
            IdentityKind::User => acl::allows(&self.permissions, action, resource),
        }
    }

    /// Whether the caller may do anything with `resource` (for listings).
    pub fn allows_any(&self, resource: Resource<'_>) -> bool {
        match self.kind {
            IdentityKind::Bootstrap | IdentityKind::Insecure => true,
            IdentityKind::User => acl::allows_any(&self.permissions, resource),
        }
    }

    /// # Errors
    /// [`BrokerError::NoPermission`] naming the user, the action and the resource.
    pub fn require(&self, action: Action, resource: Resource<'_>) -> Result<(), BrokerError> {
        if self.allows(action, resource) {
            Ok(())
        } else {
            Err(BrokerError::NoPermission(format!(
                "user `{}` has no `{}` permission on `{resource}`",
                self.name,
                action.word()
            )))
        }
    }
}

/// Live users' identities by the hash of their token.
type TokenIndex = HashMap<TokenHash, Arc<Identity>>;

/// Resolves bearer tokens on one node.
pub struct Authenticator {
    insecure: bool,
    bootstrap: Option<TokenHash>,
    insecure_identity: Arc<Identity>,
    bootstrap_identity: Arc<Identity>,
    /// Identities by token hash, as of a user table version.
    index: RwLock<Option<(u64, Arc<TokenIndex>)>>,
}

impl Authenticator {
    pub fn new(config: &NodeConfig) -> Self {
        Self {
            insecure: config.security.insecure,
            bootstrap: config
                .bootstrap_token
                .as_ref()
                .map(|token| TokenHash::of(token.expose())),
            insecure_identity: Arc::new(Identity::everything("anonymous", IdentityKind::Insecure)),
            bootstrap_identity: Arc::new(Identity::everything(
                BOOTSTRAP_NAME,
                IdentityKind::Bootstrap,
            )),
            index: RwLock::new(None),
        }
    }

    /// Whether client authentication is off (`--insecure`).
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// The caller of a request with this `Authorization` header, given the user
    /// table of this node's group (the index is rebuilt when its version moved).
    ///
    /// # Errors
    /// [`BrokerError::Unauthenticated`] for a missing, malformed, unknown or revoked token.
    pub fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
        users: &UserTable,
    ) -> Result<Arc<Identity>, BrokerError> {
        if self.insecure {
            return Ok(Arc::clone(&self.insecure_identity));
        }
        let token = bearer_token(authorization)?;
        let hash = TokenHash::of(token);
        if let Some(bootstrap) = &self.bootstrap {
            if bool::from(hash.0.ct_eq(&bootstrap.0)) {
                return Ok(Arc::clone(&self.bootstrap_identity));
            }
        }
        self.index_for(users)
            .get(&hash)
            .cloned()
            .ok_or_else(|| BrokerError::Unauthenticated("unknown or revoked token".into()))
    }

    /// The index of `users`, from the cache when its version is the cached one.
    fn index_for(&self, users: &UserTable) -> Arc<TokenIndex> {
        if let Some((version, index)) = &*self
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            if *version == users.version() {
                return Arc::clone(index);
            }
        }
        let index = Arc::new(build_index(users));
        *self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((users.version(), Arc::clone(&index)));
        index
    }
}

fn build_index(table: &UserTable) -> TokenIndex {
    table
        .live()
        .map(|user| {
            (
                user.token_hash,
                Arc::new(Identity {
                    name: user.name.clone(),
                    kind: IdentityKind::User,
                    permissions: user.permissions.clone(),
                    quotas: user.quotas,
                }),
            )
        })
        .collect()
}

/// The token of `Authorization: Bearer <token>`.
fn bearer_token(authorization: Option<&HeaderValue>) -> Result<&str, BrokerError> {
    let Some(value) = authorization else {
        return Err(BrokerError::Unauthenticated("this endpoint needs `Authorization: Bearer <token>` (scripts/cluster.sh token prints the admin token)".into()));
    };
    let text = value
        .to_str()
        .ok()
        .filter(|text| text.len() <= MAX_TOKEN_CHARS)
        .ok_or_else(|| BrokerError::Unauthenticated("malformed Authorization header".into()))?;
    let (scheme, token) = text.split_once(' ').ok_or_else(|| {
        BrokerError::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(BrokerError::Unauthenticated(
            "the Authorization header must be `Bearer <token>`".into(),
        ));
    }
    Ok(token.trim())
}
