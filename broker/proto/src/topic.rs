//! Topic and consumer group names (shared/API.md, "Errors"), the broker's reserved
//! topics, permission bits and queue counts: the rules every node and client share.

/// Readable by consumers (RocketMQ's `PermName.PERM_READ`).
pub const PERM_READ: u8 = 1 << 2;
/// Writable by producers (RocketMQ's `PermName.PERM_WRITE`).
pub const PERM_WRITE: u8 = 1 << 1;
/// Read and write: the default.
pub const PERM_READ_WRITE: u8 = PERM_READ | PERM_WRITE;

/// RocketMQ's default queue count for a new topic.
pub const DEFAULT_QUEUE_NUMS: u32 = 4;
/// Upper bound on queues per topic per group (RocketMQ caps at 1024 too).
pub const MAX_QUEUE_NUMS: u32 = 1024;

/// Prefix of the broker's retry topics, reserved.
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of the broker's dead-letter topics, reserved.
pub const DLQ_PREFIX: &str = "%DLQ%";
/// The topic holding delayed messages until they are due, one queue per delay level
/// (RocketMQ's `SCHEDULE_TOPIC_XXXX`). It has no configuration: the broker writes
/// it, and only the broker reads it.
pub const SCHEDULE_TOPIC: &str = "%SCHEDULE%";
/// The topic holding timer messages (`deliver_at` / `delay_ms` on send) until they
/// are due: one queue, in arrival order, indexed by due time in each node's timer
/// log (RocketMQ 5's `rmq_sys_wheel_timer`). Like the schedule topic it has no
/// configuration, and only the broker writes and reads it.
pub const TIMER_TOPIC: &str = "%TIMER%";
/// The topic holding transactional messages until their transaction is
/// committed or rolled back (RocketMQ's `RMQ_SYS_TRANS_HALF_TOPIC`): one queue,
/// the broker's alone.
pub const HALF_TOPIC: &str = "%HALF%";
/// Queues of a retry or dead-letter topic (RocketMQ: one per broker group).
pub const RETRY_QUEUE_NUMS: u32 = 1;

/// The retry topic of a consumer group.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The dead-letter topic of a consumer group.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// What [`validate_name`] accepts, as a regular expression (the OpenAPI
/// document's; the server's tests hold the two to the same strings).
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_%|-]{1,127}$";

/// Checks a topic or group name: 1..=127 characters of `[A-Za-z0-9_%|-]`.
///
/// # Errors
/// A description of what is wrong, naming `kind`.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 127 {
        return Err(format!("{kind} name must be 1..=127 characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '%' | '|' | '-')))
    {
        return Err(format!(
            "{kind} name `{name}` contains `{bad}`; allowed are A-Z a-z 0-9 _ % | -"
        ));
    }
    Ok(())
}

/// Like [`validate_name`], and refuses the broker's reserved prefixes.
///
/// # Errors
/// As [`validate_name`], or a reserved prefix.
pub fn validate_user_topic(name: &str) -> Result<(), String> {
    validate_name("topic", name)?;
    if [
        RETRY_PREFIX,
        DLQ_PREFIX,
        SCHEDULE_TOPIC,
        TIMER_TOPIC,
        HALF_TOPIC,
    ]
    .iter()
    .any(|reserved| name.starts_with(reserved))
    {
        return Err(format!(
            "topic names starting with {RETRY_PREFIX}, {DLQ_PREFIX}, {SCHEDULE_TOPIC}, {TIMER_TOPIC} or {HALF_TOPIC} are reserved for the broker"
        ));
    }
    Ok(())
}

/// The names an admin may create or update with `PUT /v1/topics/{topic}`: user
/// topics, and a consumer group's retry and dead-letter topics (`%RETRY%{group}`,
/// `%DLQ%{group}`), which the broker creates on first use only when
/// `auto_create_topics` is on. The schedule topic stays the broker's alone.
///
/// # Errors
/// As [`validate_user_topic`], except for a retry or dead-letter topic whose
/// group part is a valid name.
pub fn validate_admin_topic(name: &str) -> Result<(), String> {
    validate_name("topic", name)?;
    for prefix in [RETRY_PREFIX, DLQ_PREFIX] {
        if let Some(group) = name.strip_prefix(prefix) {
            return validate_name("group", group)
                .map_err(|e| format!("`{name}` is {prefix}{{group}}, and the {e}"));
        }
    }
    validate_user_topic(name)
}

/// `value` percent-encoded for a URL path segment or query value: names may hold
/// `%` and `|`, message keys any character. Unreserved characters stay as they are.
pub fn percent_encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_api_rules() {
        assert!(validate_name("topic", "Orders_v2|eu-1%x").is_ok());
        assert!(validate_name("topic", "").is_err());
        assert!(validate_name("topic", &"a".repeat(128)).is_err());
        assert!(validate_name("topic", "a/b").is_err());
        assert!(validate_name("topic", "a.b").is_err());
        assert!(validate_user_topic("%RETRY%g").is_err());
        assert!(validate_user_topic("%DLQ%g").is_err());
        assert!(validate_user_topic("%SCHEDULE%").is_err());
        assert!(validate_user_topic("a%RETRY%").is_ok());
        assert!(validate_name("topic", "%RETRY%g").is_ok());
        assert!(validate_admin_topic("orders").is_ok());
        assert!(validate_admin_topic("%RETRY%billing").is_ok());
        assert!(validate_admin_topic("%DLQ%billing").is_ok());
        assert!(validate_admin_topic("%RETRY%").is_err());
        assert!(validate_admin_topic("%SCHEDULE%").is_err());
        assert!(validate_admin_topic("%SCHEDULE%x").is_err());
    }
}
