//! Plugin log lines with their fields as real structured fields: `vote=3` in text logs,
//! `"vote":"3"` in JSON ones, beside `tenant` and `plugin`.
//!
//! `tracing` names fields statically, so each set of field names (a "shape", with its level)
//! gets a callsite made at runtime and kept for the life of the process. Shapes are bounded:
//! at most [`MAX_SHAPES_PER_TENANT`] per tenant and [`MAX_SHAPES`] per node; a line past a
//! bound, or with more than [`MAX_FIELDS`] fields, is logged with its fields folded into one
//! `fields` value and counted (`switchboard_plugin_log_fields_folded_total`). Names are cut
//! to [`MAX_NAME_BYTES`] and values to [`MAX_VALUE_BYTES`].

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use tracing::callsite::{Callsite, Identifier};
use tracing::field::{FieldSet, Value, display};
use tracing::metadata::Kind;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};

use crate::metrics::TenantMetrics;

/// Most fields one line keeps as fields of their own.
pub const MAX_FIELDS: usize = 16;
/// Longest field name; longer ones are cut.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest field value kept; longer ones are cut at a character boundary.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Shapes (sets of field names, per level) one tenant's plugins may make.
pub const MAX_SHAPES_PER_TENANT: usize = 256;
/// Shapes the node keeps in all.
pub const MAX_SHAPES: usize = 4096;
/// The target of plugin log lines (what `log.level` filters such as `switchboard=debug` match).
const TARGET: &str = "switchboard::plugins::host_api";
/// Fields the host sets; a plugin's field of the same name is renamed `field_NAME`.
const RESERVED: [&str; 3] = ["message", "tenant", "plugin"];

/// A callsite made at runtime for one shape.
struct ShapeCallsite {
    metadata: OnceLock<Metadata<'static>>,
}

impl Callsite for ShapeCallsite {
    fn set_interest(&self, _interest: Interest) {}

    fn metadata(&self) -> &Metadata<'static> {
        // Set right after the callsite is made, before it is registered or used.
        self.metadata
            .get()
            .expect("a shape's metadata is set when it is made")
    }
}

#[derive(Default)]
struct Shapes {
    by_key: HashMap<(Level, Vec<String>), &'static ShapeCallsite>,
    per_tenant: HashMap<String, usize>,
}

fn shapes() -> &'static Mutex<Shapes> {
    static SHAPES: OnceLock<Mutex<Shapes>> = OnceLock::new();
    SHAPES.get_or_init(Mutex::default)
}

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

/// The callsite for `names` at `level`, made when new and within the bounds.
fn callsite(tenant: &str, level: Level, names: &[String]) -> Option<&'static ShapeCallsite> {
    let mut shapes = shapes().lock();
    let key = (level, names.to_vec());
    if let Some(found) = shapes.by_key.get(&key) {
        return Some(found);
    }
    let used = shapes.per_tenant.get(tenant).copied().unwrap_or(0);
    if used >= MAX_SHAPES_PER_TENANT || shapes.by_key.len() >= MAX_SHAPES {
        return None;
    }
    let mut all: Vec<&'static str> = vec!["message", "tenant", "plugin"];
    all.extend(names.iter().map(|name| leak(name)));
    let all: &'static [&'static str] = Box::leak(all.into_boxed_slice());
    let made: &'static ShapeCallsite = Box::leak(Box::new(ShapeCallsite {
        metadata: OnceLock::new(),
    }));
    let metadata = Metadata::new(
        "plugin log",
        TARGET,
        level,
        None,
        None,
        None,
        FieldSet::new(all, Identifier(made)),
        Kind::EVENT,
    );
    let _ = made.metadata.set(metadata);
    tracing::callsite::register(made);
    shapes.by_key.insert(key, made);
    *shapes.per_tenant.entry(tenant.to_owned()).or_default() += 1;
    Some(made)
}

/// A plugin's field name made safe: `[A-Za-z0-9_.-]` only, at most [`MAX_NAME_BYTES`], and
/// never one of the host's own.
fn field_name(name: &str) -> String {
    let mut clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME_BYTES)
        .collect();
    if clean.is_empty() {
        clean.push('_');
    }
    if RESERVED.contains(&clean.as_str()) {
        clean.insert_str(0, "field_");
    }
    clean
}

/// Logs one plugin line at `level` with `fields` as fields of their own when it can.
pub fn emit(
    level: Level,
    tenant: &str,
    plugin: &str,
    message: &str,
    fields: Vec<(String, String)>,
    metrics: &TenantMetrics,
) {
    if level > tracing::level_filters::LevelFilter::current() {
        return;
    }
    // Sorted and deduplicated (the last value of a name wins), so one set of names is one shape.
    let mut named: Vec<(String, String)> = fields
        .into_iter()
        .map(|(name, mut value)| {
            value.truncate(value.floor_char_boundary(MAX_VALUE_BYTES));
            (field_name(&name), value)
        })
        .collect();
    named.reverse();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.dedup_by(|a, b| a.0 == b.0);
    let names: Vec<String> = named.iter().map(|(name, _)| name.clone()).collect();
    let shape = if named.len() <= MAX_FIELDS {
        callsite(tenant, level, &names)
    } else {
        None
    };
    let Some(shape) = shape else {
        if !named.is_empty() {
            metrics.log_fields_folded.fetch_add(1, Ordering::Relaxed);
        }
        folded(level, tenant, plugin, message, &named);
        return;
    };
    let metadata = shape.metadata();
    tracing::dispatcher::get_default(|dispatch| {
        if !dispatch.enabled(metadata) {
            return;
        }
        // As the host's own lines print them: `tenant=name`, unquoted.
        let (tenant, plugin) = (display(tenant), display(plugin));
        let mut values: Vec<Option<&dyn Value>> = vec![
            Some(&message as &dyn Value),
            Some(&tenant as &dyn Value),
            Some(&plugin as &dyn Value),
        ];
        values.extend(named.iter().map(|(_, value)| Some(value as &dyn Value)));
        let set = metadata.fields().value_set_all(&values);
        dispatch.event(&Event::new(metadata, &set));
    });
}

/// A line whose fields are one `fields` value, `name=value` separated by spaces.
fn folded(level: Level, tenant: &str, plugin: &str, message: &str, named: &[(String, String)]) {
    let fields: String = named
        .iter()
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    match level {
        Level::TRACE => tracing::trace!(target: TARGET, %tenant, %plugin, fields, "{message}"),
        Level::DEBUG => tracing::debug!(target: TARGET, %tenant, %plugin, fields, "{message}"),
        Level::INFO => tracing::info!(target: TARGET, %tenant, %plugin, fields, "{message}"),
        Level::WARN => tracing::warn!(target: TARGET, %tenant, %plugin, fields, "{message}"),
        _ => tracing::error!(target: TARGET, %tenant, %plugin, fields, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tracing::Level;

    use super::{MAX_SHAPES_PER_TENANT, callsite, emit, field_name};
    use crate::metrics::TenantMetrics;

    #[test]
    fn a_tenant_makes_a_bounded_number_of_shapes_and_past_it_lines_are_folded_and_counted() {
        let tenant = "shape-bound";
        for index in 0..MAX_SHAPES_PER_TENANT {
            let names = [format!("name{index}")];
            assert!(callsite(tenant, Level::INFO, &names).is_some(), "{index}");
        }
        // A shape it already has is still served; a new one is not.
        assert!(callsite(tenant, Level::INFO, &["name0".to_owned()]).is_some());
        assert!(callsite(tenant, Level::INFO, &["new".to_owned()]).is_none());
        assert!(callsite("another-tenant", Level::INFO, &["new".to_owned()]).is_some());
        let metrics = TenantMetrics::default();
        let fields = vec![("new".to_owned(), "1".to_owned())];
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            emit(Level::ERROR, tenant, "p", "folded", fields, &metrics);
        });
        assert_eq!(metrics.log_fields_folded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn field_names_are_cleaned_and_never_the_hosts() {
        assert_eq!(field_name("poll_id"), "poll_id");
        assert_eq!(field_name("a b=c\"d"), "a_b_c_d");
        assert_eq!(field_name(""), "_");
        assert_eq!(field_name("tenant"), "field_tenant");
        assert_eq!(field_name("message"), "field_message");
        assert_eq!(field_name(&"x".repeat(100)).len(), 64);
    }
}
