//! The four topologies compared.

use crate::cluster::Backplane;

/// Where the publisher and the subscribers sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// One node, memory backplane: the baseline.
    Memory,
    /// One node on the Redis backplane: publisher and subscribers on it.
    Same,
    /// Two nodes on Redis: publisher on A, every subscriber on B.
    Cross,
    /// Two nodes on Redis: publisher on A, subscribers half on A, half on B.
    Spread,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Memory,
        Scenario::Same,
        Scenario::Cross,
        Scenario::Spread,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Scenario::Memory => "memory, 1 node",
            Scenario::Same => "redis, same node",
            Scenario::Cross => "redis, cross node",
            Scenario::Spread => "redis, spread",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Scenario::Memory => "memory",
            Scenario::Same => "same",
            Scenario::Cross => "cross",
            Scenario::Spread => "spread",
        }
    }

    pub fn backplane(self) -> Backplane {
        match self {
            Scenario::Memory => Backplane::Memory,
            _ => Backplane::Redis,
        }
    }

    /// Nodes started; the publisher always uses node 0.
    pub fn nodes(self) -> usize {
        match self {
            Scenario::Memory | Scenario::Same => 1,
            Scenario::Cross | Scenario::Spread => 2,
        }
    }

    /// The node subscriber `index` connects to.
    pub fn node_of(self, index: usize) -> usize {
        match self {
            Scenario::Memory | Scenario::Same => 0,
            Scenario::Cross => 1,
            Scenario::Spread => index % 2,
        }
    }
}
