//! `ElectionActor`: the node's clock. The core counts election and heartbeat timeouts in
//! ticks (randomized per reset from its own seeded generator); this actor delivers one
//! `Tick` every `tick_ms` so that the core's timers, heartbeats and CheckQuorum run.

use std::time::Duration;

use actix::prelude::*;

use crate::raft_actor::{RaftActor, Tick};

pub struct ElectionActor {
    pub raft: Addr<RaftActor>,
    pub tick: Duration,
}

impl Actor for ElectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Re-armed on every (re)start: timers do not survive a supervisor restart.
        ctx.run_interval(self.tick, |act, _| act.raft.do_send(Tick));
    }
}

impl Supervised for ElectionActor {}
