//! The cluster key: where a server gets it — the config's `cluster_key`, else the key file
//! (created with a fresh random key if missing) — for the server and for `server --print-key`.

use common::config::ClusterConfig;
use common::crypto::{self, Key};

/// The key that authenticates frames between servers: the config's `cluster_key` if given,
/// else the one in the key file (created with a fresh random key if missing).
pub fn cluster_key(cfg: &ClusterConfig) -> Result<Key, String> {
    match &cfg.cluster_key {
        Some(hex) => {
            crypto::key_from_hex(hex.0.trim()).ok_or_else(|| "field `cluster_key`: must be 64 hex digits".into())
        }
        None => crate::store::cluster_key(&cfg.cluster_key_path()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_key_comes_before_the_file() {
        let dir = std::env::temp_dir().join(format!("imgcloud-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = ClusterConfig::with_servers(vec![]);
        cfg.data_dir = dir.to_string_lossy().into_owned();
        let from_file = cluster_key(&cfg).unwrap();
        assert_eq!(cluster_key(&cfg).unwrap(), from_file, "the file, once created, is kept");
        let hex = "ab".repeat(32);
        cfg.cluster_key = Some(common::config::KeyHex(hex.clone()));
        assert_eq!(crypto::to_hex(&cluster_key(&cfg).unwrap()), hex);
        cfg.cluster_key = Some(common::config::KeyHex("xyz".into()));
        assert!(cluster_key(&cfg).unwrap_err().contains("cluster_key"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
