//! [`Offsite`]: the configured `[[store]]`s, ready to use, and what cofferd last saw of
//! each (for `status`).
//!
//! Built from the config at start-up and on every reload. Building touches no network:
//! credentials are read (file, `$CREDENTIALS_DIRECTORY/<store>`, `AWS_*` environment)
//! and the client is set up. A store whose credentials cannot be found or whose
//! settings the client refuses stays in the list as *unusable*, with the sentence that
//! says why: its copies fail with that sentence, and nothing else (not the daemon, not
//! a local backup) is held up by it.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use super::s3::{Credentials, LockMode, ObjectLock, S3Backend, S3Config, Tuning, config::default_path_style};
use crate::config::{StoreConfig, offsite};

/// What cofferd last saw of a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// Whether the last request worked: `None` before any.
    pub ok: Option<bool>,
    /// The last failure's sentence (empty when the last request worked).
    pub error: String,
    /// When that was (Unix seconds; 0 = never).
    pub at: i64,
}

/// One configured store.
pub struct Slot {
    pub config: StoreConfig,
    backend: Result<S3Backend, String>,
    health: Arc<Mutex<StoreHealth>>,
}

impl Slot {
    /// The store's client, or why it cannot be used.
    pub fn backend(&self) -> Result<&S3Backend, StoreError> {
        self.backend
            .as_ref()
            .map_err(|why| StoreError::Unusable(why.clone()))
    }

    /// What cofferd last saw of the store.
    pub fn health(&self) -> StoreHealth {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notes the outcome of a request to the store (`Err`: its sentence).
    pub fn note(&self, outcome: Result<(), &str>) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        *h = StoreHealth {
            ok: Some(outcome.is_ok()),
            error: outcome.err().unwrap_or_default().to_owned(),
            at: Utc::now().timestamp(),
        };
    }
}

/// Every configured store, in config order.
#[derive(Default)]
pub struct Offsite {
    slots: Vec<Slot>,
}

impl Offsite {
    /// Builds the stores of `configs`; their requests will run on `rt` (cofferd's
    /// runtime) and end early when `stop` is cancelled (shutdown). Without a runtime
    /// (some unit tests) every store is unusable.
    pub fn new(configs: &[StoreConfig], rt: Option<Handle>, stop: &CancellationToken) -> Offsite {
        let slots = configs
            .iter()
            .map(|config| Slot {
                backend: build(config, rt.clone(), stop.clone()),
                config: config.clone(),
                health: Arc::default(),
            })
            .collect();
        Offsite { slots }
    }

    /// The same stores, keeping what `old` last saw of stores that did not change.
    pub fn carry_health(mut self, old: &Offsite) -> Offsite {
        for slot in &mut self.slots {
            if let Some(before) = old.slots.iter().find(|o| o.config == slot.config) {
                slot.health = before.health.clone();
            }
        }
        self
    }

    /// The store named `name`.
    pub fn get(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.config.name == name)
    }

    /// Every store.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// The client of one store, or the sentence why there is none.
fn build(config: &StoreConfig, rt: Option<Handle>, stop: CancellationToken) -> Result<S3Backend, String> {
    let rt = rt.ok_or_else(|| format!("the store '{}' cannot be used without a runtime", config.name))?;
    let credentials = Credentials::load(config.credentials_file.as_deref(), &config.name, "default")
        .map_err(|e| e.to_string())?;
    let mut tuning = Tuning::default();
    tuning.retry.max_retries = config.retries;
    let cfg = S3Config {
        name: config.name.clone(),
        endpoint: config.endpoint.clone(),
        bucket: config.bucket.clone(),
        prefix: config.prefix.clone(),
        region: config.region.clone(),
        path_style: config
            .path_style
            .unwrap_or_else(|| default_path_style(&config.endpoint)),
        credentials,
        object_lock: (config.object_lock_days > 0).then_some(ObjectLock {
            days: config.object_lock_days,
            mode: match config.object_lock_mode {
                offsite::LockMode::Governance => LockMode::Governance,
                offsite::LockMode::Compliance => LockMode::Compliance,
            },
        }),
        tuning,
    };
    S3Backend::new(cfg, &config.prefix_template, rt, stop).map_err(|e| e.to_string())
}
