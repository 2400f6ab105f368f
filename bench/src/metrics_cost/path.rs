//! The message path: the per-message counter updates the runtime makes, done by hand (as the
//! runtime does) and through each library, through a cached handle or a label lookup.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// The label set of a per-tenant series in `prometheus-client`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    /// Tenant name.
    pub tenant: String,
}

/// One message through the node, as counted: a data message received
/// (`TenantMetrics::message_in`) and a batch of one frame written (`TenantMetrics::messages_out`).
pub trait MessagePath: Sync {
    /// Counts one message of `bytes` in and its frame out.
    fn count(&self, bytes: usize);
}

/// The runtime's `TenantMetrics` counters on the message path: plain atomics in the tenant's
/// struct, reached through the connection's `Arc<Tenant>`.
#[derive(Debug, Default)]
pub struct Ours {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl Ours {
    /// The values, to check every variant counted the same.
    pub fn totals(&self) -> [u64; 4] {
        [
            self.messages_in.load(Ordering::Relaxed),
            self.bytes_in.load(Ordering::Relaxed),
            self.messages_out.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        ]
    }
}

impl MessagePath for Arc<Ours> {
    fn count(&self, bytes: usize) {
        // Exactly `message_in(bytes)` then `messages_out(1, bytes)`.
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// `prometheus-client` families for the four counters.
#[derive(Debug, Clone, Default)]
pub struct ClientFamilies {
    /// `switchboard_messages_in_total`.
    pub messages_in: Family<TenantLabel, Counter>,
    /// `switchboard_bytes_in_total`.
    pub bytes_in: Family<TenantLabel, Counter>,
    /// `switchboard_messages_out_total`.
    pub messages_out: Family<TenantLabel, Counter>,
    /// `switchboard_bytes_out_total`.
    pub bytes_out: Family<TenantLabel, Counter>,
}

/// `prometheus-client` through handles the tenant caches (each a `Counter`, an
/// `Arc<AtomicU64>`, taken once from its family).
#[derive(Debug)]
pub struct ClientCached {
    messages_in: Counter,
    bytes_in: Counter,
    messages_out: Counter,
    bytes_out: Counter,
}

impl ClientCached {
    /// Takes the tenant's handles from the families.
    pub fn new(families: &ClientFamilies, label: &TenantLabel) -> Self {
        Self {
            messages_in: families.messages_in.get_or_create_owned(label),
            bytes_in: families.bytes_in.get_or_create_owned(label),
            messages_out: families.messages_out.get_or_create_owned(label),
            bytes_out: families.bytes_out.get_or_create_owned(label),
        }
    }
}

impl MessagePath for Arc<ClientCached> {
    fn count(&self, bytes: usize) {
        self.messages_in.inc();
        self.bytes_in.inc_by(bytes as u64);
        self.messages_out.inc();
        self.bytes_out.inc_by(bytes as u64);
    }
}

/// `prometheus-client` looked up by label set on every update (the label set is built once).
#[derive(Debug)]
pub struct ClientLookup {
    /// The families.
    pub families: ClientFamilies,
    /// The tenant's label set.
    pub label: TenantLabel,
}

impl MessagePath for ClientLookup {
    fn count(&self, bytes: usize) {
        let families = &self.families;
        families.messages_in.get_or_create(&self.label).inc();
        families
            .bytes_in
            .get_or_create(&self.label)
            .inc_by(bytes as u64);
        families.messages_out.get_or_create(&self.label).inc();
        families
            .bytes_out
            .get_or_create(&self.label)
            .inc_by(bytes as u64);
    }
}

/// `prometheus` (tikv) vectors for the four counters.
#[derive(Debug, Clone)]
pub struct TikvVecs {
    /// `switchboard_messages_in_total`.
    pub messages_in: prometheus::IntCounterVec,
    /// `switchboard_bytes_in_total`.
    pub bytes_in: prometheus::IntCounterVec,
    /// `switchboard_messages_out_total`.
    pub messages_out: prometheus::IntCounterVec,
    /// `switchboard_bytes_out_total`.
    pub bytes_out: prometheus::IntCounterVec,
}

/// `prometheus` (tikv) through handles the tenant caches (`IntCounter`, an `Arc` of an atomic).
#[derive(Debug)]
pub struct TikvCached {
    messages_in: prometheus::IntCounter,
    bytes_in: prometheus::IntCounter,
    messages_out: prometheus::IntCounter,
    bytes_out: prometheus::IntCounter,
}

impl TikvCached {
    /// Takes the tenant's handles from the vectors.
    pub fn new(vecs: &TikvVecs, tenant: &str) -> Self {
        Self {
            messages_in: vecs.messages_in.with_label_values(&[tenant]),
            bytes_in: vecs.bytes_in.with_label_values(&[tenant]),
            messages_out: vecs.messages_out.with_label_values(&[tenant]),
            bytes_out: vecs.bytes_out.with_label_values(&[tenant]),
        }
    }
}

impl MessagePath for Arc<TikvCached> {
    fn count(&self, bytes: usize) {
        self.messages_in.inc();
        self.bytes_in.inc_by(bytes as u64);
        self.messages_out.inc();
        self.bytes_out.inc_by(bytes as u64);
    }
}

/// `prometheus` (tikv) looked up by label value on every update.
#[derive(Debug)]
pub struct TikvLookup {
    /// The vectors.
    pub vecs: TikvVecs,
    /// The tenant's name.
    pub tenant: String,
}

impl MessagePath for TikvLookup {
    fn count(&self, bytes: usize) {
        let tenant = [self.tenant.as_str()];
        self.vecs.messages_in.with_label_values(&tenant).inc();
        self.vecs
            .bytes_in
            .with_label_values(&tenant)
            .inc_by(bytes as u64);
        self.vecs.messages_out.with_label_values(&tenant).inc();
        self.vecs
            .bytes_out
            .with_label_values(&tenant)
            .inc_by(bytes as u64);
    }
}
