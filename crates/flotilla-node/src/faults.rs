//! Fault injection in the raft transport (INTERFACE.md `/v1/admin/faults`). Only reachable
//! with `--enable-fault-injection`; lives in memory, a restart clears it.

use std::collections::BTreeSet;

use flotilla_raft::NodeId;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Drop everything to and from every peer.
    #[serde(default)]
    pub isolate: bool,
    /// Drop messages this node sends to these peers.
    #[serde(default)]
    pub drop_to: BTreeSet<NodeId>,
    /// Drop messages this node receives from these peers.
    #[serde(default)]
    pub drop_from: BTreeSet<NodeId>,
    /// Delay every outgoing message by this much.
    #[serde(default)]
    pub delay_ms: u64,
    /// Drop each outgoing message with this probability.
    #[serde(default)]
    pub loss: f64,
}

impl FaultSpec {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.loss) || self.loss.is_nan() {
            return Err("loss must be between 0.0 and 1.0".into());
        }
        if self.delay_ms > 60_000 {
            return Err("delay_ms must be at most 60000".into());
        }
        Ok(())
    }

    pub fn is_clear(&self) -> bool {
        *self == FaultSpec::default()
    }

    /// Should a message to `peer` be dropped? `roll` is a uniform sample in [0, 1).
    pub fn drops_outgoing(&self, peer: NodeId, roll: f64) -> bool {
        self.isolate || self.drop_to.contains(&peer) || (self.loss > 0.0 && roll < self.loss)
    }

    pub fn drops_incoming(&self, peer: NodeId) -> bool {
        self.isolate || self.drop_from.contains(&peer)
    }
}
