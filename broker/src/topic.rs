//! Topic configuration (RocketMQ's shape). The naming rules, reserved topics and
//! permission bits are the protocol's ([`broker_proto::topic`]), re-exported here.

use serde::{Deserialize, Serialize};

pub use broker_proto::topic::*;

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

#[cfg(test)]
mod tests {
    use super::*;

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
