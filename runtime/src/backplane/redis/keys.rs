//! Names of every Redis key and channel the backplane uses.
//!
//! Each room's keys and its pub/sub channel share one hash tag (`{tenant:channel}`), so a
//! publish script touches one Redis Cluster slot and the sharded channel lives on the same
//! shard. A brace inside a channel name only moves where the tag ends, identically for every
//! key of that room, so the keys still share a slot.

use crate::ids::RoomKey;

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix` (validated by the config to contain no braces).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The pub/sub channel of a room.
    pub fn room_channel(&self, room: &RoomKey) -> String {
        format!("{}:r:{{{}:{}}}", self.prefix, room.tenant, room.channel)
    }

    /// The hash holding a room's `seq`, `epoch` and history TTL.
    pub fn room_meta(&self, room: &RoomKey) -> String {
        format!("{}:m", self.room_channel(room))
    }

    /// The list holding a room's recent messages.
    pub fn room_history(&self, room: &RoomKey) -> String {
        format!("{}:h", self.room_channel(room))
    }

    /// The hash of a room's members: connection id to `node<TAB>user`.
    pub fn room_presence(&self, room: &RoomKey) -> String {
        format!("{}:p", self.room_channel(room))
    }

    /// The hash of a user's connections: connection id to node.
    pub fn user(&self, tenant: &str, user_id: &str) -> String {
        format!("{}:u:{{{tenant}:{user_id}}}", self.prefix)
    }

    /// The channel every node subscribes to for messages addressed to it.
    pub fn node_inbox(&self, node: &str) -> String {
        format!("{}:n:{{{node}}}", self.prefix)
    }

    /// The hash of the desired state's plugin records: `tenant<TAB>plugin` to the record's
    /// JSON. Every key of the desired state shares the `{state}` tag, so its scripts touch one
    /// Redis Cluster slot.
    pub fn state_records(&self) -> String {
        format!("{}:{{state}}:records", self.prefix)
    }

    /// The hash of the desired state's tenant records: name to the record's JSON.
    pub fn state_tenants(&self) -> String {
        format!("{}:{{state}}:tenants", self.prefix)
    }

    /// The desired state's revision counter.
    pub fn state_revision(&self) -> String {
        format!("{}:{{state}}:revision", self.prefix)
    }

    /// The sorted set of stored plugin binaries, scored by when they were stored.
    pub fn state_blobs(&self) -> String {
        format!("{}:{{state}}:blobs", self.prefix)
    }

    /// One stored plugin binary, by its SHA-256.
    pub fn state_blob(&self, blob: &str) -> String {
        format!("{}:{{state}}:blob:{blob}", self.prefix)
    }

    /// The hash of node reports: node id to what it serves.
    pub fn state_reports(&self) -> String {
        format!("{}:{{state}}:nodes", self.prefix)
    }

    /// The set of rooms (`tenant:channel`) where a node has members.
    pub fn node_rooms(&self, node: &str) -> String {
        format!("{}:rooms", self.node_inbox(node))
    }

    /// The set of users (`tenant:user`) with connections on a node.
    pub fn node_users(&self, node: &str) -> String {
        format!("{}:users", self.node_inbox(node))
    }

    /// The lock one node takes before cleaning up after a dead one.
    pub fn node_reap_lock(&self, node: &str) -> String {
        format!("{}:reap", self.node_inbox(node))
    }

    /// The hash naming the dataset Redis holds, and where counters start (`scripts::STATE`).
    pub fn dataset(&self) -> String {
        format!("{}:state", self.prefix)
    }

    /// The sorted set of live nodes, scored by their last heartbeat (Redis time, ms).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// A plugin's key-value entry.
    pub fn kv_entry(&self, tenant: &str, plugin: &str, key: &str) -> String {
        format!("{}:{key}", self.kv_index(tenant, plugin))
    }

    /// The sorted set indexing a plugin's entries by expiry, which bounds their number.
    pub fn kv_index(&self, tenant: &str, plugin: &str) -> String {
        format!("{}:kv:{{{tenant}:{plugin}}}", self.prefix)
    }

    /// A `SCAN` pattern matching every key-value structure of a tenant's plugins (tenant
    /// names hold no `:` and no glob character; the prefix's are escaped).
    pub fn kv_tenant_pattern(&self, tenant: &str) -> String {
        format!("{}:kv:{{{tenant}:*", escape_glob(&self.prefix))
    }

    /// `SCAN` patterns matching every room (sequence, history, presence) and user key of a
    /// tenant.
    pub fn tenant_room_patterns(&self, tenant: &str) -> [String; 2] {
        let prefix = escape_glob(&self.prefix);
        [
            format!("{prefix}:r:{{{tenant}:*"),
            format!("{prefix}:u:{{{tenant}:*"),
        ]
    }

    /// A plugin namespace's versions and sizes (see `scripts::KV_PRELUDE`). `#` never
    /// follows the index in an entry's name, which puts `:` there.
    pub fn kv_meta(&self, tenant: &str, plugin: &str) -> String {
        format!("{}#meta", self.kv_index(tenant, plugin))
    }

    /// The sorted set of a plugin's keys, for listing by prefix.
    pub fn kv_keys(&self, tenant: &str, plugin: &str) -> String {
        format!("{}#keys", self.kv_index(tenant, plugin))
    }
}

/// A room as stored in a node's room set: `tenant:channel`.
pub fn room_member_name(room: &RoomKey) -> String {
    format!("{}:{}", room.tenant, room.channel)
}

/// Reads `tenant:channel` (or `tenant:user`) back; tenant names never contain `:`.
pub fn split_tenant(name: &str) -> Option<(&str, &str)> {
    name.split_once(':')
}

/// The node a connection id belongs to: ids are `<node>-<counter>`.
pub fn node_of(connection: &str) -> Option<&str> {
    connection.rsplit_once('-').map(|(node, _)| node)
}

/// Escapes the glob characters of a literal part of a `SCAN` pattern.
fn escape_glob(literal: &str) -> String {
    let mut escaped = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The slot-determining part of a key, as Redis Cluster computes it.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(close) = key[open + 1..].find('}')
            && close > 0
        {
            return &key[open + 1..open + 1 + close];
        }
        key
    }

    #[test]
    fn a_tenants_clear_patterns_cover_its_keys_only_and_escape_the_prefix() {
        let keys = Keys::new("sb");
        let room = RoomKey::new(&Arc::from("acme"), "lobby");
        let [rooms, users] = keys.tenant_room_patterns("acme");
        let kv = keys.kv_tenant_pattern("acme");
        let covered = |key: &str| {
            [&rooms, &users, &kv]
                .iter()
                .any(|pattern| key.starts_with(pattern.trim_end_matches('*')))
        };
        for key in [
            keys.room_meta(&room),
            keys.room_history(&room),
            keys.room_presence(&room),
            keys.user("acme", "alice"),
            keys.kv_index("acme", "p"),
            keys.kv_meta("acme", "p"),
            keys.kv_entry("acme", "p", "k"),
        ] {
            assert!(covered(&key), "{key}");
        }
        let other = RoomKey::new(&Arc::from("acme2"), "lobby");
        for key in [keys.room_meta(&other), keys.kv_index("acme2", "p")] {
            assert!(!covered(&key), "another tenant's {key}");
        }
        assert_eq!(
            Keys::new("a*b?[c]").kv_tenant_pattern("t"),
            "a\\*b\\?\\[c\\]:kv:{t:*"
        );
    }

    #[test]
    fn a_rooms_keys_and_channel_share_one_hash_tag() {
        let keys = Keys::new("sb");
        for channel in ["lobby", "a}b", "{x}", "room:1", "}"] {
            let room = RoomKey::new(&Arc::from("acme"), channel);
            let tag = hash_tag(&keys.room_channel(&room)).to_owned();
            for key in [
                keys.room_meta(&room),
                keys.room_history(&room),
                keys.room_presence(&room),
            ] {
                assert_eq!(hash_tag(&key), tag, "{key} vs channel {channel}");
            }
        }
    }

    #[test]
    fn the_same_channel_of_two_tenants_is_two_rooms() {
        let keys = Keys::new("sb");
        let a = RoomKey::new(&Arc::from("a"), "lobby");
        let b = RoomKey::new(&Arc::from("b"), "lobby");
        assert_ne!(keys.room_channel(&a), keys.room_channel(&b));
        assert_eq!(split_tenant(&room_member_name(&a)), Some(("a", "lobby")));
        let colon = RoomKey::new(&Arc::from("a"), "b:c");
        assert_eq!(split_tenant(&room_member_name(&colon)), Some(("a", "b:c")));
    }

    #[test]
    fn the_node_of_a_connection_is_its_id_prefix() {
        assert_eq!(node_of("0a1b2c3d4e5f-1f"), Some("0a1b2c3d4e5f"));
        assert_eq!(node_of("nodash"), None);
    }

    #[test]
    fn the_desired_state_shares_one_tag() {
        let keys = Keys::new("sb");
        let records = keys.state_records();
        let tag = hash_tag(&records);
        for key in [
            keys.state_revision(),
            keys.state_blobs(),
            keys.state_blob("ab12"),
            keys.state_reports(),
        ] {
            assert_eq!(hash_tag(&key), tag, "{key}");
        }
    }

    #[test]
    fn kv_entries_share_their_namespace_tag() {
        let keys = Keys::new("sb");
        assert_eq!(
            hash_tag(&keys.kv_entry("t", "p", "k{x}")),
            hash_tag(&keys.kv_index("t", "p"))
        );
    }
}
