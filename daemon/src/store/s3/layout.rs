//! Where backups live in a bucket, as pure functions over key strings.
//!
//! ```text
//! <prefix>/<job>/<id>.tar.zst        the archive (or <id>.tar.zst.age, encrypted)
//! <prefix>/<job>/<id>.json           the sidecar, written last
//! ```
//! `prefix` comes from the `prefix` template with `{host}` expanded
//! (`coffer/{host}` → `coffer/web1`). A catalog rebuild lists `<prefix>/` once and
//! groups the keys with [`group_backups`]; the fleet view lists the part of the
//! template before `{host}` ([`fleet_root`]) with a delimiter to find the hosts, or
//! lists the whole root once and groups per host. A backup counts as present only when
//! both its archive and its sidecar are listed ([`RemoteBackup::is_complete`]).

use super::ObjectInfo;

/// Expands `{host}` in a prefix template and normalises slashes
/// (`"/coffer/{host}/"`, `"web1"` → `"coffer/web1"`).
pub fn expand_prefix(template: &str, host: &str) -> String {
    template.replace("{host}", host).trim_matches('/').to_string()
}

/// The part of a prefix template before `{host}`, as a listing prefix ending in `/`
/// (`"coffer/{host}"` → `Some("coffer/")`, `"{host}"` → `Some("")`); `None` when the
/// template has no `{host}` (then there is no fleet: one prefix for every host).
pub fn fleet_root(template: &str) -> Option<String> {
    let at = template.find("{host}")?;
    let root = template[..at].trim_start_matches('/');
    Some(root.to_string())
}

/// Splits a key of the fleet (listed under [`fleet_root`] of `template`) into the host
/// and the rest of the key below that host's prefix (`"coffer/{host}"`,
/// `"coffer/web1/app/x.json"` → `("web1", "app/x.json")`). `None` for keys that do not
/// fit the template.
pub fn split_fleet_key<'k>(template: &str, key: &'k str) -> Option<(&'k str, &'k str)> {
    let at = template.find("{host}")?;
    let before = template[..at].trim_start_matches('/');
    let after = template[at + "{host}".len()..].trim_end_matches('/');
    let rest = key.strip_prefix(before)?;
    let (host, below) = if after.is_empty() {
        rest.split_once('/')?
    } else {
        let marker = format!("{after}/");
        let i = rest.find(&marker)?;
        (&rest[..i], &rest[i + marker.len()..])
    };
    (!host.is_empty() && !host.contains('/')).then_some((host, below))
}

/// Key of a backup's archive.
pub fn archive_key(prefix: &str, job: &str, id: &str, encrypted: bool) -> String {
    let ext = if encrypted { ".tar.zst.age" } else { ".tar.zst" };
    format!("{}{job}/{id}{ext}", dir(prefix))
}

/// Key of a backup's sidecar.
pub fn sidecar_key(prefix: &str, job: &str, id: &str) -> String {
    format!("{}{job}/{id}.json", dir(prefix))
}

/// The listing prefix of one job (`"coffer/web1/app/"`).
pub fn job_prefix(prefix: &str, job: &str) -> String {
    format!("{}{job}/", dir(prefix))
}

/// `prefix` as a directory: empty, or ending in exactly one `/`.
pub fn dir(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// One backup found in a store listing.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteBackup {
    /// Job name (the key segment before the file name).
    pub job: String,
    /// Backup id.
    pub id: String,
    /// The archive object, if listed.
    pub archive: Option<ObjectInfo>,
    /// True when the archive is `.tar.zst.age`.
    pub encrypted: bool,
    /// The sidecar object, if listed.
    pub sidecar: Option<ObjectInfo>,
}

impl RemoteBackup {
    /// Archive and sidecar both present: the only state that counts as "offsite".
    pub fn is_complete(&self) -> bool {
        self.archive.is_some() && self.sidecar.is_some()
    }
}

/// Groups the objects of a listing under `prefix` (a host prefix) into backups, sorted
/// by job then id. Keys not of the form `<prefix>/<job>/<id>.{tar.zst,tar.zst.age,json}`
/// are ignored.
pub fn group_backups(prefix: &str, objects: &[ObjectInfo]) -> Vec<RemoteBackup> {
    let base = dir(prefix);
    let mut map: std::collections::BTreeMap<(String, String), RemoteBackup> = Default::default();
    for o in objects {
        let Some(rest) = o.key.strip_prefix(&base) else {
            continue;
        };
        let Some((job, file)) = rest.split_once('/') else {
            continue;
        };
        if job.is_empty() || file.contains('/') {
            continue;
        }
        let (id, kind) = if let Some(id) = file.strip_suffix(".tar.zst.age") {
            (id, 2)
        } else if let Some(id) = file.strip_suffix(".tar.zst") {
            (id, 1)
        } else if let Some(id) = file.strip_suffix(".json") {
            (id, 0)
        } else {
            continue;
        };
        if id.is_empty() {
            continue;
        }
        let entry = map
            .entry((job.to_string(), id.to_string()))
            .or_insert_with(|| RemoteBackup {
                job: job.to_string(),
                id: id.to_string(),
                archive: None,
                encrypted: false,
                sidecar: None,
            });
        match kind {
            0 => entry.sidecar = Some(o.clone()),
            k => {
                entry.archive = Some(o.clone());
                entry.encrypted = k == 2;
            }
        }
    }
    map.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn obj(key: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: 1,
            etag: None,
            last_modified: Utc::now(),
            version: None,
            retain_until: None,
            lock_mode: None,
            legal_hold: false,
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(expand_prefix("coffer/{host}", "web1"), "coffer/web1");
        assert_eq!(expand_prefix("/{host}/", "web1"), "web1");
        assert_eq!(fleet_root("coffer/{host}").as_deref(), Some("coffer/"));
        assert_eq!(fleet_root("{host}").as_deref(), Some(""));
        assert_eq!(fleet_root("coffer"), None);
        assert_eq!(
            archive_key("coffer/web1", "app", "app-20250101T000000Z", false),
            "coffer/web1/app/app-20250101T000000Z.tar.zst"
        );
        assert_eq!(archive_key("", "app", "i", true), "app/i.tar.zst.age");
        assert_eq!(sidecar_key("coffer/web1/", "app", "i"), "coffer/web1/app/i.json");
        assert_eq!(job_prefix("coffer/web1", "app"), "coffer/web1/app/");
    }

    #[test]
    fn fleet_keys_split_by_host() {
        let t = "coffer/{host}";
        assert_eq!(
            split_fleet_key(t, "coffer/web1/app/a.json"),
            Some(("web1", "app/a.json"))
        );
        assert_eq!(split_fleet_key(t, "other/web1/app/a.json"), None);
        assert_eq!(split_fleet_key(t, "coffer/loose.json"), None);
        let t = "/{host}/coffer/";
        assert_eq!(
            split_fleet_key(t, "db2/coffer/app/a.tar.zst"),
            Some(("db2", "app/a.tar.zst"))
        );
        assert_eq!(split_fleet_key(t, "db2/elsewhere/app/a.tar.zst"), None);
        assert_eq!(
            split_fleet_key("b/{host}-x", "b/h1-x/app/i.json"),
            Some(("h1", "app/i.json"))
        );
        assert_eq!(split_fleet_key("no-host", "no-host/app/i.json"), None);
    }

    #[test]
    fn grouping() {
        let objs = [
            obj("coffer/h/app/a-1.tar.zst"),
            obj("coffer/h/app/a-1.json"),
            obj("coffer/h/app/a-2.tar.zst.age"),
            obj("coffer/h/app/a-3.json"),
            obj("coffer/h/app/notes.txt"),
            obj("coffer/h/app/deeper/x.json"),
            obj("coffer/other/app/a-9.json"),
            obj("coffer/h/db/d-1.tar.zst"),
            obj("coffer/h/db/d-1.json"),
        ];
        let g = group_backups("coffer/h", &objs);
        let ids: Vec<_> = g
            .iter()
            .map(|b| (b.job.as_str(), b.id.as_str(), b.is_complete(), b.encrypted))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("app", "a-1", true, false),
                ("app", "a-2", false, true),
                ("app", "a-3", false, false),
                ("db", "d-1", true, false),
            ]
        );
    }
}
