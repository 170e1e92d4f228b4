//! Permissions: resource patterns × actions (RocketMQ ACL 2.0's model, shared/API.md
//! "Security").
//!
//! * Resources: `topic:NAME`, `group:NAME` (a consumer group), `cluster`; a NAME
//!   ending in `*` matches every name with that prefix (`topic:orders-*`, `topic:*`).
//! * Actions: `pub` (send to a topic), `sub` (consume: pull, receive, ack, commit
//!   and read offsets, heartbeat, retry — on the topic, and on the consumer group
//!   where one is named), `admin` (create, update and delete topics; force or reset
//!   a group's offsets).
//! * `admin` on `cluster` allows everything: users, membership, leader transfer,
//!   `/v1/cluster`, `/metrics`, and every topic and group.
//! * `sub` on `group:G` also allows consuming the group's own `%RETRY%G` and
//!   `%DLQ%G` topics, as RocketMQ's consumers do.
//!
//! Nothing else is implied: `admin` on a topic does not allow sending to it.

use serde::{Deserialize, Serialize};

use crate::topic::{validate_name, DLQ_PREFIX, RETRY_PREFIX};

/// Most permissions one user may hold.
pub const MAX_PERMISSIONS: usize = 64;

/// What [`ResourcePattern`] parses, as a regular expression (the OpenAPI
/// document's; the server's tests hold the two to the same strings).
pub const RESOURCE_PATTERN: &str = "^(cluster|(topic|group):([A-Za-z0-9_%|-]{1,127}[*]?|[*]))$";

/// What a caller does to a resource.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pub,
    Sub,
    Admin,
}

impl Action {
    pub fn word(self) -> &'static str {
        match self {
            Self::Pub => "pub",
            Self::Sub => "sub",
            Self::Admin => "admin",
        }
    }
}

/// A name, or every name with a prefix (`orders-*`; `*` alone is every name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamePattern {
    Exact(String),
    Prefix(String),
}

impl NamePattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }

    fn parse(kind: &str, text: &str) -> Result<Self, String> {
        match text.strip_suffix('*') {
            Some("") => Ok(Self::Prefix(String::new())),
            Some(prefix) => {
                validate_name(kind, prefix)?;
                Ok(Self::Prefix(prefix.to_string()))
            }
            None => {
                validate_name(kind, text)?;
                Ok(Self::Exact(text.to_string()))
            }
        }
    }

    fn render(&self) -> String {
        match self {
            Self::Exact(name) => name.clone(),
            Self::Prefix(prefix) => format!("{prefix}*"),
        }
    }
}

/// What a permission is about: `topic:…`, `group:…` or `cluster`. On the wire and
/// on disk it is its text form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ResourcePattern {
    Cluster,
    Topic(NamePattern),
    Group(NamePattern),
}

impl TryFrom<String> for ResourcePattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if text == "cluster" {
            return Ok(Self::Cluster);
        }
        if let Some(name) = text.strip_prefix("topic:") {
            return NamePattern::parse("topic", name).map(Self::Topic);
        }
        if let Some(name) = text.strip_prefix("group:") {
            return NamePattern::parse("group", name).map(Self::Group);
        }
        Err(format!(
            "resource `{text}` must be `cluster`, `topic:NAME` or `group:NAME` (NAME may end with `*`)"
        ))
    }
}

impl From<ResourcePattern> for String {
    fn from(resource: ResourcePattern) -> String {
        match resource {
            ResourcePattern::Cluster => "cluster".into(),
            ResourcePattern::Topic(name) => format!("topic:{}", name.render()),
            ResourcePattern::Group(name) => format!("group:{}", name.render()),
        }
    }
}

/// One grant: actions on the resources a pattern matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Permission {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::resource))]
    pub resource: ResourcePattern,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::actions))]
    pub actions: Vec<Action>,
}

/// A resource an operation touches.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    Cluster,
    Topic(&'a str),
    Group(&'a str),
}

impl std::fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cluster => f.write_str("cluster"),
            Self::Topic(name) => write!(f, "topic:{name}"),
            Self::Group(name) => write!(f, "group:{name}"),
        }
    }
}

/// Checks a user's permission list.
///
/// # Errors
/// Too many permissions, or one without actions.
pub fn validate_permissions(permissions: &[Permission]) -> Result<(), String> {
    if permissions.len() > MAX_PERMISSIONS {
        return Err(format!(
            "at most {MAX_PERMISSIONS} permissions per user ({} given)",
            permissions.len()
        ));
    }
    for permission in permissions {
        if permission.actions.is_empty() {
            return Err(format!(
                "permission on `{}` names no action (pub, sub, admin)",
                String::from(permission.resource.clone())
            ));
        }
        // Three actions exist: a longer list repeats one, and would be stored,
        // replicated and snapshotted as it came.
        let distinct = permission
            .actions
            .iter()
            .enumerate()
            .all(|(i, action)| !permission.actions[..i].contains(action));
        if !distinct {
            return Err(format!(
                "permission on `{}` names an action twice",
                String::from(permission.resource.clone())
            ));
        }
    }
    Ok(())
}

/// Whether `permissions` allow `action` on `resource`.
pub fn allows(permissions: &[Permission], action: Action, resource: Resource<'_>) -> bool {
    let granted = |wanted: Action, on: Resource<'_>| {
        permissions.iter().any(|p| {
            let matches = match (&p.resource, on) {
                (ResourcePattern::Cluster, _) if p.actions.contains(&Action::Admin) => return true,
                (ResourcePattern::Cluster, Resource::Cluster) => true,
                (ResourcePattern::Topic(pattern), Resource::Topic(name))
                | (ResourcePattern::Group(pattern), Resource::Group(name)) => pattern.matches(name),
                _ => false,
            };
            matches && p.actions.contains(&wanted)
        })
    };
    if granted(action, resource) {
        return true;
    }
    // A consumer group's own retry and dead-letter topics.
    match (action, resource) {
        (Action::Sub, Resource::Topic(topic)) => [RETRY_PREFIX, DLQ_PREFIX]
            .iter()
            .filter_map(|prefix| topic.strip_prefix(prefix))
            .any(|group| granted(Action::Sub, Resource::Group(group))),
        _ => false,
    }
}

/// Whether `permissions` allow any action at all on `resource` (for listings).
pub fn allows_any(permissions: &[Permission], resource: Resource<'_>) -> bool {
    [Action::Pub, Action::Sub, Action::Admin]
        .into_iter()
        .any(|action| allows(permissions, action, resource))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(resource: &str, actions: &[Action]) -> Permission {
        Permission {
            resource: ResourcePattern::try_from(resource.to_string()).expect("valid"),
            actions: actions.to_vec(),
        }
    }

    #[test]
    fn patterns_parse_and_render() {
        for text in [
            "cluster",
            "topic:orders",
            "topic:orders-*",
            "topic:*",
            "group:g|1",
        ] {
            let parsed = ResourcePattern::try_from(text.to_string()).expect(text);
            assert_eq!(String::from(parsed), text);
        }
        for bad in [
            "topic:",
            "topic:a b",
            "queue:x",
            "topic:a*b",
            "Cluster",
            "group:*x*",
        ] {
            assert!(ResourcePattern::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_match_resource_kind_name_and_action() {
        let p = [
            permission("topic:orders", &[Action::Pub]),
            permission("group:billing*", &[Action::Sub]),
            permission("topic:logs-*", &[Action::Sub, Action::Admin]),
        ];
        assert!(allows(&p, Action::Pub, Resource::Topic("orders")));
        assert!(!allows(&p, Action::Sub, Resource::Topic("orders")));
        assert!(!allows(&p, Action::Pub, Resource::Topic("orders2")));
        assert!(!allows(&p, Action::Pub, Resource::Group("orders")));
        assert!(allows(&p, Action::Sub, Resource::Group("billing-eu")));
        assert!(!allows(&p, Action::Admin, Resource::Group("billing-eu")));
        assert!(allows(&p, Action::Admin, Resource::Topic("logs-a")));
        assert!(!allows(&p, Action::Pub, Resource::Topic("logs-a")));
        assert!(!allows(&p, Action::Admin, Resource::Cluster));
        // A group's own retry and dead-letter topics come with `sub` on it.
        assert!(allows(
            &p,
            Action::Sub,
            Resource::Topic("%RETRY%billing-eu")
        ));
        assert!(allows(&p, Action::Sub, Resource::Topic("%DLQ%billing-eu")));
        assert!(!allows(
            &p,
            Action::Pub,
            Resource::Topic("%RETRY%billing-eu")
        ));
        assert!(!allows(&p, Action::Sub, Resource::Topic("%RETRY%other")));
        assert!(allows_any(&p, Resource::Topic("orders")));
        assert!(!allows_any(&p, Resource::Topic("payments")));
    }

    #[test]
    fn cluster_admin_allows_everything_and_cluster_sub_does_not() {
        let admin = [permission("cluster", &[Action::Admin])];
        assert!(allows(&admin, Action::Pub, Resource::Topic("x")));
        assert!(allows(&admin, Action::Sub, Resource::Group("g")));
        assert!(allows(&admin, Action::Admin, Resource::Cluster));
        let reader = [permission("cluster", &[Action::Sub])];
        assert!(allows(&reader, Action::Sub, Resource::Cluster));
        assert!(!allows(&reader, Action::Admin, Resource::Cluster));
        assert!(!allows(&reader, Action::Sub, Resource::Topic("x")));
    }

    #[test]
    fn permission_lists_are_bounded_and_need_actions() {
        assert!(validate_permissions(&[permission("topic:a", &[])]).is_err());
        assert!(
            validate_permissions(&[permission("topic:a", &[Action::Pub, Action::Pub])]).is_err(),
            "a repeated action"
        );
        let many = vec![permission("topic:a", &[Action::Pub]); MAX_PERMISSIONS + 1];
        assert!(validate_permissions(&many).is_err());
        assert!(validate_permissions(&many[..MAX_PERMISSIONS]).is_ok());
    }
}
