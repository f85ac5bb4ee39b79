//! The snapshot: everything built from one config generation, behind the one
//! `ArcSwap` that requests load once each.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ServerConfig};
use crate::route::RouteTable;
use crate::upstream::Upstream;

/// Everything a request needs from one config generation.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub server: ServerConfig,
    pub routes: RouteTable,
    pub upstreams: Vec<Upstream>,
}

/// The state shared by listeners, requests and (later) the admin API.
#[derive(Debug)]
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
}

impl Snapshot {
    /// Builds generation `generation` of `config`, reusing endpoint state
    /// (health, in-flight counts, pooled connections) of `previous` by
    /// (upstream name, endpoint address).
    pub fn build(config: &Config, generation: u64, previous: Option<&Snapshot>) -> Self {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let old = previous.and_then(|p| p.upstreams.iter().find(|o| *o.name == *u.name));
                Upstream::build(u, old)
            })
            .collect();
        Self {
            generation,
            server: config.server.clone(),
            routes: RouteTable::build(config),
            upstreams,
        }
    }
}

impl Shared {
    pub fn new(snapshot: Snapshot) -> Arc<Self> {
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
        })
    }
}
