//! Leadership transfer (thesis §3.10): the leader stops taking proposals, brings the target
//! up to date, then tells it to campaign at once with TimeoutNow.

use crate::command::{Event, Role};
use crate::core::{RaftCore, Transfer};
use crate::error::RaftError;
use crate::message::MessageBody;
use crate::types::NodeId;

impl RaftCore {
    /// Hands leadership to `to`. Proposals are refused until it completes or is aborted
    /// (after one maximum election timeout).
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader { leader: self.leader });
        }
        if to == self.cfg.id {
            return Ok(());
        }
        if !self.membership.voters.contains(&to) {
            return Err(RaftError::NoSuchMember(to));
        }
        if let Some(t) = self.transfer {
            if t.to == to {
                return Ok(());
            }
            self.event(Event::TransferAborted { to: t.to, term: self.term });
        }
        self.transfer = Some(Transfer { to, elapsed: 0, timeout_now_sent: false });
        // From here on, followers may legitimately elect `to` before our lease runs out.
        self.lease_revoked = true;
        self.event(Event::TransferStarted { to, term: self.term });
        self.maybe_send_timeout_now(to);
        Ok(())
    }

    /// Sends TimeoutNow once the transfer target holds our whole log.
    pub(crate) fn maybe_send_timeout_now(&mut self, from: NodeId) {
        let Some(t) = self.transfer else { return };
        if t.to != from || t.timeout_now_sent {
            return;
        }
        let caught_up =
            self.progress.get(&from).is_some_and(|pr| pr.match_index == self.log.last_index());
        if caught_up {
            self.send_now(from, MessageBody::TimeoutNow);
            if let Some(t) = self.transfer.as_mut() {
                t.timeout_now_sent = true;
            }
        }
    }
}
