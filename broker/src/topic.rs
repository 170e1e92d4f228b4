//! Topic configuration (RocketMQ's shape) and the naming rules of shared/API.md.

use serde::{Deserialize, Serialize};

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

/// A topic as one broker group serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub name: String,
    pub read_queue_nums: u32,
    pub write_queue_nums: u32,
    /// `PERM_*` bits.
    pub perm: u8,
}

impl TopicConfig {
    /// A read-write topic with the default queue count.
    /// A retry or dead-letter topic, created by the broker on first use.
    pub fn for_consumer_group_topic(name: &str) -> Self {
        Self {
            name: name.to_string(),
            read_queue_nums: RETRY_QUEUE_NUMS,
            write_queue_nums: RETRY_QUEUE_NUMS,
            perm: PERM_READ_WRITE,
        }
    }

    pub fn with_defaults(name: &str) -> Self {
        Self {
            name: name.to_string(),
            read_queue_nums: DEFAULT_QUEUE_NUMS,
            write_queue_nums: DEFAULT_QUEUE_NUMS,
            perm: PERM_READ_WRITE,
        }
    }

    pub fn readable(&self) -> bool {
        self.perm & PERM_READ != 0
    }

    pub fn writable(&self) -> bool {
        self.perm & PERM_WRITE != 0
    }

    /// Checks the queue counts and permission bits.
    ///
    /// # Errors
    /// A description naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        validate_name("topic", &self.name)?;
        for (field, value) in [
            ("read_queue_nums", self.read_queue_nums),
            ("write_queue_nums", self.write_queue_nums),
        ] {
            if value == 0 || value > MAX_QUEUE_NUMS {
                return Err(format!(
                    "{field} must be in 1..={MAX_QUEUE_NUMS}, got {value}"
                ));
            }
        }
        if self.perm & !PERM_READ_WRITE != 0 {
            return Err(format!(
                "perm must combine 4 (read) and 2 (write), got {}",
                self.perm
            ));
        }
        Ok(())
    }
}

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
    if [RETRY_PREFIX, DLQ_PREFIX, SCHEDULE_TOPIC]
        .iter()
        .any(|reserved| name.starts_with(reserved))
    {
        return Err(format!(
            "topic names starting with {RETRY_PREFIX}, {DLQ_PREFIX} or {SCHEDULE_TOPIC} are reserved for the broker"
        ));
    }
    Ok(())
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
    }

    #[test]
    fn configs_are_checked() {
        assert!(TopicConfig::with_defaults("t").validate().is_ok());
        let mut config = TopicConfig::with_defaults("t");
        config.write_queue_nums = 0;
        assert!(config
            .validate()
            .expect_err("zero queues")
            .contains("write_queue_nums"));
        config.write_queue_nums = 4;
        config.perm = 1;
        assert!(config.validate().is_err());
    }
}
