//! Proptest strategies for every message kind, shared by the test binaries.
#![allow(dead_code)] // each test binary uses a different subset

use bytes::Bytes;
use flotilla_raft::membership::{Membership, NodeAddr};
use flotilla_raft::message::{ConflictHint, Message, MessageBody, VoteRefusal};
use flotilla_raft::types::{Entry, EntryPayload, LogIndex, NodeId, SnapshotMeta, Term};
use flotilla_wire::handshake::{HandshakeFrame, Nonce, Proof};
use flotilla_wire::{SnapshotAck, SnapshotChunk, SnapshotId, WireMessage};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;

pub fn node() -> impl Strategy<Value = NodeId> {
    // Mostly small ids like real clusters, sometimes the extremes.
    prop_oneof![4 => (1u64..10).prop_map(NodeId), 1 => any::<u64>().prop_map(NodeId)]
}

pub fn term() -> impl Strategy<Value = Term> {
    prop_oneof![4 => (0u64..100).prop_map(Term), 1 => any::<u64>().prop_map(Term)]
}

pub fn index() -> impl Strategy<Value = LogIndex> {
    prop_oneof![4 => (0u64..1000).prop_map(LogIndex), 1 => any::<u64>().prop_map(LogIndex)]
}

pub fn bytes(max_len: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max_len).prop_map(Bytes::from)
}

pub fn membership() -> impl Strategy<Value = Membership> {
    let addr = ("[a-z0-9.:]{0,24}", "\\PC{0,12}")
        .prop_map(|(raft_addr, api_addr)| NodeAddr { raft_addr, api_addr });
    (
        btree_set(node(), 0..5),
        option::of(btree_set(node(), 0..5)),
        btree_set(node(), 0..3),
        btree_map(node(), addr, 0..6),
    )
        .prop_map(|(voters, outgoing, learners, addrs)| Membership {
            voters,
            outgoing,
            learners,
            addrs,
        })
}

pub fn entry(max_payload: usize) -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        1 => Just(EntryPayload::Noop),
        4 => bytes(max_payload).prop_map(EntryPayload::Command),
        1 => membership().prop_map(EntryPayload::Config),
    ];
    (term(), index(), payload).prop_map(|(term, index, payload)| Entry { term, index, payload })
}

pub fn refusal() -> impl Strategy<Value = VoteRefusal> {
    prop_oneof![
        Just(VoteRefusal::StaleTerm),
        Just(VoteRefusal::AlreadyVoted),
        Just(VoteRefusal::LogBehind),
        Just(VoteRefusal::LeaderAlive),
        Just(VoteRefusal::NotVoter),
    ]
}

pub fn snapshot_meta() -> impl Strategy<Value = SnapshotMeta> {
    (index(), term(), membership()).prop_map(|(last_index, last_term, membership)| SnapshotMeta {
        last_index,
        last_term,
        membership,
    })
}

/// Every `MessageBody` variant, with entries of up to `max_payload` bytes each.
pub fn body(max_payload: usize) -> impl Strategy<Value = MessageBody> {
    let hint = (option::of(term()), index())
        .prop_map(|(conflict_term, first_index)| ConflictHint { conflict_term, first_index });
    prop_oneof![
        (any::<bool>(), index(), term(), any::<bool>()).prop_map(
            |(pre_vote, last_log_index, last_log_term, transfer)| MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer
            }
        ),
        (any::<bool>(), any::<bool>(), option::of(refusal())).prop_map(
            |(pre_vote, granted, refusal)| MessageBody::RequestVoteResponse {
                pre_vote,
                granted,
                refusal
            }
        ),
        (index(), term(), vec(entry(max_payload), 0..8), index(), any::<u64>()).prop_map(
            |(prev_log_index, prev_log_term, entries, leader_commit, read_seq)| {
                MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    read_seq,
                }
            }
        ),
        (any::<bool>(), index(), option::of(hint), any::<u64>()).prop_map(
            |(success, match_index, hint, read_seq)| MessageBody::AppendEntriesResponse {
                success,
                match_index,
                hint,
                read_seq
            }
        ),
        snapshot_meta().prop_map(|meta| MessageBody::InstallSnapshot { meta }),
        index().prop_map(|last_index| MessageBody::InstallSnapshotResponse { last_index }),
        Just(MessageBody::TimeoutNow),
    ]
}

pub fn message(max_payload: usize) -> impl Strategy<Value = Message> {
    (node(), node(), term(), body(max_payload)).prop_map(|(from, to, term, body)| Message {
        from,
        to,
        term,
        body,
    })
}

pub fn snapshot_chunk(max_data: usize) -> impl Strategy<Value = SnapshotChunk> {
    (
        term(),
        node(),
        any::<u64>().prop_map(SnapshotId),
        snapshot_meta(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        bytes(max_data),
        any::<bool>(),
    )
        .prop_map(
            |(term, from, snapshot_id, meta, offset, total_len, checksum, data, last)| {
                SnapshotChunk {
                    term,
                    from,
                    snapshot_id,
                    meta,
                    offset,
                    total_len,
                    checksum,
                    data,
                    last,
                }
            },
        )
}

pub fn snapshot_ack() -> impl Strategy<Value = SnapshotAck> {
    (any::<u64>().prop_map(SnapshotId), any::<u64>(), option::of("\\PC{0,40}")).prop_map(
        |(snapshot_id, next_offset, error)| SnapshotAck { snapshot_id, next_offset, error },
    )
}

/// Every `WireMessage` kind.
pub fn wire_message(max_payload: usize) -> impl Strategy<Value = WireMessage> {
    prop_oneof![
        3 => message(max_payload).prop_map(WireMessage::Raft),
        1 => snapshot_chunk(max_payload).prop_map(WireMessage::SnapshotChunk),
        1 => snapshot_ack().prop_map(WireMessage::SnapshotAck),
    ]
}

/// Every `HandshakeFrame` kind.
pub fn handshake_frame() -> impl Strategy<Value = HandshakeFrame> {
    let nonce = any::<[u8; 32]>().prop_map(Nonce);
    let proof = any::<[u8; 32]>().prop_map(Proof);
    prop_oneof![
        (any::<u16>(), "\\PC{0,64}", node(), node(), nonce.clone()).prop_map(
            |(protocol_version, cluster_id, from, to, nonce)| HandshakeFrame::Hello {
                protocol_version,
                cluster_id,
                from,
                to,
                nonce
            }
        ),
        (nonce, option::of(proof.clone()))
            .prop_map(|(nonce, proof)| HandshakeFrame::Challenge { nonce, proof }),
        option::of(proof).prop_map(|proof| HandshakeFrame::Proof { proof }),
        Just(HandshakeFrame::Welcome),
        "\\PC{0,200}".prop_map(|reason| HandshakeFrame::Refused { reason }),
    ]
}

/// An AppendEntries of `n` command entries of `len` bytes each.
pub fn append_entries(n: usize, len: usize) -> WireMessage {
    let entries = (1..=n as u64)
        .map(|i| Entry {
            term: Term(3),
            index: LogIndex(100 + i),
            payload: EntryPayload::Command(Bytes::from(vec![(i % 251) as u8; len])),
        })
        .collect();
    WireMessage::Raft(Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(100),
            prev_log_term: Term(3),
            entries,
            leader_commit: LogIndex(99),
            read_seq: 0,
        },
    })
}
