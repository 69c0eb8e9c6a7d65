//! Placeholder, replaced by the real retention module.
use chrono::{DateTime, Utc};
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_within: Option<std::time::Duration>,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
}
impl Policy {
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn summary(&self) -> String {
        "keep everything".into()
    }
}
pub struct Candidate {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub protected: bool,
}
pub struct Decision {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub keep: bool,
    pub reasons: Vec<String>,
}
pub fn apply(_p: &Policy, _tz: chrono_tz::Tz, b: &[Candidate]) -> Vec<Decision> {
    b.iter()
        .map(|c| Decision {
            id: c.id.clone(),
            created_at: c.created_at,
            keep: true,
            reasons: vec![],
        })
        .collect()
}
