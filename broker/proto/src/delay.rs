//! Delay levels (RocketMQ's `messageDelayLevel`): a send's `delay_level` N means
//! the N-th delay of the broker's table.

use std::time::Duration;

use crate::units::parse_duration;

/// RocketMQ's `messageDelayLevel`: level 1 is 1 s, level 18 is 2 h.
pub const ROCKETMQ_DELAY_LEVELS: &str =
    "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

/// Most delay levels a configuration may list (queues of the schedule topic).
pub const MAX_DELAY_LEVELS: usize = 64;

/// The delay of each level, level 1 first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelayLevels(Vec<Duration>);

impl Default for DelayLevels {
    fn default() -> Self {
        Self::parse(ROCKETMQ_DELAY_LEVELS).expect("the built-in delay levels parse")
    }
}

impl DelayLevels {
    /// Parses space-separated durations (`"1s 5s 10s"`).
    ///
    /// # Errors
    /// No level, more than [`MAX_DELAY_LEVELS`], a zero or unparseable duration.
    pub fn parse(text: &str) -> Result<Self, String> {
        let levels = text
            .split_whitespace()
            .map(|word| match parse_duration(word) {
                Ok(delay) if delay.is_zero() => Err(format!("delay `{word}` must be positive")),
                other => other,
            })
            .collect::<Result<Vec<_>, _>>()?;
        if levels.is_empty() {
            return Err("at least one delay level is needed".into());
        }
        if levels.len() > MAX_DELAY_LEVELS {
            return Err(format!(
                "at most {MAX_DELAY_LEVELS} delay levels, got {}",
                levels.len()
            ));
        }
        Ok(Self(levels))
    }

    /// The highest level.
    pub fn max_level(&self) -> u32 {
        self.0.len() as u32
    }

    /// The delay of `level` (1-based); a level past the last means the last.
    pub fn delay(&self, level: u32) -> Duration {
        let index = (level.max(1) as usize - 1).min(self.0.len() - 1);
        self.0[index]
    }
}
