//! Placeholder, replaced by the real schedule module.
use chrono::{DateTime, Utc};
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    tz: chrono_tz::Tz,
}
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("bad schedule '{0}'")]
    Bad(String),
}
impl Schedule {
    pub fn parse(expr: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        Ok(Schedule {
            expr: expr.into(),
            tz: timezone
                .parse()
                .map_err(|_| ScheduleError::Bad(timezone.into()))?,
        })
    }
    pub fn expr(&self) -> &str {
        &self.expr
    }
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.tz
    }
    pub fn next_after(&self, _after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        None
    }
    pub fn prev_at_or_before(&self, _at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        None
    }
}
